//! VRRP (RFC 3768, RFC 5798, RFC 9568) between directors, interoperating with keepalived.
//!
//! - `packet`: the wire format and receive checks (pure);
//! - `state`: one virtual router's state machine on an injected clock (pure);
//! - `instance`: keepalived.conf's `vrrp_instance` to what runs, with keepalived's defaults;
//! - `socket`: raw IP protocol 112 sockets; `garp`: gratuitous ARP / unsolicited NA;
//! - `script`: track and notify scripts;
//! - this file: the runtime, one tokio task driving every instance with the real clock, and
//!   the daemon's side of it (which VIPs are forwarded, status, shutdown).

pub mod garp;
pub mod instance;
pub mod packet;
pub mod script;
pub mod socket;
pub mod state;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use self::{
    instance::Spec,
    packet::{Advert, Reject},
    socket::VrrpSocket,
    state::{Action, Input, Machine, State},
};
use crate::{
    config::{Config, Diagnostic},
    desired::Plan,
    netlink::{Netlink, NetlinkError},
};

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Diagnostic>),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error(
        "vrrp_instance {instance} ({location}): interface {interface} has no {family} address to send adverts from"
    )]
    NoSource { instance: String, location: crate::config::Location, interface: String, family: &'static str },
    /// An interface of the instance (its own, a tracked one) cannot be had.
    #[error("vrrp_instance {instance} ({location}): {source}")]
    Instance {
        instance: String,
        location: crate::config::Location,
        #[source]
        source: NetlinkError,
    },
}

/// One instance as `lvs-agent status` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub name: String,
    pub state: State,
    pub priority: u8,
    pub vrid: u8,
    pub version: u8,
    pub interface: String,
    pub vips: Vec<IpAddr>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Rejected adverts by `Reject::as_str` reason.
    pub rejected: BTreeMap<&'static str, u64>,
}

/// The daemon is told which VRRP VIPs it forwards now; it answers on `applied` once the maps
/// are updated.
#[derive(Debug)]
pub struct Forwarding {
    pub masters: HashSet<IpAddr>,
    pub applied: oneshot::Sender<()>,
}

/// The daemon's handle on the runtime.
pub struct Vrrp {
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// What runs, to tell a reload that changes it (see `reload_notice`).
    running: Vec<Spec>,
    default_interface: String,
}

impl Vrrp {
    /// Starts the runtime for the config's instances; None when there are none (no VRRP).
    pub async fn start(
        config: &Config,
        default_interface: &str,
        nl: &Netlink,
    ) -> Result<Option<(Vrrp, mpsc::Receiver<Forwarding>)>, VrrpError> {
        if config.vrrp_instances.is_empty() {
            return Ok(None);
        }
        let specs = instance::specs(config, default_interface).map_err(VrrpError::Config)?;
        let (forward_tx, forward_rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = oneshot::channel();
        let running = specs.clone();
        let runtime = Runtime::new(config, specs, nl.clone(), forward_tx).await?;
        let status = runtime.status.clone();
        let task = tokio::spawn(runtime.run(stop_rx));
        let default_interface = default_interface.to_string();
        Ok(Some((Vrrp { status, stop: Some(stop_tx), task, running, default_interface }, forward_rx)))
    }

    /// A reload does not change VRRP yet: says so when the reloaded config's VRRP part differs
    /// from what runs (locations aside), so that an operator knows a restart is needed.
    pub fn reload_notice(&self, config: &Config) {
        let strip = |mut v: Vec<Spec>| {
            for s in &mut v {
                s.location = crate::config::Location { file: s.location.file.clone(), line: 0, column: 0 };
            }
            v
        };
        let now = instance::specs(config, &self.default_interface).map(strip);
        if now.as_ref().ok() != Some(&strip(self.running.clone())) {
            warn!(
                "the reloaded configuration changes VRRP (vrrp_instance, vrrp_script or vrrp_sync_group); reload does not apply VRRP changes yet, the running instances go on as started: restart the agent to apply them"
            );
        }
    }

    #[must_use]
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Shutdown (RFC 5798 §6.4.3): masters send priority 0 and give their VIPs up; notify_stop
    /// runs. Returns when done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task).await.is_err() {
            warn!("VRRP did not stop within 10 s");
        }
    }
}

/// The part of the config VRRP reads (a whole clone would keep a large config's virtual
/// servers in memory twice).
#[must_use]
pub fn config_part(config: &Config) -> Config {
    Config {
        global_defs: config.global_defs.clone(),
        vrrp_scripts: config.vrrp_scripts.clone(),
        vrrp_instances: config.vrrp_instances.clone(),
        vrrp_sync_groups: config.vrrp_sync_groups.clone(),
        ..Config::default()
    }
}

/// The coupling of the data plane to VRRP: which VIPs VRRP holds, and of those, which this
/// director is master for now.
#[derive(Debug, Clone, Default)]
pub struct Coupling {
    vips: HashSet<IpAddr>,
    masters: HashSet<IpAddr>,
}

impl Coupling {
    /// Every `virtual_ipaddress` (and `virtual_ipaddress_excluded`) of the config's
    /// instances; master of none yet.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let vips = config
            .vrrp_instances
            .iter()
            .flat_map(|i| i.virtual_ipaddress.iter().chain(&i.virtual_ipaddress_excluded).map(|v| v.addr))
            .collect();
        Self { vips, masters: HashSet::new() }
    }

    /// A forwarding change from the runtime.
    pub fn set_masters(&mut self, masters: HashSet<IpAddr>) {
        self.masters = masters;
    }

    /// The plan the data plane is given (see `forwarded_plan`).
    #[must_use]
    pub fn plan(&self, plan: &Plan) -> Plan {
        forwarded_plan(plan, &self.vips, &self.masters)
    }
}

/// The plan the data plane is given: services of VIPs held by VRRP only while master.
#[must_use]
pub fn forwarded_plan(plan: &Plan, vrrp_vips: &HashSet<IpAddr>, masters: &HashSet<IpAddr>) -> Plan {
    let mut p = plan.clone();
    p.retain_vips(|vip| !vrrp_vips.contains(&vip) || masters.contains(&vip));
    p
}

/// Awaits the next forwarding change, or forever when VRRP does not run (a select! arm).
pub async fn next_forwarding(rx: &mut Option<mpsc::Receiver<Forwarding>>) -> Forwarding {
    match rx {
        Some(r) => match r.recv().await {
            Some(f) => f,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

struct Router {
    spec: Spec,
    machine: Machine,
    ifindex: u32,
    mac: [u8; 6],
    /// The source of our adverts, also our primary address for ties.
    src: IpAddr,
    socket: Arc<VrrpSocket>,
    /// Indexes into `Runtime::scripts` of the tracked scripts, with weight and reverse.
    scripts: Vec<(usize, i32, bool)>,
    /// Tracked interfaces (ifindex, weight); the instance's own interface is one of them.
    links: Vec<(u32, i32)>,
    sync_group: Option<usize>,
}

struct Runtime {
    routers: Vec<Router>,
    nl: Netlink,
    /// vrrp_script states, by index of `config.vrrp_scripts`.
    scripts: Vec<bool>,
    script_rx: mpsc::Receiver<script::ScriptResult>,
    links: HashMap<u32, bool>,
    link_rx: mpsc::UnboundedReceiver<(u32, bool)>,
    packets: mpsc::Receiver<(u32, bool, packet::Received, Vec<u8>)>,
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    /// To the daemon: the VRRP VIPs it forwards now.
    forward: mpsc::Sender<Forwarding>,
    stopping: bool,
    counters: Vec<(u64, u64, BTreeMap<&'static str, u64>)>,
    sync_notify: Vec<crate::config::Notify>,
    sync_names: Vec<String>,
    /// vrrp_sync_group moves queued by a member's transition, applied after it.
    pending: Vec<(usize, Input)>,
}

impl Runtime {
    async fn new(
        config: &Config,
        specs: Vec<Spec>,
        nl: Netlink,
        forward: mpsc::Sender<Forwarding>,
    ) -> Result<Self, VrrpError> {
        let (pkt_tx, packets) = mpsc::channel(256);
        let mut sockets: HashMap<(u32, bool), Arc<VrrpSocket>> = HashMap::new();
        let mut routers = Vec::new();
        let mut wanted_links = HashSet::new();
        for spec in specs {
            let at =
                |source| VrrpError::Instance { instance: spec.name.clone(), location: spec.location.clone(), source };
            let link = nl.link_by_name(&spec.interface).await.map_err(at)?;
            let key = (link.index, spec.ipv6);
            let socket = match sockets.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(VrrpSocket::open(&spec.interface, link.index, spec.mcast_group)?);
                    spawn_reader(s.clone(), key, pkt_tx.clone());
                    sockets.insert(key, s.clone());
                    s
                }
            };
            let vips: HashSet<IpAddr> = spec.held().map(|v| v.0).collect();
            let own = nl.addresses(link.index).await.map_err(at)?;
            let pick = own.iter().map(|a| a.0).find(|a| {
                !vips.contains(a)
                    && match (a, spec.ipv6) {
                        (IpAddr::V4(_), false) => true,
                        (IpAddr::V6(v6), true) => v6.is_unicast_link_local(),
                        _ => false,
                    }
            });
            let chosen = if spec.unicast_peers.is_empty() { spec.mcast_src } else { spec.unicast_src };
            let src = chosen.or(pick).ok_or_else(|| VrrpError::NoSource {
                instance: spec.name.clone(),
                location: spec.location.clone(),
                interface: spec.interface.clone(),
                family: if spec.ipv6 { "IPv6 link-local" } else { "IPv4" },
            })?;
            // keepalived tracks the instance's own interface unless `dont_track_primary`.
            let mut links = if spec.dont_track_primary { Vec::new() } else { vec![(link.index, 0)] };
            for (name, weight) in &spec.track_interfaces {
                let l = nl.link_by_name(name).await.map_err(at)?;
                links.retain(|x| x.0 != l.index);
                links.push((l.index, *weight));
            }
            wanted_links.extend(links.iter().map(|l| l.0));
            let scripts = spec
                .track_scripts
                .iter()
                .filter_map(|(name, w, rev)| {
                    config.vrrp_scripts.iter().position(|s| &s.name == name).map(|i| (i, *w, *rev))
                })
                .collect();
            let sync_group = config.vrrp_sync_groups.iter().position(|g| g.group.contains(&spec.name));
            let machine = Machine::new(spec.params(src));
            routers.push(Router {
                spec,
                machine,
                ifindex: link.index,
                mac: link.mac,
                src,
                socket,
                scripts,
                links,
                sync_group,
            });
        }
        let (script_tx, script_rx) = mpsc::channel(64);
        let used: HashSet<usize> = routers.iter().flat_map(|r| r.scripts.iter().map(|s| s.0)).collect();
        let mut scripts = Vec::new();
        for (i, s) in config.vrrp_scripts.iter().enumerate() {
            scripts.push(!s.init_fail);
            if used.contains(&i) {
                script::spawn_tracker(i, s, script_tx.clone());
            }
        }
        let (links, link_rx) = nl.watch_links(&wanted_links.into_iter().collect::<Vec<_>>()).await?;
        let counters = vec![(0, 0, BTreeMap::new()); routers.len()];
        let status = Arc::new(Mutex::new(Vec::new()));
        Ok(Self {
            routers,
            nl,
            scripts,
            script_rx,
            links,
            link_rx,
            packets,
            status,
            forward,
            stopping: false,
            counters,
            sync_notify: config.vrrp_sync_groups.iter().map(|g| g.notify.clone()).collect(),
            sync_names: config.vrrp_sync_groups.iter().map(|g| g.name.clone()).collect(),
            pending: Vec::new(),
        })
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        // keepalived removes leftover VIPs (a crashed run's) before it starts.
        for i in 0..self.routers.len() {
            self.remove_vips(i).await;
        }
        self.apply_tracking(Instant::now()).await;
        for i in 0..self.routers.len() {
            let actions = self.routers[i].machine.handle(Input::Startup, Instant::now());
            self.execute(i, actions).await;
        }
        self.publish();
        let mut stopped = false;
        while !stopped {
            let deadline = self.routers.iter().filter_map(|r| r.machine.next_deadline()).min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => stopped = true,
                () = sleep => {
                    let now = Instant::now();
                    for i in 0..self.routers.len() {
                        if self.held_back(i, now) {
                            self.routers[i].machine.defer_takeover(now);
                        }
                        let actions = self.routers[i].machine.on_timers(now);
                        self.execute(i, actions).await;
                    }
                }
                Some((ifindex, ipv6, rx, msg)) = self.packets.recv() => self.on_packet(ifindex, ipv6, rx, &msg).await,
                Some((index, ok)) = self.script_rx.recv() => {
                    if let Some(s) = self.scripts.get_mut(index) {
                        *s = ok;
                    }
                    self.apply_tracking(Instant::now()).await;
                }
                Some((ifindex, up)) = self.link_rx.recv() => {
                    if self.links.insert(ifindex, up) != Some(up) {
                        info!(ifindex, up, "tracked interface changed");
                        self.apply_tracking(Instant::now()).await;
                    }
                }
            }
            self.apply_sync().await;
            self.publish();
        }
        self.stopping = true;
        for i in 0..self.routers.len() {
            let actions = self.routers[i].machine.handle(Input::Shutdown, Instant::now());
            self.execute(i, actions).await;
            // Waited for (bounded): the agent exits right after, and would take it along.
            if let Some(stop) = &self.routers[i].spec.notify.stop
                && !script::run(&script::split_words(stop), Some(Duration::from_secs(10))).await
            {
                warn!(instance = %self.routers[i].spec.name, script = %stop, "notify_stop failed");
            }
        }
        self.publish();
    }

    async fn on_packet(&mut self, ifindex: u32, ipv6: bool, rx: packet::Received, msg: &[u8]) {
        let vrid = msg.get(1).copied();
        let Some(i) =
            self.routers.iter().position(|r| r.ifindex == ifindex && r.spec.ipv6 == ipv6 && Some(r.spec.vrid) == vrid)
        else {
            // No instance has this VRID here: each instance on the interface rejects it, for
            // the reason its own checks give first (a CARP packet is "carp", a VRRP one of
            // another router "vrid").
            for n in 0..self.routers.len() {
                let r = &self.routers[n];
                if r.ifindex != ifindex || r.spec.ipv6 != ipv6 {
                    continue;
                }
                let why = match packet::verify(msg, &rx, &r.spec.expect()) {
                    Err(why) => why,
                    Ok(_) => Reject::Vrid(vrid.unwrap_or(0)),
                };
                debug!(instance = %r.spec.name, src = %rx.src, "ignored proto-112 packet: {why}");
                *self.counters[n].2.entry(why.as_str()).or_default() += 1;
            }
            return;
        };
        let checked = packet::verify(msg, &rx, &self.routers[i].spec.expect())
            .and_then(|a| self.routers[i].spec.check_unicast(rx.src, rx.ttl).map(|()| a));
        match checked {
            Ok(advert) => {
                self.counters[i].1 += 1;
                let r = &self.routers[i];
                // RFC 5798 §7.1: the address list MAY be checked; keepalived logs a mismatch.
                let ours: Vec<IpAddr> = r.spec.vips.iter().map(|v| v.0).collect();
                if advert.addrs != ours {
                    debug!(instance = %r.spec.name, src = %rx.src, theirs = ?advert.addrs, "advert lists other addresses");
                }
                let input = Input::Advert { priority: advert.priority, interval: advert.interval, src: rx.src };
                let actions = self.routers[i].machine.handle(input, Instant::now());
                self.execute(i, actions).await;
            }
            Err(why) => {
                let n = self.counters[i].2.entry(why.as_str()).or_default();
                *n += 1;
                // Rate-limited (RFC 9568 §7.1 asks for it): the 1st, 2nd, 4th, 8th... of a kind.
                if n.is_power_of_two() {
                    warn!(instance = %self.routers[i].spec.name, src = %rx.src, count = *n, "advert rejected: {why}");
                }
            }
        }
    }

    /// keepalived's rule for sync groups: a member does not take over while another member
    /// still hears a live master it defers to (the group would be split across routers).
    fn held_back(&self, i: usize, now: Instant) -> bool {
        let r = &self.routers[i];
        let Some(g) = r.sync_group else { return false };
        r.machine.down_timer_due(now)
            && self
                .routers
                .iter()
                .enumerate()
                .any(|(n, o)| n != i && o.sync_group == Some(g) && o.machine.hears_master(now))
    }

    /// Applies the queued sync group moves (each may queue more; every member moves at most
    /// once per state, so this ends).
    async fn apply_sync(&mut self) {
        let mut rounds = 0;
        while !self.pending.is_empty() && rounds < 16 {
            rounds += 1;
            for (i, input) in std::mem::take(&mut self.pending) {
                let actions = self.routers[i].machine.handle(input, Instant::now());
                self.execute(i, actions).await;
            }
        }
    }

    /// Recomputes each instance's priority (tracking weights) and fault (weight-0 trackers;
    /// a sync group faults as a whole, as keepalived's).
    async fn apply_tracking(&mut self, now: Instant) {
        let mut own_fault = Vec::new();
        let mut prios = Vec::new();
        for r in &self.routers {
            let mut fault = false;
            let mut delta = 0i32;
            for (ifindex, weight) in &r.links {
                let up = self.links.get(ifindex).copied().unwrap_or(true);
                match (*weight, up) {
                    (0, false) => fault = true,
                    (w, false) if w < 0 => delta += w,
                    (w, true) if w > 0 => delta += w,
                    _ => {}
                }
            }
            for (index, weight, reverse) in &r.scripts {
                let ok = self.scripts.get(*index).copied().unwrap_or(true) != *reverse;
                match (*weight, ok) {
                    (0, false) => fault = true,
                    (w, false) if w < 0 => delta += w,
                    (w, true) if w > 0 => delta += w,
                    _ => {}
                }
            }
            own_fault.push(fault);
            prios.push((i32::from(r.spec.priority) + delta).clamp(1, 254) as u8);
        }
        for i in 0..self.routers.len() {
            let group = self.routers[i].sync_group;
            let fault = own_fault[i]
                || group
                    .is_some_and(|g| self.routers.iter().zip(&own_fault).any(|(r, f)| r.sync_group == Some(g) && *f));
            let mut actions = self.routers[i].machine.handle(Input::Priority(prios[i]), now);
            actions.extend(self.routers[i].machine.handle(Input::Fault(fault), now));
            self.execute(i, actions).await;
        }
    }

    async fn execute(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(i, priority).await,
                Action::AddVips => {
                    let r = &self.routers[i];
                    for (addr, len) in r.spec.held() {
                        if let Err(e) = self.nl.add_vip(r.ifindex, *addr, *len).await {
                            warn!(instance = %r.spec.name, "{e}");
                        }
                    }
                    // The VIP is ours: the data plane forwards its services before the
                    // gratuitous ARPs bring the traffic here.
                    self.tell_daemon(Some(i)).await;
                }
                Action::RemoveVips => {
                    self.tell_daemon(None).await;
                    self.remove_vips(i).await;
                }
                Action::Garp { count } => {
                    let r = &self.routers[i];
                    let (v4, v6): (Vec<_>, Vec<_>) = r.spec.held().map(|v| v.0).partition(IpAddr::is_ipv4);
                    let v4: Vec<_> =
                        v4.into_iter().filter_map(|a| if let IpAddr::V4(a) = a { Some(a) } else { None }).collect();
                    let v6: Vec<_> =
                        v6.into_iter().filter_map(|a| if let IpAddr::V6(a) = a { Some(a) } else { None }).collect();
                    if let Err(e) = garp::send_arps(r.ifindex, r.mac, &v4, count) {
                        warn!(instance = %r.spec.name, interface = %r.spec.interface, %e, "sending gratuitous ARP");
                    }
                    if let Err(e) = garp::send_nas(r.ifindex, r.mac, &v6, count) {
                        warn!(instance = %r.spec.name, interface = %r.spec.interface, %e, "sending neighbour advertisements");
                    }
                }
                Action::Transition { from, to } => self.on_transition(i, from, to),
            }
        }
    }

    fn on_transition(&mut self, i: usize, from: State, to: State) {
        let r = &self.routers[i];
        info!(
            instance = %r.spec.name,
            vrid = r.spec.vrid,
            interface = %r.spec.interface,
            priority = r.machine.priority(),
            "VRRP {} -> {}",
            from.as_str(),
            to.as_str()
        );
        let n = &r.spec.notify;
        let specific = match to {
            State::Master => n.master.as_ref(),
            State::Backup => n.backup.as_ref(),
            State::Fault => n.fault.as_ref(),
            State::Initialize => None,
        };
        if let Some(s) = specific {
            script::notify(s, &[]);
        }
        // keepalived's generic notify: TYPE NAME STATE PRIORITY.
        if let (Some(s), State::Master | State::Backup | State::Fault) = (&n.any, to) {
            script::notify(s, &["INSTANCE", &r.spec.name, to.as_str(), &r.machine.priority().to_string()]);
        }
        let Some(g) = r.sync_group else { return };
        let members: Vec<usize> = (0..self.routers.len()).filter(|n| self.routers[*n].sync_group == Some(g)).collect();
        // The group moves together (keepalived's vrrp_sync_group): a member that became master
        // takes the others along, one that fell back to backup too (FAULT goes through
        // tracking, which faults the whole group).
        let follow = match (from, to) {
            (State::Backup, State::Master) => Some(Input::SyncMaster),
            (State::Master, State::Backup) => Some(Input::SyncBackup),
            _ => None,
        };
        if let Some(input) = follow {
            self.pending.extend(members.iter().filter(|n| **n != i).map(|n| (*n, input)));
        }
        // The group's notify, once the whole group is in the new state.
        if to != State::Initialize && members.iter().all(|n| self.routers[*n].machine.state() == to) {
            let n = &self.sync_notify[g];
            let specific = match to {
                State::Master => n.master.as_ref(),
                State::Backup => n.backup.as_ref(),
                State::Fault => n.fault.as_ref(),
                State::Initialize => None,
            };
            if let Some(s) = specific {
                script::notify(s, &[]);
            }
            if let Some(s) = &n.any {
                script::notify(s, &["GROUP", &self.sync_names[g], to.as_str(), "0"]);
            }
        }
    }

    async fn send_advert(&mut self, i: usize, priority: u8) {
        let r = &self.routers[i];
        let advert = Advert {
            version: r.spec.version,
            vrid: r.spec.vrid,
            priority,
            interval: r.spec.interval_units(),
            addrs: r.spec.vips.iter().map(|v| v.0).collect(),
            auth: r.spec.auth,
        };
        let dsts: Vec<IpAddr> =
            if r.spec.unicast_peers.is_empty() { vec![r.spec.mcast_group] } else { r.spec.unicast_peers.clone() };
        for dst in dsts {
            let bytes = advert.encode(r.src, dst, r.spec.v4_checksum);
            match r.socket.send(&bytes, r.src, dst, r.spec.unicast_ttl).await {
                Ok(()) => self.counters[i].0 += 1,
                Err(e) => warn!(instance = %r.spec.name, interface = %r.spec.interface, %dst, %e, "sending advert"),
            }
        }
    }

    async fn remove_vips(&self, i: usize) {
        let r = &self.routers[i];
        for (addr, len) in r.spec.held() {
            if let Err(e) = self.nl.del_address(r.ifindex, *addr, *len).await {
                warn!(instance = %r.spec.name, "{e}");
            }
        }
    }

    /// Sends the daemon the VIPs it forwards now (every master's, plus `also`'s while it
    /// becomes one) and waits until the maps are updated. Not at shutdown: the daemon's loop
    /// has ended then and stops forwarding everything itself.
    async fn tell_daemon(&mut self, also: Option<usize>) {
        if self.stopping {
            return;
        }
        let masters = self
            .routers
            .iter()
            .enumerate()
            .filter(|(n, r)| r.machine.state() == State::Master || Some(*n) == also)
            .flat_map(|(_, r)| r.spec.held().map(|v| v.0))
            .collect();
        let (applied, done) = oneshot::channel();
        if self.forward.send(Forwarding { masters, applied }).await.is_ok()
            && tokio::time::timeout(Duration::from_secs(2), done).await.is_err()
        {
            warn!("the data plane did not confirm a VRRP change within 2 s");
        }
    }

    fn publish(&self) {
        let all = self
            .routers
            .iter()
            .zip(&self.counters)
            .map(|(r, (sent, received, rejected))| InstanceStatus {
                name: r.spec.name.clone(),
                state: r.machine.state(),
                priority: r.machine.priority(),
                vrid: r.spec.vrid,
                version: r.spec.version.number(),
                interface: r.spec.interface.clone(),
                vips: r.spec.held().map(|v| v.0).collect(),
                transitions: r.machine.transitions(),
                adverts_sent: *sent,
                adverts_received: *received,
                rejected: rejected.clone(),
            })
            .collect();
        if let Ok(mut s) = self.status.lock() {
            *s = all;
        }
    }
}

fn spawn_reader(
    socket: Arc<VrrpSocket>,
    (ifindex, ipv6): (u32, bool),
    tx: mpsc::Sender<(u32, bool, packet::Received, Vec<u8>)>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match socket.recv(&mut buf).await {
                Ok((rx, range)) => {
                    if tx.send((ifindex, ipv6, rx, buf[range].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(ifindex, %e, "receiving VRRP packets");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired;

    #[test]
    fn services_of_vrrp_vips_are_forwarded_only_while_master() {
        let text = "virtual_server 10.0.0.100 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.11 80 {\n }\n}\n\
                    virtual_server 10.0.0.200 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.11 80 {\n }\n}\n";
        let c = crate::config::parse_str(text, std::path::Path::new("k.conf")).unwrap().config;
        let (plan, _) = desired::plan(&c).unwrap();
        let vrrp: HashSet<IpAddr> = ["10.0.0.100".parse().unwrap()].into();
        let ips = |p: &Plan| p.services.iter().map(|s| s.key.ip().to_string()).collect::<Vec<_>>();
        assert_eq!(ips(&forwarded_plan(&plan, &vrrp, &HashSet::new())), ["10.0.0.200"]);
        assert_eq!(ips(&forwarded_plan(&plan, &vrrp, &vrrp)), ["10.0.0.100", "10.0.0.200"]);
    }
}
