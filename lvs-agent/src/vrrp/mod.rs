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
use tracing::{debug, error, info, warn};

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
        source: Box<NetlinkError>,
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
    reloads: mpsc::Sender<Reload>,
    /// What runs, to diff a reload against.
    running: Vec<Spec>,
    default_interface: String,
    nl: Netlink,
}

/// A reload's VRRP part, validated and looked up (`Vrrp::prepare`), not applied yet.
#[derive(Debug)]
pub struct Prepared {
    config: Config,
    specs: Vec<Spec>,
    resolved: Vec<Resolved>,
}

/// The message that applies a `Prepared` in the runtime; `done` is answered once applied.
struct Reload {
    prepared: Prepared,
    done: oneshot::Sender<()>,
}

impl Vrrp {
    /// Starts the runtime for the config's instances (none is fine: a reload may add some).
    pub async fn start(
        config: &Config,
        default_interface: &str,
        nl: &Netlink,
    ) -> Result<(Vrrp, mpsc::Receiver<Forwarding>), VrrpError> {
        let specs = instance::specs(config, default_interface).map_err(VrrpError::Config)?;
        let mut resolved = Vec::new();
        for spec in &specs {
            resolved.push(resolve(nl, spec, true, &HashSet::new()).await?);
        }
        let (forward_tx, forward_rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let running = specs.clone();
        let runtime = Runtime::new(config, specs, resolved, nl.clone(), forward_tx).await?;
        let status = runtime.status.clone();
        let task = tokio::spawn(runtime.run(stop_rx, reload_rx));
        let vrrp = Vrrp {
            status,
            stop: Some(stop_tx),
            task,
            reloads: reload_tx,
            running,
            default_interface: default_interface.to_string(),
            nl: nl.clone(),
        };
        Ok((vrrp, forward_rx))
    }

    /// A reload's first step: the new VRRP part is checked (instances, interfaces, source
    /// addresses) as at start-up, and nothing changes; an error rejects the reload.
    pub async fn prepare(&self, config: &Config) -> Result<Prepared, VrrpError> {
        let specs = instance::specs(config, &self.default_interface).map_err(VrrpError::Config)?;
        let diff = instance::diff(&self.running, &specs);
        let mut resolved = Vec::new();
        for (n, spec) in specs.iter().enumerate() {
            // A router that goes on keeps its source address (its primary address for ties)
            // unless the configured one changed; the VIPs it holds now are no candidates.
            let kept = diff.unchanged.iter().chain(&diff.changed).find(|k| k.1 == n).map(|k| &self.running[k.0]);
            let need_src =
                kept.is_none_or(|old| (old.unicast_src, old.mcast_src) != (spec.unicast_src, spec.mcast_src));
            let held: HashSet<IpAddr> = kept.iter().flat_map(|old| old.held().map(|v| v.0)).collect();
            resolved.push(resolve(&self.nl, spec, need_src, &held).await?);
        }
        if diff.changed.is_empty() && diff.removed.is_empty() && diff.added.is_empty() {
            debug!(instances = specs.len(), "the reload changes no vrrp_instance");
            return Ok(Prepared { config: config_part(config), specs, resolved });
        }
        let names = |v: &mut dyn Iterator<Item = &String>| v.cloned().collect::<Vec<_>>().join(" ");
        info!(
            unchanged = diff.unchanged.len(),
            changed = %names(&mut diff.changed.iter().map(|c| &specs[c.1].name)),
            removed = %names(&mut diff.removed.iter().map(|r| &self.running[*r].name)),
            added = %names(&mut diff.added.iter().map(|a| &specs[*a].name)),
            "VRRP reload"
        );
        Ok(Prepared { config: config_part(config), specs, resolved })
    }

    /// A reload's second step: the runtime applies `prepared` (keepalived's reload: removed
    /// instances stop, changed ones take their settings in their state, new ones start). The
    /// answer comes once applied; meanwhile the runtime's forwarding changes must be served
    /// (`until_applied`).
    pub async fn apply(&mut self, prepared: Prepared) -> oneshot::Receiver<()> {
        let (done, answer) = oneshot::channel();
        self.running = prepared.specs.clone();
        if self.reloads.send(Reload { prepared, done }).await.is_err() {
            warn!("the VRRP runtime has ended; the reload is not applied to it");
        }
        answer
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

/// Waits (bounded) for a reload's answer while handing the runtime's forwarding changes to
/// `on_change`, as the daemon's loop does: the runtime waits for each to be applied.
pub async fn until_applied(
    answer: oneshot::Receiver<()>,
    changes: &mut mpsc::Receiver<Forwarding>,
    mut on_change: impl FnMut(Forwarding),
) {
    let limit = tokio::time::sleep(Duration::from_secs(15));
    tokio::pin!(answer, limit);
    loop {
        tokio::select! {
            _ = &mut answer => return,
            () = &mut limit => {
                warn!("VRRP did not finish applying the reload within 15 s");
                return;
            }
            Some(change) = changes.recv() => on_change(change),
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

    /// A reload: the new config's VRRP VIPs (their services wait for the runtime's word that
    /// this director is master for them; the others are forwarded as any).
    pub fn reload(&mut self, config: &Config) {
        self.vips = Self::new(config).vips;
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

/// Awaits the next forwarding change, or forever once the runtime has ended (a select! arm).
pub async fn next_forwarding(rx: &mut mpsc::Receiver<Forwarding>) -> Forwarding {
    match rx.recv().await {
        Some(f) => f,
        None => std::future::pending().await,
    }
}

/// The states `new` vrrp_scripts start in: a script with the name and command of one that ran
/// keeps its state (keepalived's reload keeps a same script's result), others start as at
/// start-up (failed with `init_fail`, else OK).
fn carried_script_states(
    old: &[crate::config::VrrpScript],
    states: &[bool],
    new: &[crate::config::VrrpScript],
) -> Vec<bool> {
    new.iter()
        .map(|d| {
            old.iter()
                .zip(states)
                .find(|(o, _)| o.name == d.name && o.script == d.script)
                .map_or(!d.init_fail, |(_, ok)| *ok)
        })
        .collect()
}

/// What an instance needs from the system: its interface, the tracked ones, the address its
/// adverts go from (None: the runtime keeps the one in use). Looked up before anything runs
/// or changes, so that a missing interface refuses a start or a reload.
#[derive(Debug, Clone)]
struct Resolved {
    ifindex: u32,
    mac: [u8; 6],
    src: Option<IpAddr>,
    /// Tracked interfaces (ifindex, weight); the instance's own interface is one of them.
    links: Vec<(u32, i32)>,
}

async fn resolve(nl: &Netlink, spec: &Spec, need_src: bool, held: &HashSet<IpAddr>) -> Result<Resolved, VrrpError> {
    let at = |source| VrrpError::Instance {
        instance: spec.name.clone(),
        location: spec.location.clone(),
        source: Box::new(source),
    };
    let link = nl.link_by_name(&spec.interface).await.map_err(at)?;
    let chosen = if spec.unicast_peers.is_empty() { spec.mcast_src } else { spec.unicast_src };
    let src = match (chosen, need_src) {
        (Some(a), _) => Some(a),
        (None, false) => None,
        (None, true) => {
            let vips: HashSet<IpAddr> = spec.held().map(|v| v.0).chain(held.iter().copied()).collect();
            let own = nl.addresses(link.index).await.map_err(at)?;
            let pick = own.iter().map(|a| a.0).find(|a| {
                !vips.contains(a)
                    && match (a, spec.ipv6) {
                        (IpAddr::V4(_), false) => true,
                        (IpAddr::V6(v6), true) => v6.is_unicast_link_local(),
                        _ => false,
                    }
            });
            Some(pick.ok_or_else(|| VrrpError::NoSource {
                instance: spec.name.clone(),
                location: spec.location.clone(),
                interface: spec.interface.clone(),
                family: if spec.ipv6 { "IPv6 link-local" } else { "IPv4" },
            })?)
        }
    };
    // keepalived tracks the instance's own interface unless `dont_track_primary`.
    let mut links = if spec.dont_track_primary { Vec::new() } else { vec![(link.index, 0)] };
    for (name, weight) in &spec.track_interfaces {
        let l = nl.link_by_name(name).await.map_err(at)?;
        links.retain(|x| x.0 != l.index);
        links.push((l.index, *weight));
    }
    Ok(Resolved { ifindex: link.index, mac: link.mac, src, links })
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

/// A socket per interface and family, shared by its instances, with its reader task.
type Sockets = HashMap<(u32, bool), (Arc<VrrpSocket>, tokio::task::AbortHandle)>;
type Packet = (u32, bool, packet::Received, Vec<u8>);
/// Adverts sent, received, rejected by reason.
type Counters = (u64, u64, BTreeMap<&'static str, u64>);

struct Runtime {
    routers: Vec<Router>,
    nl: Netlink,
    sockets: Sockets,
    pkt_tx: mpsc::Sender<Packet>,
    packets: mpsc::Receiver<Packet>,
    /// The config's vrrp_scripts, their states (by index) and running trackers.
    script_defs: Vec<crate::config::VrrpScript>,
    scripts: Vec<bool>,
    trackers: Vec<tokio::task::AbortHandle>,
    /// The scripts the trackers run (indexes).
    tracked: HashSet<usize>,
    script_rx: mpsc::Receiver<script::ScriptResult>,
    links: HashMap<u32, bool>,
    link_rx: mpsc::UnboundedReceiver<(u32, bool)>,
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    /// To the daemon: the VRRP VIPs it forwards now.
    forward: mpsc::Sender<Forwarding>,
    stopping: bool,
    counters: Vec<Counters>,
    sync_notify: Vec<crate::config::Notify>,
    sync_names: Vec<String>,
    /// vrrp_sync_group moves queued by a member's transition, applied after it.
    pending: Vec<(usize, Input)>,
}

impl Runtime {
    async fn new(
        config: &Config,
        specs: Vec<Spec>,
        resolved: Vec<Resolved>,
        nl: Netlink,
        forward: mpsc::Sender<Forwarding>,
    ) -> Result<Self, VrrpError> {
        let (pkt_tx, packets) = mpsc::channel(256);
        let (_, script_rx) = mpsc::channel(1);
        // Placeholders until `wire`.
        let (_, link_rx) = mpsc::unbounded_channel();
        let links = HashMap::new();
        let mut rt = Self {
            routers: Vec::new(),
            nl,
            sockets: HashMap::new(),
            pkt_tx,
            packets,
            script_defs: Vec::new(),
            scripts: Vec::new(),
            trackers: Vec::new(),
            tracked: HashSet::new(),
            script_rx,
            links,
            link_rx,
            status: Arc::new(Mutex::new(Vec::new())),
            forward,
            stopping: false,
            counters: Vec::new(),
            sync_notify: Vec::new(),
            sync_names: Vec::new(),
            pending: Vec::new(),
        };
        for (spec, r) in specs.into_iter().zip(resolved) {
            let router = rt.router(spec, r)?;
            rt.routers.push(router);
            rt.counters.push((0, 0, BTreeMap::new()));
        }
        rt.wire(config).await?;
        Ok(rt)
    }

    /// A new router in Initialize, on its interface's socket (opened if it is the first).
    fn router(&mut self, spec: Spec, r: Resolved) -> Result<Router, VrrpError> {
        let key = (r.ifindex, spec.ipv6);
        let socket = match self.sockets.get(&key) {
            Some(s) => s.0.clone(),
            None => {
                let s = Arc::new(VrrpSocket::open(&spec.interface, r.ifindex, spec.mcast_group)?);
                let reader = spawn_reader(s.clone(), key, self.pkt_tx.clone());
                self.sockets.insert(key, (s.clone(), reader));
                s
            }
        };
        let src = r.src.ok_or_else(|| VrrpError::NoSource {
            instance: spec.name.clone(),
            location: spec.location.clone(),
            interface: spec.interface.clone(),
            family: if spec.ipv6 { "IPv6 link-local" } else { "IPv4" },
        })?;
        let machine = Machine::new(spec.params(src));
        Ok(Router {
            spec,
            machine,
            ifindex: r.ifindex,
            mac: r.mac,
            src,
            socket,
            scripts: Vec::new(),
            links: r.links,
            sync_group: None,
        })
    }

    /// What the routers share from the config: vrrp_script trackers (a script of the same
    /// name and command keeps its state, as keepalived's reload keeps it), sync groups, and
    /// the watch on tracked interfaces.
    /// Trackers and the link watch are left running when a reload does not change what they
    /// watch (a new watch is a netlink socket more until the old one's next event); none runs
    /// for nothing (an agent without instances watches no link).
    async fn wire(&mut self, config: &Config) -> Result<(), VrrpError> {
        let scripts = carried_script_states(&self.script_defs, &self.scripts, &config.vrrp_scripts);
        for r in &mut self.routers {
            r.scripts = r
                .spec
                .track_scripts
                .iter()
                .filter_map(|(name, w, rev)| {
                    config.vrrp_scripts.iter().position(|s| &s.name == name).map(|i| (i, *w, *rev))
                })
                .collect();
            r.sync_group = config.vrrp_sync_groups.iter().position(|g| g.group.contains(&r.spec.name));
        }
        let used: HashSet<usize> = self.routers.iter().flat_map(|r| r.scripts.iter().map(|s| s.0)).collect();
        if used != self.tracked || config.vrrp_scripts != self.script_defs {
            for t in self.trackers.drain(..) {
                t.abort();
            }
            // A new channel: results of the stopped trackers (old indexes) are not read.
            let (script_tx, script_rx) = mpsc::channel(64);
            for (i, s) in config.vrrp_scripts.iter().enumerate() {
                if used.contains(&i) {
                    self.trackers.push(script::spawn_tracker(i, s, scripts[i], script_tx.clone()));
                }
            }
            self.script_rx = script_rx;
            self.tracked = used;
        }
        self.scripts = scripts;
        self.script_defs = config.vrrp_scripts.clone();
        self.sync_notify = config.vrrp_sync_groups.iter().map(|g| g.notify.clone()).collect();
        self.sync_names = config.vrrp_sync_groups.iter().map(|g| g.name.clone()).collect();
        let wanted: HashSet<u32> = self.routers.iter().flat_map(|r| r.links.iter().map(|l| l.0)).collect();
        if wanted != self.links.keys().copied().collect() {
            let (links, link_rx) = self.nl.watch_links(&wanted.into_iter().collect::<Vec<_>>()).await?;
            self.links = links;
            self.link_rx = link_rx;
        }
        Ok(())
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>, mut reloads: mpsc::Receiver<Reload>) {
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
                Some(Reload { prepared, done }) = reloads.recv() => {
                    self.reload(prepared).await;
                    let _ = done.send(());
                }
            }
            self.apply_sync().await;
            self.publish();
        }
        self.stopping = true;
        for i in 0..self.routers.len() {
            self.stop_router(i, Some(Duration::from_secs(10))).await;
        }
        self.publish();
    }

    /// RFC 5798 §6.4.3 Shutdown of one router: a master sends priority 0 and gives its VIPs
    /// up; notify_stop runs, waited for (bounded) when `wait` (the agent exits right after
    /// and would take it along), else in the background.
    async fn stop_router(&mut self, i: usize, wait: Option<Duration>) {
        let actions = self.routers[i].machine.handle(Input::Shutdown, Instant::now());
        self.execute(i, actions).await;
        let Some(stop) = self.routers[i].spec.notify.stop.clone() else { return };
        match wait {
            Some(limit) => {
                if !script::run(&script::split_words(&stop), Some(limit)).await {
                    warn!(instance = %self.routers[i].spec.name, script = %stop, "notify_stop failed");
                }
            }
            None => script::notify(&stop, &[]),
        }
    }

    /// Applies a reload as keepalived's does: removed instances stop first (a master's
    /// priority-0 advert lets a backup take over after Skew_Time), the others go on in their
    /// state with the new settings (a master's VIP changes at once, the data plane with them),
    /// new ones start as at start-up; scripts, sync groups and tracked interfaces follow.
    async fn reload(&mut self, p: Prepared) {
        let Prepared { config, specs, resolved } = p;
        // Diffed against what runs here (the handle's view differs if an instance could not
        // start).
        let diff = instance::diff(&self.routers.iter().map(|r| r.spec.clone()).collect::<Vec<_>>(), &specs);
        self.pending.clear();
        for &o in &diff.removed {
            info!(instance = %self.routers[o].spec.name, "VRRP instance removed by the reload; stopping it");
            self.stop_router(o, None).await;
        }
        let mut old: Vec<Option<(Router, Counters)>> =
            std::mem::take(&mut self.routers).into_iter().zip(std::mem::take(&mut self.counters)).map(Some).collect();
        let mut next: Vec<Option<(Router, _)>> = (0..specs.len()).map(|_| None).collect();
        for &(o, n) in diff.unchanged.iter().chain(&diff.changed) {
            next[n] = old[o].take();
        }
        drop(old);
        // Sockets no remaining instance uses close (their reader tasks end).
        let used: HashSet<(u32, bool)> = next.iter().flatten().map(|(r, _)| (r.ifindex, r.spec.ipv6)).collect();
        self.sockets.retain(|key, (_, reader)| {
            let keep = used.contains(key);
            if !keep {
                reader.abort();
            }
            keep
        });
        let mut started = Vec::new();
        for &n in &diff.added {
            match self.router(specs[n].clone(), resolved[n].clone()) {
                Ok(r) => {
                    next[n] = Some((r, (0, 0, BTreeMap::new())));
                    started.push(n);
                }
                Err(e) => error!("{e}; the instance is not started"),
            }
        }
        // The new list in the config's order; instances that could not start are left out.
        let mut index_of = HashMap::new();
        for (n, slot) in next.into_iter().enumerate() {
            let Some((router, counters)) = slot else { continue };
            index_of.insert(n, self.routers.len());
            self.routers.push(router);
            self.counters.push(counters);
        }
        for &(_, n) in &diff.unchanged {
            // Same settings; the new place in the file for messages.
            self.routers[index_of[&n]].spec = specs[n].clone();
        }
        let started: Vec<usize> = started.iter().map(|n| index_of[n]).collect();
        let now = Instant::now();
        for &(_, n) in &diff.changed {
            let i = index_of[&n];
            let r = &mut self.routers[i];
            let held_before: Vec<(IpAddr, u8)> = r.spec.held().copied().collect();
            r.spec = specs[n].clone();
            r.src = resolved[n].src.unwrap_or(r.src);
            r.mac = resolved[n].mac;
            r.links = resolved[n].links.clone();
            let params = r.spec.params(r.src);
            r.machine.reconfigure(params, now);
            info!(instance = %r.spec.name, state = r.machine.state().as_str(), "VRRP instance takes the reloaded settings");
            self.change_vips(i, &held_before).await;
        }
        if let Err(e) = self.wire(&config).await {
            error!("applying the reloaded vrrp_script / tracked interfaces: {e}");
        }
        for &i in &started {
            self.remove_vips(i).await;
        }
        // Priorities in force again from the new weights; a changed tracking may fault.
        self.apply_tracking(Instant::now()).await;
        for i in started {
            let actions = self.routers[i].machine.handle(Input::Startup, Instant::now());
            self.execute(i, actions).await;
        }
    }

    /// A master whose VIPs a reload changed: the data plane first (as at a state change),
    /// then the addresses, then gratuitous ARPs for the new ones (RFC 5798 §6.4.2's, for
    /// them only: the others' neighbours already point here).
    async fn change_vips(&mut self, i: usize, before: &[(IpAddr, u8)]) {
        let r = &self.routers[i];
        if r.machine.state() != State::Master {
            return;
        }
        let now: Vec<(IpAddr, u8)> = r.spec.held().copied().collect();
        let dropped: Vec<(IpAddr, u8)> = before.iter().filter(|v| !now.contains(v)).copied().collect();
        let added: Vec<(IpAddr, u8)> = now.iter().filter(|v| !before.contains(v)).copied().collect();
        if dropped.is_empty() && added.is_empty() {
            return;
        }
        self.tell_daemon(None).await;
        let r = &self.routers[i];
        for (addr, len) in &dropped {
            if let Err(e) = self.nl.del_address(r.ifindex, *addr, *len).await {
                warn!(instance = %r.spec.name, "{e}");
            }
        }
        for (addr, len) in &added {
            if let Err(e) = self.nl.add_vip(r.ifindex, *addr, *len).await {
                warn!(instance = %r.spec.name, "{e}");
            }
        }
        let addrs: Vec<IpAddr> = added.iter().map(|v| v.0).collect();
        self.garp(i, &addrs, r.spec.garp_repeat);
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
                    let all: Vec<IpAddr> = self.routers[i].spec.held().map(|v| v.0).collect();
                    self.garp(i, &all, count);
                }
                Action::Transition { from, to } => self.on_transition(i, from, to),
            }
        }
    }

    /// `count` gratuitous ARPs (IPv4) / unsolicited neighbour advertisements (IPv6) per address.
    fn garp(&self, i: usize, addrs: &[IpAddr], count: u32) {
        let r = &self.routers[i];
        let v4: Vec<_> = addrs.iter().filter_map(|a| if let IpAddr::V4(a) = a { Some(*a) } else { None }).collect();
        let v6: Vec<_> = addrs.iter().filter_map(|a| if let IpAddr::V6(a) = a { Some(*a) } else { None }).collect();
        if let Err(e) = garp::send_arps(r.ifindex, r.mac, &v4, count) {
            warn!(instance = %r.spec.name, interface = %r.spec.interface, %e, "sending gratuitous ARP");
        }
        if let Err(e) = garp::send_nas(r.ifindex, r.mac, &v6, count) {
            warn!(instance = %r.spec.name, interface = %r.spec.interface, %e, "sending neighbour advertisements");
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
        notify_scripts(&r.spec.notify, to, "INSTANCE", &r.spec.name, r.machine.priority());
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
            notify_scripts(&self.sync_notify[g], to, "GROUP", &self.sync_names[g], 0);
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

/// keepalived's notify scripts for a move to `to`: the state's own (notify_master, _backup,
/// _fault), then the generic `notify` with TYPE NAME STATE PRIORITY appended.
fn notify_scripts(n: &crate::config::Notify, to: State, kind: &str, name: &str, priority: u8) {
    let specific = match to {
        State::Master => n.master.as_ref(),
        State::Backup => n.backup.as_ref(),
        State::Fault => n.fault.as_ref(),
        State::Initialize => None,
    };
    if let Some(s) = specific {
        script::notify(s, &[]);
    }
    if let (Some(s), State::Master | State::Backup | State::Fault) = (&n.any, to) {
        script::notify(s, &[kind, name, to.as_str(), &priority.to_string()]);
    }
}

fn spawn_reader(
    socket: Arc<VrrpSocket>,
    (ifindex, ipv6): (u32, bool),
    tx: mpsc::Sender<Packet>,
) -> tokio::task::AbortHandle {
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
    })
    .abort_handle()
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

    /// A reload's new VRRP VIPs are not forwarded until the runtime says master for them; a
    /// VIP no longer held by VRRP is forwarded as any.
    #[test]
    fn coupling_follows_a_reload() {
        let vs = |vip: &str| {
            format!(
                "virtual_server {vip} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.11 80 {{\n }}\n}}\n"
            )
        };
        let inst = |vips: &str| {
            format!("vrrp_instance A {{\n virtual_router_id 51\n virtual_ipaddress {{\n {vips}\n }}\n}}\n")
        };
        let parse = |t: &str| crate::config::parse_str(t, std::path::Path::new("k.conf")).unwrap().config;
        let before = parse(&format!("{}{}{}", inst("10.0.0.100"), vs("10.0.0.100"), vs("10.0.0.101")));
        let after = parse(&format!("{}{}{}", inst("10.0.0.101"), vs("10.0.0.100"), vs("10.0.0.101")));
        let (plan, _) = desired::plan(&after).unwrap();
        let ips = |p: &Plan| p.services.iter().map(|s| s.key.ip().to_string()).collect::<Vec<_>>();
        let mut c = Coupling::new(&before);
        c.set_masters(["10.0.0.100".parse().unwrap()].into());
        assert_eq!(ips(&c.plan(&plan)), ["10.0.0.100", "10.0.0.101"], ".101 is no VRRP VIP yet");
        c.reload(&after);
        assert_eq!(ips(&c.plan(&plan)), ["10.0.0.100"], ".101 waits for the runtime");
        c.set_masters(["10.0.0.101".parse().unwrap()].into());
        assert_eq!(ips(&c.plan(&plan)), ["10.0.0.100", "10.0.0.101"]);
    }

    #[test]
    fn a_reload_keeps_the_state_of_a_same_script() {
        let parse = |t: &str| crate::config::parse_str(t, std::path::Path::new("k.conf")).unwrap().config.vrrp_scripts;
        let old = parse("vrrp_script a {\n script \"/bin/a\"\n}\nvrrp_script b {\n script \"/bin/b\"\n}\n");
        // a: same, failed now, keeps failed; b: other command, starts over (OK); c: new, init_fail.
        let new = parse(
            "vrrp_script c {\n script \"/bin/c\"\n init_fail\n}\nvrrp_script b {\n script \"/bin/b2\"\n}\n\
             vrrp_script a {\n script \"/bin/a\"\n interval 5\n}\n",
        );
        assert_eq!(carried_script_states(&old, &[false, false], &new), [false, true, false]);
    }

    /// The daemon waits for a reload's answer while serving the runtime's forwarding changes,
    /// which the runtime waits for before it answers (no deadlock, each change applied once).
    #[tokio::test]
    async fn until_applied_serves_forwarding_changes_meanwhile() {
        let (tx, mut rx) = mpsc::channel(4);
        let (done, answer) = oneshot::channel();
        let runtime = tokio::spawn(async move {
            for vip in ["10.0.0.100", "10.0.0.101"] {
                let (applied, ok) = oneshot::channel();
                tx.send(Forwarding { masters: [vip.parse().unwrap()].into(), applied }).await.unwrap();
                ok.await.expect("applied");
            }
            done.send(()).unwrap();
        });
        let mut seen = Vec::new();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            until_applied(answer, &mut rx, |f| {
                seen.extend(f.masters.iter().copied());
                let _ = f.applied.send(());
            }),
        )
        .await;
        assert!(waited.is_ok(), "no answer");
        runtime.await.unwrap();
        let want: Vec<IpAddr> = vec!["10.0.0.100".parse().unwrap(), "10.0.0.101".parse().unwrap()];
        assert_eq!(seen, want);
    }
}
