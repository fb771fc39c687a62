//! `lvs-agent run`: the event loop that joins config, neighbour table and data plane.
//!
//! Start-up does everything that can fail before the program is attached (config, interface,
//! program load, first map contents), so a bad config or a missing interface never leaves a
//! half-configured director. Then one loop reacts to signals and neighbour changes.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

use lvs_common::sched_ext::tcp_state::Timeouts;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};

use crate::{
    check::Checks,
    config::{self, ConfigErrors},
    control::{AgentState, Control, StateRequest},
    dataplane::{self, AttachMode, Dataplane, DataplaneError, LoadOptions},
    desired::{self, Plan},
    netlink::{NeighbourUpdate, Neighbours, Netlink, NetlinkError},
    reconcile::{ReconcileError, Reconciler},
    socket, stats,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub interface: String,
    pub mode: AttachMode,
    pub flows: u32,
    /// How long start-up waits for the real servers' MACs before attaching anyway (servers
    /// still unresolved join the rings when their MAC arrives).
    pub resolve_wait: Duration,
    /// Idle timeouts of flows (`ipvsadm --set tcp tcpfin udp`); None: the config's
    /// global_defs `lvs_timeouts`, else IPVS's defaults.
    pub timeouts: Option<Timeouts>,
    /// How often idle flows are swept from the flow table.
    pub sweep: Duration,
    /// How often the kernel IPVS table (NAT/TUN services) is checked for drift.
    pub ipvs_check: Duration,
    /// Where Prometheus `/metrics` is served (`None`: not served).
    pub metrics: Option<std::net::SocketAddr>,
    /// Whether the data plane outlives the agent (see `dataplane::pin`).
    pub pin: Pinning,
}

/// Where the data plane is pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Under `/sys/fs/bpf/lvs-xdp` when /sys/fs/bpf is a bpffs; otherwise not, with a warning.
    Auto,
    /// Under this base directory, which must be on a bpffs.
    Under(PathBuf),
    /// Not at all: the program goes when the agent does.
    Off,
}

impl Pinning {
    /// The interface's pin directory, if any.
    fn dir(&self, interface: &str) -> Option<PathBuf> {
        let base = match self {
            Self::Off => return None,
            Self::Under(base) => base.clone(),
            Self::Auto if dataplane::pin::on_bpffs(std::path::Path::new("/sys/fs/bpf")) => {
                PathBuf::from(dataplane::pin::DEFAULT_BASE)
            }
            Self::Auto => {
                warn!(
                    "/sys/fs/bpf is not a BPF filesystem: the data plane is not pinned, so it stops with the agent and a restart is not hitless (mount bpffs, or pass --pin-dir)"
                );
                return None;
            }
        };
        Some(dataplane::pin::dir_for(&base, interface))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// The `/metrics` address could not be bound.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The `list`/`status` socket could not be created (or another agent answers on it).
    #[error("{0}")]
    Socket(#[source] socket::SocketError),
    #[error(transparent)]
    Vrrp(#[from] crate::vrrp::VrrpError),
}

pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    // Views of the running state (see `crate::control`) hold clones of `control`.
    let (control, requests) = Control::new();
    // Bound before anything is loaded or attached: an address that cannot be had stops
    // start-up. Scrapes wait for the event loop, which answers once it runs.
    if let Some(addr) = opts.metrics {
        let listener = crate::metrics::bind(addr).await?;
        // debug, not info: a start-up that fails later must print only its one sentence.
        debug!(%addr, "serving Prometheus /metrics");
        let view = control.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, view).await {
                error!("{e}; /metrics no longer answers");
            }
        });
    }
    let result = run_with(opts, requests, &control).await;
    drop(control);
    result
}

/// `run`, answering the state requests that arrive on `requests`.
async fn run_with(
    opts: RunOptions,
    mut requests: tokio::sync::mpsc::Receiver<StateRequest>,
    control: &Control,
) -> Result<(), RunError> {
    let started = std::time::SystemTime::now();
    let loaded = config::load(&opts.config)?;
    for w in loaded.warnings.iter().chain(&loaded.config.inactive_features()) {
        warn!("{w}");
    }
    let (mut plan, warnings) = desired::plan(&loaded.config)?;
    let timeouts = timeouts_of(opts.timeouts, &loaded.config);
    let vrrp_config = crate::vrrp::config_part(&loaded.config);
    let mut checks = Checks::start(&loaded.config, &plan);
    drop(loaded);
    release_parse_memory();
    for w in &warnings {
        warn!("{w}");
    }
    let nl = Netlink::connect().await?;
    let link = nl.link_by_name(&opts.interface).await?;
    let mut dp = Dataplane::load(LoadOptions { flows: opts.flows, pin: opts.pin.dir(&opts.interface) })?;
    // The `lvs-agent list`/`status` socket: after the load (which says plainly when root is
    // missing), before anything is attached; `_socket` removes the file when `run` returns.
    let (listener, _socket) = socket::bind(&opts.interface).map_err(RunError::Socket)?;
    let views = control.clone();
    tokio::spawn(async move {
        if let Err(e) = socket::serve(listener, views).await {
            error!("{e}; `lvs-agent list` and `status` no longer answer");
        }
    });
    dp.maps().set_timeouts(timeouts)?;
    dp.maps().set_clock(coarse_secs())?;

    let (mut neighbours, mut updates) = Neighbours::start(&nl, link.index).await?;
    let mut macs: HashMap<IpAddr, [u8; 6]> = HashMap::new();
    let addrs = plan.real_server_addrs();
    for (addr, mac) in addrs.iter().zip(neighbours.track_many(&addrs).await?) {
        if let Some(mac) = mac {
            macs.insert(*addr, mac);
        }
    }
    wait_for_macs(&plan, &mut macs, &mut updates, opts.resolve_wait).await;

    // VRRP: services of a VRRP VIP are forwarded only while master for it (none at start).
    let mut coupling = crate::vrrp::Coupling::new(&vrrp_config);
    // An earlier agent's maps (a restart, a crash): take over what they hold, so the plan
    // below changes only what differs and established flows keep their real servers.
    let mut rec = if dp.adopting() {
        let (rec, found) = Reconciler::adopt(link.mac, dp.maps())?;
        info!(
            services = found.services,
            real_servers = found.dests,
            orphans = found.orphans,
            pins = %dp.pin_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "adopted the pinned data plane"
        );
        rec
    } else {
        Reconciler::new(link.mac)
    };
    // This program's own VIP pre-filter starts empty: fill it before it goes live.
    rec.write_filter(dp.maps())?;
    rec.apply(&forwarded(&plan, &checks, &coupling), &|a| macs.get(&a).copied(), dp.maps())?;
    // NAT/TUN services: kernel IPVS, independent of XDP (a host without it logs one error
    // naming them, and DR services go on).
    let mut ipvs = crate::ipvs::Driver::default();
    ipvs.set_timeouts(timeouts.tcp, timeouts.tcpfin, timeouts.udp);
    ipvs.sync(&ipvs_plan(&checks, &coupling.plan(&plan)));
    // Before attaching: a VRRP set-up that fails (an interface, a socket) stops start-up with
    // nothing attached. Its first changes wait in the channel for the loop below.
    // It runs without instances too: a reload may add some.
    let (mut vrrp, mut vrrp_changes) = crate::vrrp::Vrrp::start(&vrrp_config, &opts.interface, &nl).await?;
    drop(vrrp_config);
    let xdp_mode = match dp.attach(&opts.interface, opts.mode) {
        Ok(attached) => attached.mode(),
        Err(e) => {
            vrrp.shutdown().await;
            return Err(e.into());
        }
    };
    let (mut reloads, mut reload_failures) = (0u64, 0u64);
    info!(
        services = plan.services.len(),
        real_servers = plan.real_server_addrs().len(),
        ipvs_services = plan.ipvs.len(),
        iface = %opts.interface,
        "forwarding"
    );

    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(RunError::Signal)?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(RunError::Signal)?;
    let mut estimator = stats::Estimator::default();
    let mut tick = tokio::time::interval(stats::Estimator::INTERVAL);
    let mut last_tick = tokio::time::Instant::now();
    // The flow tables are swept a part per tick, the whole of them every `opts.sweep`: this
    // loop is single-threaded and also runs VRRP, whose Master_Down_Interval can be 361 ms; one
    // pass over a million-flow table at once would hold it for hundreds of milliseconds.
    let mut sweep = tokio::time::interval((opts.sweep / SWEEP_PARTS).max(Duration::from_millis(1)));
    let mut sweep_part = 0;
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let mut ipvs_check = tokio::time::interval(opts.ipvs_check);
    ipvs_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = clock.tick() => {
                if let Err(e) = dp.maps().set_clock(coarse_secs()) {
                    warn!(%e, "publishing the clock to the data plane");
                }
            }
            _ = sweep.tick() => {
                let part = dp.maps().expire_flows_part(coarse_secs(), sweep_part, SWEEP_PARTS, &|slot| rec.generation(slot));
                sweep_part = (sweep_part + 1) % SWEEP_PARTS;
                match part {
                    Ok(0) => {}
                    Ok(n) => debug!(flows = n, "expired idle flows"),
                    Err(e) => warn!(%e, "sweeping idle flows"),
                }
            }
            now = tick.tick() => {
                match stats::snapshot(&rec, dp.maps_ref()) {
                    Ok(s) => estimator.sample(&s, now.duration_since(last_tick)),
                    Err(e) => warn!(%e, "reading counters"),
                }
                last_tick = now;
            }
            _ = ipvs_check.tick() => ipvs.sync(&ipvs_plan(&checks, &coupling.plan(&plan))),
            Some(report) = checks.next() => {
                if checks.handle(report) {
                    // Only services this director forwards (VRRP) take the decision now; the
                    // others get it with the state change that makes them forwarded.
                    crate::check::apply(&mut checks, &coupling.plan(&plan), &mut rec, &macs, dp.maps());
                    ipvs.sync(&ipvs_plan(&checks, &coupling.plan(&plan)));
                }
            }
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            change = crate::vrrp::next_forwarding(&mut vrrp_changes) => {
                on_vrrp_change(change, &mut coupling, &plan, &checks, &mut rec, &macs, &mut dp, &mut ipvs);
            }
            _ = sighup.recv() => {
                match reload(&opts.config, &plan, &mut coupling, &vrrp, &mut rec, &mut neighbours, &mut macs, &mut dp, opts.timeouts, &mut ipvs, &mut checks).await {
                    Ok((new_plan, vrrp_part)) => {
                        // VRRP applies its part now; its address changes reach the data plane
                        // as a state change's do.
                        let answer = vrrp.apply(vrrp_part).await;
                        crate::vrrp::until_applied(answer, &mut vrrp_changes, |change| {
                            on_vrrp_change(change, &mut coupling, &new_plan, &checks, &mut rec, &macs, &mut dp, &mut ipvs);
                        })
                        .await;
                        reloads += 1;
                        info!(
                            services = new_plan.services.len(),
                            real_servers = new_plan.real_server_addrs().len(),
                            ipvs_services = new_plan.ipvs.len(),
                            "reloaded {}",
                            opts.config.display()
                        );
                        plan = new_plan;
                        ipvs.sync(&ipvs_plan(&checks, &coupling.plan(&plan)));
                    }
                    Err(e) => {
                        reload_failures += 1;
                        error!("reload rejected, the running configuration stays in force:\n{e}");
                    }
                }
            }
            _ = sigusr1.recv() => print_stats(&rec, &dp, &estimator, &mut ipvs),
            Some(req) = requests.recv() => {
                let mut services = match stats::snapshot(&rec, dp.maps_ref()) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(%e, "reading counters for a view");
                        continue;
                    }
                };
                // Kernel IPVS services beside the XDP ones, read from the kernel now.
                let (kernel, mut rates) = stats::from_ipvs(&ipvs.dump());
                services.extend(kernel);
                rates.extend(estimator.all());
                let global = dp.maps_ref().global_stats().unwrap_or_default();
                let _ = req.reply.send(AgentState {
                    interface: opts.interface.clone(),
                    xdp_mode,
                    config: opts.config.clone(),
                    started,
                    services,
                    rates,
                    connections: req.connections.then(|| connections(&rec, &dp)),
                    unresolved: plan.real_server_addrs().into_iter().filter(|a| !macs.contains_key(a)).collect(),
                    reloads,
                    reload_failures,
                    health: checks.health(),
                    orphan_fragments: global.orphan_fragments,
                    icmp_forwarded: global.icmp_forwarded,
                    vrrp: vrrp.status(),
                });
            }
            _ = sigusr2.recv() => print_connections(&rec, &dp),
            update = updates.recv() => {
                let Some(NeighbourUpdate { addr, mac }) = update else { continue };
                match mac {
                    Some(mac) => {
                        if macs.insert(addr, mac) != Some(mac) {
                            info!(%addr, mac = %fmt_mac(mac), "real server MAC");
                        }
                        if let Err(e) = rec.set_mac(addr, Some(mac), &forwarded(&plan, &checks, &coupling), dp.maps()) {
                            break Err(e.into());
                        }
                    }
                    None => warn!(%addr, "real server no longer answers ARP; keeping its last MAC"),
                }
            }
        }
    };
    // RFC 5798 §6.4.3 Shutdown: priority 0 adverts, VIPs removed, notify_stop.
    vrrp.shutdown().await;
    print_stats(&rec, &dp, &estimator, &mut ipvs);
    checks.stop().await;
    dp.stop();
    if let Err(e) = neighbours.shutdown().await {
        warn!(%e, "removing the neighbour entries we created");
    }
    result
}

/// What the data plane is given: the configured plan with health decisions applied (weights,
/// removals, sorry servers), less the services of VRRP VIPs this director is not master for.
fn forwarded(plan: &Plan, checks: &Checks, coupling: &crate::vrrp::Coupling) -> Plan {
    checks.effective(&coupling.plan(plan))
}

/// A VRRP forwarding change: the maps follow, then the runtime is told.
#[expect(clippy::too_many_arguments, reason = "the loop's state, lent for the change")]
fn on_vrrp_change(
    change: crate::vrrp::Forwarding,
    coupling: &mut crate::vrrp::Coupling,
    plan: &Plan,
    checks: &Checks,
    rec: &mut Reconciler,
    macs: &HashMap<IpAddr, [u8; 6]>,
    dp: &mut Dataplane,
    ipvs: &mut crate::ipvs::Driver,
) {
    coupling.set_masters(change.masters);
    if let Err(e) = rec.apply(&forwarded(plan, checks, coupling), &|a| macs.get(&a).copied(), dp.maps()) {
        error!("applying a VRRP state change to the data plane: {e}");
    }
    ipvs.sync(&ipvs_plan(checks, &coupling.plan(plan)));
    let _ = change.applied.send(());
}

/// SIGHUP: re-reads the config and applies the difference. A config that does not parse or
/// plan, or whose VRRP part does not validate, is rejected before anything changes; the VRRP
/// part is returned for the runtime to apply; real servers that stay keep their slots, so their
/// flows keep going; new real servers are resolved (they join the rings when their MAC is
/// known) and the neighbour entries of those that left are given back.
#[expect(clippy::too_many_arguments, reason = "the loop's state, lent for the reload")]
async fn reload(
    path: &std::path::Path,
    old: &Plan,
    coupling: &mut crate::vrrp::Coupling,
    vrrp: &crate::vrrp::Vrrp,
    rec: &mut Reconciler,
    neighbours: &mut Neighbours,
    macs: &mut HashMap<IpAddr, [u8; 6]>,
    dp: &mut Dataplane,
    cli_timeouts: Option<Timeouts>,
    ipvs: &mut crate::ipvs::Driver,
    checks: &mut Checks,
) -> Result<(Plan, crate::vrrp::Prepared), RunError> {
    let loaded = config::load(path)?;
    let (plan, warnings) = desired::plan(&loaded.config)?;
    let vrrp_part = vrrp.prepare(&loaded.config).await?;
    for w in loaded.warnings.iter().chain(&warnings).chain(&loaded.config.inactive_features()) {
        warn!("{w}");
    }
    let timeouts = timeouts_of(cli_timeouts, &loaded.config);
    let (before, after) = (old.real_server_addrs(), plan.real_server_addrs());
    let (was, now): (std::collections::HashSet<_>, std::collections::HashSet<_>) =
        (before.iter().copied().collect(), after.iter().copied().collect());
    let added: Vec<IpAddr> = after.iter().filter(|a| !was.contains(a)).copied().collect();
    for (addr, mac) in added.iter().zip(neighbours.track_many(&added).await?) {
        if let Some(mac) = mac {
            macs.insert(*addr, mac);
        }
    }
    // Only once the reload can no longer be rejected: a rejected one keeps the running checkers
    // and VRRP coupling (new VRRP VIPs wait for the runtime's word that we are master for
    // them), and the kernel IPVS settings.
    checks.reload(&loaded.config, &plan);
    coupling.reload(&loaded.config);
    ipvs.set_timeouts(timeouts.tcp, timeouts.tcpfin, timeouts.udp);
    ipvs.reconfigured();
    drop(loaded);
    release_parse_memory();
    // Past this point the new configuration is being applied: a failure here (a map write, the
    // ring space) has changed some services already, so it is reported, not "rejected".
    if let Err(e) = dp.maps().set_timeouts(timeouts) {
        error!("setting the reloaded lvs_timeouts: {e}");
    }
    if let Err(e) = rec.apply(&forwarded(&plan, checks, coupling), &|a| macs.get(&a).copied(), dp.maps()) {
        error!(
            "applying the reloaded configuration stopped partway ({e}); services not reached keep their previous settings"
        );
    }
    for addr in before.iter().filter(|a| !now.contains(a)) {
        macs.remove(addr);
        if let Err(e) = neighbours.untrack(*addr).await {
            warn!(%addr, %e, "giving back the neighbour entry of a removed real server");
        }
    }
    // The plans built for the apply were as large as the config's services: give that back too.
    release_parse_memory();
    Ok((plan, vrrp_part))
}

/// The kernel IPVS services with health applied (the XDP part of the plan is not copied: this
/// runs at every drift check). VRRP's mastership filter goes through `Plan::retain_vips`, which
/// covers both parts.
fn ipvs_plan(checks: &Checks, plan: &Plan) -> Vec<crate::ipvs::Table> {
    plan.ipvs.iter().map(|t| checks.effective_ipvs(t)).collect()
}

/// Gives the heap that parsing a large config used back to the system: glibc keeps freed
/// memory for reuse, and a director would otherwise carry the parse's peak (hundreds of MiB
/// for 10,000 services) for its whole life.
fn release_parse_memory() {
    // SAFETY: no arguments to check; glibc's malloc_trim is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

/// The timeouts in force: the command line's, else global_defs `lvs_timeouts` (each of its
/// three optional), else IPVS's defaults.
fn timeouts_of(cli: Option<Timeouts>, config: &config::Config) -> Timeouts {
    if let Some(t) = cli {
        return t;
    }
    let d = Timeouts::DEFAULT;
    config.global_defs.lvs_timeouts.as_ref().map_or(d, |t| Timeouts {
        tcp: t.tcp.unwrap_or(d.tcp),
        tcpfin: t.tcp_fin.unwrap_or(d.tcpfin),
        udp: t.udp.unwrap_or(d.udp),
    })
}

/// Waits, at most `limit`, until every real server's MAC is known.
async fn wait_for_macs(
    plan: &Plan,
    macs: &mut HashMap<IpAddr, [u8; 6]>,
    updates: &mut tokio::sync::mpsc::Receiver<NeighbourUpdate>,
    limit: Duration,
) {
    let wanted = plan.real_server_addrs();
    let deadline = tokio::time::Instant::now() + limit;
    while wanted.iter().any(|a| !macs.contains_key(a)) {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Ok(Some(NeighbourUpdate { addr: a, mac: Some(mac) })) => {
                macs.insert(a, mac);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    for a in wanted.iter().filter(|a| !macs.contains_key(a)) {
        warn!(addr = %a, "real server MAC not resolved yet; it takes no traffic until it is");
    }
}

/// Prints the services (`ipvsadm -Ln`), the counters (`--stats`) and the rates (`--rate`).
/// Kernel IPVS services follow the XDP ones, with the kernel's counters and rates.
fn print_stats(rec: &Reconciler, dp: &Dataplane, estimator: &stats::Estimator, ipvs: &mut crate::ipvs::Driver) {
    match stats::snapshot(rec, dp.maps_ref()) {
        Ok(mut s) => {
            let (kernel, rates) = stats::from_ipvs(&ipvs.dump());
            s.extend(kernel);
            let rates = stats::Estimator::from_rates(estimator.all().into_iter().chain(rates));
            report(&format!("{}\n{}\n{}", stats::render_list(&s), stats::render(&s), stats::render_rates(&s, &rates)));
        }
        Err(e) => warn!(%e, "reading counters"),
    }
}

/// Writes a report to stdout. A closed or full stdout must not stop a director (println!
/// would panic on a broken pipe): the report is then lost, with a warning.
fn report(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        warn!(%e, "writing the report to stdout");
    }
}

/// The flow table as connections (`ipvsadm -Lnc`'s rows).
fn connections(rec: &Reconciler, dp: &Dataplane) -> Vec<stats::Connection> {
    let maps = dp.maps_ref();
    let Ok(t) = maps.timeouts() else { return Vec::new() };
    let now = coarse_secs();
    let real_server = |slot: u32, generation: u32| {
        rec.services()
            .flat_map(|s| s.dests.iter().chain(&s.sorry))
            .find(|d| d.slot == slot && rec.generation(slot) == Some(generation))
            .map(|d| std::net::SocketAddr::new(d.addr, d.port))
    };
    maps.connections(now)
        .into_iter()
        .map(|(client, virtual_addr, proto, e)| {
            let udp = e.state == lvs_common::maps::FLOW_STATE_UDP;
            let limit = if udp { t.udp } else { lvs_common::sched_ext::tcp_state::timeout(e.state, &t) };
            stats::Connection {
                proto,
                expires_in: limit.saturating_sub(now.wrapping_sub(e.last)),
                state: if udp { "UDP" } else { lvs_common::sched_ext::tcp_state::name(e.state) },
                client,
                virtual_addr,
                real_server: real_server(e.flow.dest, e.flow.generation),
            }
        })
        .collect()
}

/// Prints the flow table (`ipvsadm -Lnc`).
fn print_connections(rec: &Reconciler, dp: &Dataplane) {
    let conns = connections(rec, dp);
    report(&stats::render_connections(&conns));
    info!(connections = conns.len(), "printed the connection table");
}

/// Parts of the flow tables swept per tick (see the sweep in `run`): 8,192 of the default
/// 524,288 buckets of each table.
const SWEEP_PARTS: u32 = 64;

/// Seconds of CLOCK_MONOTONIC_COARSE: the clock published to the program (`Maps::set_clock`)
/// and compared with by the flow sweep.
fn coarse_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

#[must_use]
pub fn fmt_mac(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn timeouts_come_from_the_command_line_then_global_defs_then_ipvs() {
        let conf = |text: &str| config::parse_str(text, Path::new("k.conf")).unwrap().config;
        let with = conf("global_defs {\n  lvs_timeouts tcp 7200 udp 60\n}\n");
        assert_eq!(timeouts_of(None, &with), Timeouts { tcp: 7200, tcpfin: 120, udp: 60 });
        let cli = Timeouts { tcp: 1, tcpfin: 2, udp: 3 };
        assert_eq!(timeouts_of(Some(cli), &with), cli);
        assert_eq!(timeouts_of(None, &conf("")), Timeouts::DEFAULT);
    }
}
