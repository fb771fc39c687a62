//! Health checking: keepalived's checkers run on tokio, their results decide (`state.rs`)
//! which real servers the forwarding plan keeps, and with what weight.
//!
//! Each checker is a task on its own `delay_loop` schedule (first run jittered, as keepalived
//! does), bounded in concurrency by a semaphore. Its results arrive on one channel; the
//! daemon's loop hands them to [`Checks::handle`], and when a decision changes the plan it
//! applies [`Checks::effective`] right away. Real servers without checkers are always up.
//! On reload, checkers whose real server and settings stay keep their task and state.

pub mod dns;
pub mod http;
pub mod misc;
pub mod ping;
pub mod smtp;
pub mod state;
pub mod target;
pub mod tcp;
pub mod udp;

use std::{
    collections::HashMap,
    hash::BuildHasher as _,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc},
    task::AbortHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use self::{
    state::{CheckerState, Event, Member, Placement, Pool},
    target::{Failed, Failure, Target},
};
use crate::{
    config::{CheckKind, Checker, Config, Diagnostic, Location, Protocol, RealServer, VirtualServer},
    desired::{Plan, PlannedService, ServiceKey, socket},
    script,
};

/// Who runs a script: a user (None: the agent's own), or why the configured one cannot.
type ScriptUser = Result<Option<script::RunAs>, String>;

/// The default script user of `config` (global_defs `script_user`, else `keepalived_script`
/// when it exists, else the agent's own user).
fn script_user(config: &Config) -> ScriptUser {
    script::RunAs::default_for(config.global_defs.script_user.as_ref()).map_err(|e| format!("script_user: {e}"))
}

/// How long notify_up/down and quorum_up/down scripts may run.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// A real server of a service, as health keys it (direct routing keeps one port per service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RsKey {
    pub service: ServiceKey,
    pub addr: IpAddr,
}

/// What one checker does, resolved from the config.
#[derive(Debug, Clone, PartialEq)]
enum Probe {
    Tcp,
    Http {
        requests: Vec<http::Request>,
        tls: Option<http::Tls>,
    },
    /// `user`: who runs it (an unknown user is kept as the error, so the check fails closed).
    Misc {
        line: String,
        dynamic: bool,
        user: ScriptUser,
    },
    Smtp {
        helo: String,
        targets: Vec<(SocketAddr, Option<SocketAddr>)>,
    },
    Dns {
        name: String,
        qtype: crate::config::DnsType,
    },
    Udp(crate::config::UdpCheck),
    Ping,
}

/// A checker's settings: equal settings on reload keep the running task.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    kind: &'static str,
    probe: Probe,
    addr: SocketAddr,
    bind: Option<SocketAddr>,
    device: Option<Arc<str>>,
    timing: crate::config::CheckTiming,
    alpha: bool,
    /// `log_all_failures` (or global_defs `checker_log_all_failures`): every failed check is
    /// a warning, not only the state changes.
    log_all: bool,
}

impl Spec {
    async fn run(&self, seq: u16) -> Result<Option<u32>, Failed> {
        let started = Instant::now();
        let target = Target {
            addr: self.addr,
            bind: self.bind,
            device: self.device.clone(),
            connect_timeout: self.timing.connect_timeout,
            // The whole check fits in connect_timeout: keepalived's only network timeout, and
            // what makes a trickling server fail on time.
            deadline: started + self.timing.connect_timeout,
        };
        match &self.probe {
            Probe::Tcp => tcp::check(&target).await.map(|()| None),
            Probe::Http { requests, tls } => http::check(&target, requests, tls.as_ref()).await.map(|()| None),
            Probe::Misc { line, dynamic, user } => match user {
                Ok(user) => misc::check(line, self.timing.connect_timeout, *dynamic, *user).await,
                Err(e) => Err(Failed::new(Failure::Error, format!("{line}: {e}; not run"))),
            },
            Probe::Smtp { helo, targets } => {
                for &(addr, bind) in targets {
                    smtp::check(&Target { addr, bind, ..target.clone() }, helo).await?;
                }
                Ok(None)
            }
            Probe::Dns { name, qtype } => dns::check(&target, name, *qtype, seq).await.map(|()| None),
            Probe::Udp(c) => udp::check(&target, c).await.map(|()| None),
            Probe::Ping => ping::check(&target, seq).await.map(|()| None),
        }
    }
}

/// One check's result, from a checker task.
#[derive(Debug)]
pub struct Report {
    rs: RsKey,
    index: usize,
    generation: u64,
    result: Result<Option<u32>, Failed>,
    /// The checker's state change this result made, if any.
    changed: Option<bool>,
    duration: Duration,
    /// How late the check started against its schedule.
    pub lateness: Duration,
}

impl Report {
    /// Whether the check failed.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.result.is_err()
    }
}

/// A checker as `list`/`status`/metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerHealth {
    pub kind: &'static str,
    pub up: bool,
    /// The reason of the last failed check, cleared by a success.
    pub last_failure: Option<Failure>,
    pub last_duration: Duration,
    /// Failed checks since start, per reason (index of [`Failure::ALL`]).
    pub failures: [u64; 8],
}

/// A real server's health, for the views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    pub service: ServiceKey,
    pub addr: IpAddr,
    pub port: u16,
    pub up: bool,
    /// The weight it is planned with (None: removed from the plan).
    pub planned_weight: Option<u32>,
    pub checkers: Vec<CheckerHealth>,
}

struct MemberInfo {
    addr: IpAddr,
    port: u16,
    notify_up: Option<String>,
    notify_down: Option<String>,
    checkers: Vec<CheckerHealth>,
}

struct PoolEntry {
    pool: Pool,
    members: Vec<MemberInfo>,
    by_addr: HashMap<IpAddr, usize>,
    quorum_up: Option<String>,
    quorum_down: Option<String>,
    omega: bool,
}

struct Task {
    spec: Arc<Spec>,
    generation: u64,
    abort: AbortHandle,
}

/// The running health checks.
pub struct Checks {
    pools: HashMap<ServiceKey, PoolEntry>,
    tasks: HashMap<(RsKey, usize), Task>,
    next_generation: u64,
    tx: mpsc::Sender<Report>,
    rx: mpsc::Receiver<Report>,
    limiter: Arc<Semaphore>,
    /// Decisions made, logged by [`apply`] once they are in the maps (so whoever reads the log
    /// line can rely on it).
    decided: Vec<(bool, ServiceKey, String)>,
    /// Services whose placement changed since the last [`apply`].
    changed: std::collections::HashSet<ServiceKey>,
    /// Who runs notify and quorum scripts.
    script_user: ScriptUser,
}

/// The service key of a configured virtual server, as the plan has it.
fn service_key(vs: &VirtualServer) -> ServiceKey {
    let proto = match vs.protocol {
        Protocol::Udp => lvs_common::maps::IPPROTO_UDP,
        // Only kernel IPVS services can be SCTP (desired::plan refuses it for XDP).
        Protocol::Sctp => 132,
        Protocol::Tcp => lvs_common::maps::IPPROTO_TCP,
    };
    ServiceKey::new(vs.addr, vs.port, proto)
}

fn spec(c: &Checker, rs: &RealServer, vs: &VirtualServer, config: &Config) -> Spec {
    let timing = c.timing(rs, vs);
    let port = c.connect_port.unwrap_or(match c.kind {
        CheckKind::Smtp(_) => 25,
        _ => rs.port,
    });
    let addr = SocketAddr::new(c.connect_ip.unwrap_or(rs.addr), port);
    let bind_of = |ip: Option<IpAddr>, port: Option<u16>, family: IpAddr| match (ip, port) {
        (None, None) => None,
        (ip, port) => {
            let any = if family.is_ipv4() { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) };
            Some(SocketAddr::new(ip.unwrap_or(any), port.unwrap_or(0)))
        }
    };
    let bind = bind_of(c.bindto, c.bind_port, addr.ip());
    let hosts = [c.virtualhost_of(), rs.virtualhost.as_deref(), vs.virtualhost.as_deref()];
    let http = |h: &crate::config::HttpCheck, tls: bool| {
        let vhosts = [h.virtualhost.as_deref(), hosts[1], hosts[2]];
        let requests =
            h.urls.iter().map(|u| http::Request::new(u, &vhosts, h.http_protocol.as_deref(), addr, tls)).collect();
        let sni = (tls && h.enable_sni == Some(true))
            .then(|| h.sni_name.clone().or_else(|| vhosts.iter().find_map(|v| v.map(str::to_string))))
            .flatten();
        Probe::Http { requests, tls: tls.then_some(http::Tls { sni }) }
    };
    let probe = match &c.kind {
        CheckKind::Tcp => Probe::Tcp,
        CheckKind::Http(h) => http(h, false),
        CheckKind::Ssl(h) => http(h, true),
        CheckKind::Misc(m) => Probe::Misc {
            line: m.path.clone().unwrap_or_default(),
            dynamic: m.dynamic,
            user: match &m.user {
                Some((u, g)) => script::RunAs::lookup(u, g.as_deref()).map(Some).map_err(|e| e.to_string()),
                None => script_user(config),
            },
        },
        CheckKind::Smtp(s) => {
            let helo = s
                .helo_name
                .clone()
                .or_else(|| config.global_defs.smtp_helo_name.clone())
                .unwrap_or_else(|| smtp::DEFAULT_HELO.to_string());
            let targets = if s.hosts.is_empty() {
                vec![(addr, bind)]
            } else {
                s.hosts
                    .iter()
                    .map(|h| {
                        let a = SocketAddr::new(h.connect_ip.unwrap_or(addr.ip()), h.connect_port.unwrap_or(port));
                        (a, bind_of(h.bindto.or(c.bindto), h.bind_port.or(c.bind_port), a.ip()))
                    })
                    .collect()
            };
            Probe::Smtp { helo, targets }
        }
        CheckKind::Dns(d) => Probe::Dns { name: d.name.clone(), qtype: d.query_type },
        CheckKind::Udp(u) => Probe::Udp(u.clone()),
        CheckKind::Ping => Probe::Ping,
    };
    let alpha = c.alpha.or(rs.alpha).unwrap_or(vs.alpha);
    let log_all = c.log_all_failures.or(config.global_defs.checker_log_all_failures).unwrap_or(false);
    let device = c.bind_if.as_deref().map(Arc::from);
    Spec { kind: c.kind.name(), probe, addr, bind, device, timing, alpha, log_all }
}

impl Checker {
    /// HTTP_GET/SSL_GET's own `virtualhost`.
    fn virtualhost_of(&self) -> Option<&str> {
        match &self.kind {
            CheckKind::Http(h) | CheckKind::Ssl(h) => h.virtualhost.as_deref(),
            _ => None,
        }
    }
}

/// Every script the checker side would run must exist and be executable: config errors, each
/// at its block's file:line.
#[must_use]
pub fn validate(config: &Config) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let secure = config.global_defs.enable_script_security;
    let mut script = |line: &Option<String>, what: &str, location: &Location| {
        let Some(line) = line else { return };
        let checked = script::resolve(line).and_then(|(path, _)| if secure { script::secure(&path) } else { Ok(()) });
        if let Err(e) = checked {
            errors.push(Diagnostic { location: location.clone(), message: format!("{what} `{line}`: {e}") });
        }
    };
    let mut user_errors = Vec::new();
    for vs in &config.virtual_servers {
        script(&vs.quorum_up, "quorum_up", &vs.location);
        script(&vs.quorum_down, "quorum_down", &vs.location);
        for rs in &vs.real_servers {
            script(&rs.notify_up, "notify_up", &rs.location);
            script(&rs.notify_down, "notify_down", &rs.location);
            for c in &rs.checkers {
                if let CheckKind::Http(h) | CheckKind::Ssl(h) = &c.kind {
                    for u in &h.urls {
                        if let Some(r) = &u.regex
                            && let Err(e) = regex::bytes::Regex::new(r)
                        {
                            let message = format!("url regex `{r}`: {e}");
                            user_errors.push(Diagnostic { location: u.location.clone(), message });
                        }
                    }
                }
                if let CheckKind::Misc(m) = &c.kind {
                    // An absent misc_path is an empty command line: `split` says so.
                    let path = Some(m.path.clone().unwrap_or_default());
                    script(&path, "MISC_CHECK misc_path", &c.location);
                    if let Some((u, g)) = &m.user
                        && let Err(e) = script::RunAs::lookup(u, g.as_deref())
                    {
                        let message = format!("MISC_CHECK user: {e}");
                        user_errors.push(Diagnostic { location: c.location.clone(), message });
                    }
                }
            }
        }
    }
    errors.extend(user_errors);
    errors
}

/// A random fraction in [0, 1) (the jitter of first checks).
fn jitter(key: &(RsKey, usize)) -> f64 {
    let h = std::collections::hash_map::RandomState::new().hash_one(key);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// How many checks may run at once: half the file descriptors we may open, at most 4096.
fn concurrency() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to rlimit structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            // Many checkers need many sockets; the hard limit is ours to take.
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    usize::try_from(lim.rlim_cur / 2).unwrap_or(4096).clamp(16, 4096)
}

impl Checks {
    /// Starts the checkers of every planned service's real servers.
    #[must_use]
    pub fn start(config: &Config, plan: &Plan) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        let mut checks = Self {
            pools: HashMap::new(),
            tasks: HashMap::new(),
            next_generation: 0,
            tx,
            rx,
            limiter: Arc::new(Semaphore::new(concurrency())),
            decided: Vec::new(),
            changed: std::collections::HashSet::new(),
            script_user: Ok(None),
        };
        checks.reload(config, plan);
        checks
    }

    /// Moves to a new config: checkers that stay (same real server, same settings) keep their
    /// task and state; the others stop, new ones start.
    pub fn reload(&mut self, config: &Config, plan: &Plan) {
        self.script_user = script_user(config);
        // XDP and kernel IPVS services alike.
        let planned: std::collections::HashSet<ServiceKey> =
            plan.services.iter().map(|s| s.key).chain(plan.ipvs.iter().filter_map(crate::ipvs::Table::key)).collect();
        let mut old_pools = std::mem::take(&mut self.pools);
        let mut old_tasks = std::mem::take(&mut self.tasks);
        for vs in &config.virtual_servers {
            let key = service_key(vs);
            if !planned.contains(&key) {
                continue;
            }
            // Without a checker and without quorum scripts nothing ever changes: every real
            // server serves at its weight, as planned, and no pool is kept (10,000 such services
            // would otherwise hold tens of MiB for nothing).
            let unchecked = vs.real_servers.iter().all(|rs| rs.checkers.is_empty());
            if unchecked && vs.quorum_up.is_none() && vs.quorum_down.is_none() {
                continue;
            }
            let old = old_pools.remove(&key);
            let mut members = Vec::new();
            let mut infos = Vec::new();
            for rs in &vs.real_servers {
                let rk = RsKey { service: key, addr: rs.addr };
                let old_member = old.as_ref().and_then(|o| o.by_addr.get(&rs.addr).map(|&i| (o, i)));
                let mut states = Vec::new();
                let mut health = Vec::new();
                for (index, c) in rs.checkers.iter().enumerate() {
                    let spec = Arc::new(spec(c, rs, vs, config));
                    let kept = old_tasks.remove(&(rk, index)).filter(|t| t.spec == spec);
                    let previous = old_member.and_then(|(o, i)| {
                        Some((
                            o.pool.members[i].checkers.get(index).copied()?,
                            o.members[i].checkers.get(index)?.clone(),
                        ))
                    });
                    match (kept, previous) {
                        (Some(task), Some((up, h))) => {
                            states.push(up);
                            health.push(h);
                            self.tasks.insert((rk, index), task);
                        }
                        (stale, _) => {
                            if let Some(t) = stale {
                                t.abort.abort();
                            }
                            states.push(!spec.alpha);
                            health.push(CheckerHealth {
                                kind: spec.kind,
                                up: !spec.alpha,
                                last_failure: None,
                                last_duration: Duration::ZERO,
                                failures: [0; 8],
                            });
                            self.spawn(rk, index, spec);
                        }
                    }
                }
                let dynamic_weight = old_member.and_then(|(o, i)| o.pool.members[i].dynamic_weight);
                members.push(Member {
                    weight: rs.weight,
                    dynamic_weight,
                    inhibit_on_failure: rs.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure),
                    checkers: states,
                });
                infos.push(MemberInfo {
                    addr: rs.addr,
                    port: rs.port,
                    notify_up: rs.notify_up.clone(),
                    notify_down: rs.notify_down.clone(),
                    checkers: health,
                });
            }
            let mut pool = Pool::new(members, vs.quorum, vs.hysteresis, vs.sorry_server.is_some());
            if let Some(o) = &old {
                // The quorum state carries over; the new quorum and weights decide from there.
                for e in pool.carry_quorum(o.pool.quorum_up) {
                    if let Event::Quorum { up } = e {
                        let live = pool.live_weight();
                        if up {
                            info!(service = %key, "quorum gained (live weight {live}) with the reloaded configuration");
                        } else {
                            warn!(service = %key, "quorum lost (live weight {live}) with the reloaded configuration");
                        }
                        let script = if up { &vs.quorum_up } else { &vs.quorum_down };
                        spawn_script(
                            script.clone(),
                            if up { "quorum_up" } else { "quorum_down" },
                            self.script_user.clone(),
                        );
                    }
                }
            }
            let by_addr = infos.iter().enumerate().map(|(i, m)| (m.addr, i)).collect();
            self.pools.insert(
                key,
                PoolEntry {
                    pool,
                    members: infos,
                    by_addr,
                    quorum_up: vs.quorum_up.clone(),
                    quorum_down: vs.quorum_down.clone(),
                    omega: vs.omega,
                },
            );
        }
        for (_, t) in old_tasks.drain() {
            t.abort.abort();
        }
    }

    fn spawn(&mut self, rs: RsKey, index: usize, spec: Arc<Spec>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let first = CheckerState::new(spec.alpha, spec.timing).first_delay(jitter(&(rs, index)));
        let task = tokio::spawn(run_checker(
            rs,
            index,
            generation,
            spec.clone(),
            first,
            self.tx.clone(),
            self.limiter.clone(),
        ));
        self.tasks.insert((rs, index), Task { spec, generation, abort: task.abort_handle() });
    }

    /// The next check result (cancel-safe: for `select!`).
    pub async fn next(&mut self) -> Option<Report> {
        self.rx.recv().await
    }

    /// Takes a result into account: starts notify and quorum scripts, queues the decisions'
    /// log lines, and says whether the plan changed (the caller then runs [`apply`]).
    pub fn handle(&mut self, r: Report) -> bool {
        if self.tasks.get(&(r.rs, r.index)).is_none_or(|t| t.generation != r.generation) {
            return false; // from a checker stopped by a reload
        }
        let Some(entry) = self.pools.get_mut(&r.rs.service) else { return false };
        let Some(&m) = entry.by_addr.get(&r.rs.addr) else { return false };
        let info = &mut entry.members[m];
        let rs_name = socket(info.addr, info.port);
        let h = &mut info.checkers[r.index];
        h.last_duration = r.duration;
        let spec = &self.tasks[&(r.rs, r.index)].spec;
        let (misc, log_all) = (matches!(spec.probe, Probe::Misc { dynamic: true, .. }), spec.log_all);
        let mut events = Vec::new();
        match &r.result {
            Ok(weight) => {
                h.last_failure = None;
                if misc {
                    events.extend(entry.pool.set_weight(m, *weight));
                }
            }
            Err(f) => {
                h.last_failure = Some(f.reason);
                if let Some(i) = Failure::ALL.iter().position(|&x| x == f.reason) {
                    h.failures[i] += 1;
                }
                if log_all {
                    warn!(service = %r.rs.service, "real server {rs_name}: {} failed: {}", h.kind, f.detail);
                } else {
                    debug!(service = %r.rs.service, "real server {rs_name}: {} failed: {}", h.kind, f.detail);
                }
            }
        }
        if let Some(up) = r.changed {
            h.up = up;
            match &r.result {
                Err(f) => warn!(service = %r.rs.service, "real server {rs_name}: {} down: {}", h.kind, f.detail),
                Ok(_) => info!(service = %r.rs.service, "real server {rs_name}: {} up", h.kind),
            }
            events.extend(entry.pool.set_checker(m, r.index, up));
        }
        for e in &events {
            match *e {
                Event::Member { member, up } => {
                    let mi = &entry.members[member];
                    let name = socket(mi.addr, mi.port);
                    let script = if up { &mi.notify_up } else { &mi.notify_down };
                    let effect = match entry.pool.placement(member) {
                        Placement::Serve(0) if !up => "weight 0 (inhibit_on_failure)".to_string(),
                        Placement::Serve(w) => format!("weight {w}"),
                        Placement::Removed => "removed".to_string(),
                    };
                    if up {
                        self.decided.push((false, r.rs.service, format!("real server {name} is up: {effect}")));
                    } else {
                        self.decided.push((true, r.rs.service, format!("real server {name} is down: {effect}")));
                    }
                    spawn_script(
                        script.clone(),
                        if up { "notify_up" } else { "notify_down" },
                        self.script_user.clone(),
                    );
                }
                Event::Weight { member, weight } => {
                    let mi = &entry.members[member];
                    let line = format!("real server {}: weight {weight} (misc_dynamic)", socket(mi.addr, mi.port));
                    self.decided.push((false, r.rs.service, line));
                }
                Event::Quorum { up } => {
                    let live = entry.pool.live_weight();
                    if up {
                        self.decided.push((false, r.rs.service, format!("quorum gained (live weight {live})")));
                    } else {
                        self.decided.push((true, r.rs.service, format!("quorum lost (live weight {live})")));
                    }
                    let script = if up { &entry.quorum_up } else { &entry.quorum_down };
                    spawn_script(
                        script.clone(),
                        if up { "quorum_up" } else { "quorum_down" },
                        self.script_user.clone(),
                    );
                }
            }
        }
        if events.is_empty() {
            return false;
        }
        self.changed.insert(r.rs.service);
        true
    }

    /// `plan` with health applied: failed real servers removed (or at weight 0 with
    /// inhibit_on_failure), misc_dynamic weights, and no real server while a service with a
    /// sorry server is below quorum.
    #[must_use]
    pub fn effective(&self, plan: &Plan) -> Plan {
        Plan {
            services: plan.services.iter().map(|s| self.effective_service(s)).collect(),
            ipvs: plan.ipvs.iter().map(|t| self.effective_ipvs(t)).collect(),
        }
    }

    /// A kernel IPVS service with health applied, as [`Checks::effective_service`]: a failed
    /// real server leaves the table (or keeps weight 0 with inhibit_on_failure).
    #[must_use]
    pub fn effective_ipvs(&self, planned: &crate::ipvs::Table) -> crate::ipvs::Table {
        let mut t = planned.clone();
        if let Some(key) = t.key() {
            self.place(key, &mut t.dests, |d| (d.addr, &mut d.weight));
        }
        t
    }

    /// Applies the health pool of `key` (if it has one) to its destinations: a removed real
    /// server leaves, a serving one takes the weight health gives it.
    fn place<D>(&self, key: ServiceKey, dests: &mut Vec<D>, addr_weight: impl Fn(&mut D) -> (IpAddr, &mut u32)) {
        let Some(entry) = self.pools.get(&key) else { return };
        dests.retain_mut(|d| {
            let (addr, weight) = addr_weight(d);
            match entry.by_addr.get(&addr).map(|&i| entry.pool.placement(i)) {
                None => true,
                Some(Placement::Serve(w)) => {
                    *weight = w;
                    true
                }
                Some(Placement::Removed) => false,
            }
        });
    }

    /// One planned service with health applied (see [`Checks::effective`]).
    #[must_use]
    pub fn effective_service(&self, planned: &PlannedService) -> PlannedService {
        let mut s = planned.clone();
        self.place(s.key, &mut s.dests, |d| (d.addr, &mut d.weight));
        s
    }

    /// Every real server's health.
    #[must_use]
    pub fn health(&self) -> Vec<HealthRow> {
        let mut rows: Vec<HealthRow> = self
            .pools
            .iter()
            .flat_map(|(key, e)| {
                e.members.iter().enumerate().map(move |(i, m)| HealthRow {
                    service: *key,
                    addr: m.addr,
                    port: m.port,
                    up: e.pool.members[i].up(),
                    planned_weight: match e.pool.placement(i) {
                        Placement::Serve(w) => Some(w),
                        Placement::Removed => None,
                    },
                    checkers: m.checkers.clone(),
                })
            })
            .collect();
        rows.sort_by_key(|r| (r.service, r.addr));
        rows
    }

    /// Stops every checker; with `omega`, runs quorum_down of services that had quorum
    /// (keepalived does so at shutdown), waiting for those scripts.
    pub async fn stop(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort.abort();
        }
        for e in self.pools.values().filter(|e| e.omega && e.pool.quorum_up) {
            if let Some(line) = &e.quorum_down {
                run_script(line, "quorum_down (omega)", self.script_user.clone()).await;
            }
        }
    }
}

/// Brings the services a decision changed to their health-adjusted plan right after it (only
/// those: the others are untouched), then logs the decisions with the time from decision to
/// maps, which it returns (it must stay within milliseconds).
pub fn apply<W: crate::reconcile::MapWriter>(
    checks: &mut Checks,
    plan: &Plan,
    rec: &mut crate::reconcile::Reconciler,
    macs: &HashMap<IpAddr, [u8; 6]>,
    maps: &mut W,
) -> Duration {
    let started = std::time::Instant::now();
    let services: Vec<PlannedService> =
        plan.services.iter().filter(|s| checks.changed.contains(&s.key)).map(|s| checks.effective_service(s)).collect();
    checks.changed.clear();
    if let Err(e) = rec.apply_some(&services, &|a| macs.get(&a).copied(), maps) {
        warn!(%e, "applying a health decision to the maps");
    }
    let took = started.elapsed();
    let micros = took.as_micros();
    for (bad, service, line) in checks.decided.drain(..) {
        if bad {
            warn!(%service, applied_in_us = micros, "{line}");
        } else {
            info!(%service, applied_in_us = micros, "{line}");
        }
    }
    took
}

async fn run_script(line: &str, what: &str, user: ScriptUser) {
    let user = match user {
        Ok(u) => u,
        Err(e) => return warn!("{what} `{line}` not run: {e}"),
    };
    match script::run(line, NOTIFY_TIMEOUT, what, user).await {
        Ok(script::Exit::Code(0)) => debug!("{what} `{line}` done"),
        Ok(exit) => warn!("{what} `{line}` ended with {exit:?}"),
        Err(e) => warn!("{what}: {e}"),
    }
}

fn spawn_script(line: Option<String>, what: &'static str, user: ScriptUser) {
    if let Some(line) = line {
        tokio::spawn(async move { run_script(&line, what, user).await });
    }
}

async fn run_checker(
    rs: RsKey,
    index: usize,
    generation: u64,
    spec: Arc<Spec>,
    first: Duration,
    tx: mpsc::Sender<Report>,
    limiter: Arc<Semaphore>,
) {
    let mut state = CheckerState::new(spec.alpha, spec.timing);
    let mut due = Instant::now() + first;
    let mut seq: u16 = (jitter(&(rs, index)) * 65536.0) as u16;
    loop {
        tokio::time::sleep_until(due).await;
        let Ok(_permit) = limiter.acquire().await else { return };
        // Late against the schedule, waiting for a permit included.
        let started = Instant::now();
        let lateness = started.saturating_duration_since(due);
        seq = seq.wrapping_add(1);
        // Boxed: the probes' futures hold buffers (HTTP's read buffer, TLS state); on the heap
        // only while a check runs, they do not make every idle checker task as large.
        let result = Box::pin(spec.run(seq)).await;
        drop(_permit);
        let duration = started.elapsed();
        let step = state.on_result(result.is_ok());
        let report = Report { rs, index, generation, result, changed: step.changed, duration, lateness };
        if tx.send(report).await.is_err() {
            return;
        }
        due = Instant::now() + step.next;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn conf(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("k.conf")).expect("parses").config
    }

    #[test]
    fn missing_and_non_executable_scripts_are_errors_at_their_block() {
        let plain = std::env::temp_dir().join(format!("lvs-validate-test-{}", std::process::id()));
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let c = conf(&format!(
            "virtual_server 10.0.0.1 80 {{\n lb_kind DR\n quorum_up /nonexistent/up\n\
             real_server 10.0.0.2 80 {{\n  notify_down \"{} arg\"\n  MISC_CHECK {{\n   misc_path true\n  }}\n }}\n}}\n",
            plain.display()
        ));
        let errors = validate(&c);
        let _ = std::fs::remove_file(&plain);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{text:?}");
        assert!(text[0].starts_with("k.conf:1:") && text[0].contains("quorum_up") && text[0].contains("not found"));
        assert!(text[1].starts_with("k.conf:4:") && text[1].contains("not an executable"), "{text:?}");
    }

    #[test]
    fn with_script_security_a_script_in_a_world_writable_place_is_an_error() {
        let dir = std::env::temp_dir().join(format!("lvs-validate-secure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("notify.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let text = |secure: &str| {
            format!(
                "global_defs {{\n {secure}\n}}\nvirtual_server 10.0.0.1 80 {{\n lb_kind DR\n real_server 10.0.0.2 80 {{\n  notify_up {}\n }}\n}}\n",
                script.display()
            )
        };
        let lax = validate(&conf(&text("")));
        let strict: Vec<String> =
            validate(&conf(&text("enable_script_security"))).iter().map(ToString::to_string).collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(lax, []);
        assert_eq!(strict.len(), 1, "{strict:?}");
        assert!(
            strict[0].starts_with("k.conf:6:") && strict[0].contains("writable by users other than root"),
            "{strict:?}"
        );
    }

    #[test]
    fn an_invalid_url_regex_is_an_error_at_its_url() {
        let c = conf(
            "virtual_server 10.0.0.1 80 {\n lb_kind DR\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    path /\n    regex \"a(b\"\n   }\n  }\n }\n}\n",
        );
        let errors: Vec<String> = validate(&c).iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("k.conf:5:4: url regex `a(b`"), "{errors:?}");
    }

    #[test]
    fn an_unknown_misc_check_user_is_an_error_at_its_checker() {
        let c = conf(
            "virtual_server 10.0.0.1 80 {\n lb_kind DR\n real_server 10.0.0.2 80 {\n  MISC_CHECK {\n   misc_path true\n   user lvs-no-such-user\n  }\n }\n}\n",
        );
        let errors: Vec<String> = validate(&c).iter().map(ToString::to_string).collect();
        assert_eq!(errors, ["k.conf:4:3: MISC_CHECK user: no user lvs-no-such-user on this system"]);
    }

    #[tokio::test]
    async fn a_failing_checker_removes_its_server_and_a_success_restores_it() {
        // A TCP_CHECK on a port nobody listens on, retry 1, 100 ms apart.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = conf(&format!(
            "virtual_server 10.0.0.1 80 {{\n lb_kind DR\n lb_algo rr\n\
             real_server 127.0.0.1 {port} {{\n  weight 3\n  TCP_CHECK {{\n   retry 1\n   delay_before_retry 0.1\n   delay_loop 0.2\n   warmup 0\n  }}\n }}\n\
             real_server 10.0.0.3 80 {{\n }}\n}}\n"
        ));
        let (plan, _) = crate::desired::plan(&c).unwrap();
        let mut checks = Checks::start(&c, &plan);
        assert_eq!(checks.effective(&plan), plan, "up until checked");
        let first = checks.next().await.unwrap();
        assert!(first.result.is_err() && first.changed.is_none(), "the first failure is retried");
        assert!(!checks.handle(first));
        let second = checks.next().await.unwrap();
        assert_eq!(second.changed, Some(false));
        assert!(checks.handle(second), "down: the plan changes");
        let eff = checks.effective(&plan);
        assert_eq!(eff.services[0].dests.len(), 1);
        assert_eq!(eff.services[0].dests[0].addr, IpAddr::from([10, 0, 0, 3]), "the unchecked server stays");
        let rows = checks.health();
        let row = rows.iter().find(|r| r.addr == IpAddr::from([127, 0, 0, 1])).unwrap();
        assert!(!row.up && row.planned_weight.is_none());
        assert_eq!(row.checkers[0].last_failure, Some(Failure::Refused));

        // A reload with the same checker keeps its state.
        checks.reload(&c, &plan);
        assert_eq!(checks.effective(&plan), eff);

        let _l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let back = checks.next().await.unwrap();
        assert_eq!(back.changed, Some(true));
        assert!(checks.handle(back));
        assert_eq!(checks.effective(&plan), plan);
    }
}
