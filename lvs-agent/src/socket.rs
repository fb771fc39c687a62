//! The root-only Unix socket behind `lvs-agent list` and `lvs-agent status`.
//!
//! The agent serves `/run/lvs-agent/<interface>.sock` (directory 0700, socket 0600). An
//! interface name only means something inside its network namespace, so an agent running in a
//! named namespace (`ip netns exec NAME …`) serves `/run/lvs-agent/netns/NAME/<interface>.sock`
//! instead; the client, run in the same namespace, finds it there.
//!
//! Protocol: the client sends one line of JSON ([`Request`], at most [`MAX_REQUEST`] bytes,
//! within [`READ_TIMEOUT`]); the agent answers with the rendered view (text in `ipvsadm`
//! layout, or a JSON document) read from a fresh snapshot of its maps, then closes. An answer
//! that starts with [`ERROR_PREFIX`] is an error, said in one sentence.

use std::{
    fmt::Write as _,
    io,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, warn};

use crate::{
    control::{AgentState, Control},
    desired::{ServiceKey, socket as addr_port},
    stats::{self, Connection, RateKey, Rates, ServiceCounters},
};

/// Where the sockets live (systemd's `RuntimeDirectory=lvs-agent`).
pub const RUN_DIR: &str = "/run/lvs-agent";
/// Longest request line accepted, newline included.
pub const MAX_REQUEST: usize = 4096;
/// How long the agent waits for the request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits for the whole answer (the flow table can be large).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// An answer starting with this is an error.
pub const ERROR_PREFIX: &str = "error: ";

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub view: View,
    /// `--stats`: counters (`ipvsadm -Ln --stats`).
    #[serde(default)]
    pub stats: bool,
    /// `--rate`: rates (`ipvsadm -Ln --rate`).
    #[serde(default)]
    pub rate: bool,
    /// `-c`: the connection (flow) table (`ipvsadm -Lnc`).
    #[serde(default)]
    pub connections: bool,
    /// A JSON document instead of text.
    #[serde(default)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    List,
    Status,
}

impl Request {
    #[must_use]
    pub const fn status(json: bool) -> Self {
        Self { view: View::Status, stats: false, rate: false, connections: false, json }
    }

    /// The request line, newline included.
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a request always serializes");
        line.push('\n');
        line
    }

    /// Parses a request line (trailing newline optional).
    pub fn parse(line: &str) -> Result<Self, SocketError> {
        serde_json::from_str(line.trim_end()).map_err(|e| SocketError::BadRequest(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("no agent is running on {interface} (no socket at {}); start one with `lvs-agent run`", path.display())]
    NoAgent { interface: String, path: PathBuf },
    #[error("no agent is running (no socket in {}); start one with `lvs-agent run`", dir.display())]
    NoAgents { dir: PathBuf },
    #[error("several agents are running ({}); pick one with -i", choices.join(", "))]
    Several { choices: Vec<String> },
    #[error("permission denied: the agent's socket is root-only ({}); run this as root", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("another agent is already running on {interface} (it answers on {}); stop it first", path.display())]
    InUse { interface: String, path: PathBuf },
    #[error("creating the control socket {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("talking to the agent at {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the agent at {} did not answer within {} s", path.display(), ANSWER_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("the agent says: {0}")]
    Agent(String),
    #[error("accepting on the control socket: {0}")]
    Accept(#[source] io::Error),
}

/// The directory of this network namespace's sockets: [`RUN_DIR`], or
/// `RUN_DIR/netns/NAME` inside a namespace named NAME by `ip netns` (see [`namespace_name`]).
#[must_use]
pub fn socket_dir() -> PathBuf {
    let base = PathBuf::from(RUN_DIR);
    match namespace_name() {
        Some(name) => base.join("netns").join(name),
        None => base,
    }
}

/// The name `ip netns` gave the network namespace we run in, found as `ip netns identify`
/// finds it (the entry of /run/netns that is the same namespace as ours); None in the host's
/// namespace (even if someone named it) or in an unnamed one.
#[must_use]
pub fn namespace_name() -> Option<String> {
    let me = std::fs::metadata("/proc/self/ns/net").ok()?;
    let same = |m: &std::fs::Metadata| m.dev() == me.dev() && m.ino() == me.ino();
    if std::fs::metadata("/proc/1/ns/net").is_ok_and(|m| same(&m)) {
        return None;
    }
    std::fs::read_dir("/run/netns").ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_str()?.to_string();
        std::fs::metadata(e.path()).is_ok_and(|m| same(&m)).then_some(name)
    })
}

/// The socket of the agent on `interface`.
#[must_use]
pub fn socket_path(interface: &str) -> PathBuf {
    socket_dir().join(format!("{interface}.sock"))
}

/// The socket to ask: that of `interface`, or the only one there is.
pub fn pick(interface: Option<&str>) -> Result<(String, PathBuf), SocketError> {
    if let Some(i) = interface {
        return Ok((i.to_string(), socket_path(i)));
    }
    let dir = socket_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SocketError::NoAgents { dir }),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(SocketError::PermissionDenied { path: dir });
        }
        Err(source) => return Err(SocketError::Io { path: dir, source }),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".sock").map(str::to_string))
        .collect();
    names.sort();
    match names.len() {
        0 => Err(SocketError::NoAgents { dir }),
        1 => {
            let name = names.remove(0);
            let path = dir.join(format!("{name}.sock"));
            Ok((name, path))
        }
        _ => Err(SocketError::Several { choices: names }),
    }
}

/// Removes the socket file when the agent stops (only if it is still ours).
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketGuard {
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
        // A namespace's directory goes with its last socket (the namespace may go next).
        if let Some(dir) = self.path.parent()
            && dir.parent().and_then(Path::file_name).is_some_and(|n| n == "netns")
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Creates the socket of the agent on `interface` (see [`socket_dir`]): the directory 0700,
/// the socket 0600. A socket file no agent answers on (left by a crash) is replaced; one an
/// agent answers on is an error.
pub fn bind(interface: &str) -> Result<(UnixListener, SocketGuard), SocketError> {
    bind_at(interface, &socket_path(interface))
}

/// [`bind`] at an explicit path.
pub fn bind_at(interface: &str, path: &Path) -> Result<(UnixListener, SocketGuard), SocketError> {
    let create = |source| SocketError::Create { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(create)?;
    // An existing directory keeps its mode through `create`: make it root-only too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse { interface: interface.to_string(), path: path.to_path_buf() }),
            Err(_) => {
                debug!(path = %path.display(), "removing a stale control socket");
                std::fs::remove_file(path).map_err(create)?;
            }
        },
        Ok(_) => {
            return Err(create(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(create(e)),
    }
    let listener = UnixListener::bind(path).map_err(create)?;
    let meta = std::fs::symlink_metadata(path).map_err(create)?;
    let guard = SocketGuard { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(create)?;
    Ok((listener, guard))
}

/// Serves the socket until the task is dropped: each connection gets one answer, read from a
/// fresh `control.state(..)`. Connections are handled concurrently, each bounded in size and
/// time, so a stuck client holds up no one.
pub async fn serve(listener: UnixListener, control: Control) -> Result<(), SocketError> {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of file descriptors and the like: wait, do not spin.
            Err(e) if is_transient(&e) => {
                warn!(%e, "accepting on the control socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(SocketError::Accept(e)),
        };
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &control).await {
                debug!(%e, "control socket client");
            }
        });
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED))
        || e.kind() == io::ErrorKind::Interrupted
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes.
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(r: R) -> Result<Request, SocketError> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(r.take(MAX_REQUEST as u64));
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| SocketError::BadRequest(format!("reading the request: {e}")))?;
    if !line.ends_with(b"\n") && line.len() >= MAX_REQUEST {
        return Err(SocketError::TooLong);
    }
    let text = std::str::from_utf8(&line).map_err(|_| SocketError::BadRequest("not UTF-8".to_string()))?;
    Request::parse(text)
}

async fn answer(mut stream: UnixStream, control: &Control) -> Result<(), SocketError> {
    let io = |source| SocketError::Io { path: PathBuf::from("(client)"), source };
    // The directory and the socket are root-only already; this holds even if their modes
    // were changed by hand.
    let uid = stream.peer_cred().map_err(io)?.uid();
    // SAFETY: geteuid has no preconditions.
    if uid != 0 && uid != unsafe { libc::geteuid() } {
        let _ = stream
            .write_all(format!("{ERROR_PREFIX}permission denied: the agent's socket is root-only\n").as_bytes())
            .await;
        return Ok(());
    }
    let (read, mut write) = stream.split();
    let request = match tokio::time::timeout(READ_TIMEOUT, read_request(read)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = write.write_all(format!("{ERROR_PREFIX}{e}\n").as_bytes()).await;
            return Err(e);
        }
        Err(_) => return Err(SocketError::BadRequest("no request within the read timeout".to_string())),
    };
    let body = match control.state(request.view == View::List && request.connections).await {
        Ok(state) => respond(&request, &state, SystemTime::now()),
        Err(e) => format!("{ERROR_PREFIX}{e} (the agent is stopping, or could not read its maps; see its log)\n"),
    };
    write.write_all(body.as_bytes()).await.map_err(io)?;
    write.shutdown().await.map_err(io)
}

/// Asks the agent at `path` (on `interface`) and returns its answer.
pub async fn request(interface: &str, path: &Path, req: &Request) -> Result<String, SocketError> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                SocketError::NoAgent { interface: interface.to_string(), path: path.to_path_buf() }
            }
            io::ErrorKind::PermissionDenied => SocketError::PermissionDenied { path: path.to_path_buf() },
            _ => SocketError::Io { path: path.to_path_buf(), source },
        })?;
        let io = |source| SocketError::Io { path: path.to_path_buf(), source };
        stream.write_all(req.to_line().as_bytes()).await.map_err(io)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.map_err(io)?;
        Ok(answer)
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| SocketError::Timeout { path: path.to_path_buf() })??;
    match answer.strip_prefix(ERROR_PREFIX) {
        Some(e) if e.starts_with("permission denied") => {
            Err(SocketError::PermissionDenied { path: path.to_path_buf() })
        }
        Some(e) => Err(SocketError::Agent(e.trim_end().to_string())),
        None if answer.is_empty() => Err(SocketError::Agent("an empty answer (see the agent's log)".to_string())),
        None => Ok(answer),
    }
}

/// The answer to `req` from `state` (text, or a JSON document ending in a newline).
#[must_use]
pub fn respond(req: &Request, state: &AgentState, now: SystemTime) -> String {
    let services = &state.services;
    match (req.view, req.json) {
        (View::List, false) if req.connections => {
            stats::render_connections(state.connections.as_deref().unwrap_or_default())
        }
        (View::List, false) if req.stats => stats::render(services),
        (View::List, false) if req.rate => {
            stats::render_rates(services, &stats::Estimator::from_rates(state.rates.iter().copied()))
        }
        (View::List, false) => stats::render_list(services),
        (View::List, true) => json(&ListDoc::new(state, req.connections)),
        (View::Status, false) => render_status(state, now),
        (View::Status, true) => json(&StatusDoc::new(state, now)),
    }
}

fn json<T: Serialize>(doc: &T) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("documents always serialize");
    s.push('\n');
    s
}

fn uptime(state: &AgentState, now: SystemTime) -> Duration {
    now.duration_since(state.started).unwrap_or_default()
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 { format!("{days}d {h:02}h {m:02}m {s:02}s") } else { format!("{h}h {m:02}m {s:02}s") }
}

/// Whether a real server takes traffic: `down: KIND reason` when its health checks failed,
/// `no MAC yet` while its MAC is unknown, else `up`.
fn health(state: &AgentState, service: ServiceKey, addr: IpAddr) -> String {
    if let Some(row) = state.health.iter().find(|r| r.service == service && r.addr == addr)
        && !row.up
    {
        let failed: Vec<String> = row
            .checkers
            .iter()
            .filter(|c| !c.up)
            .map(|c| format!("{} {}", c.kind, c.last_failure.map_or("failed", |f| f.as_str())))
            .collect();
        return format!("down: {}", failed.join(", "));
    }
    if state.unresolved.contains(&addr) { "no MAC yet".to_string() } else { "up".to_string() }
}

/// Real servers of `service` that health checks took out of the plan (not installed, so not in
/// the counters).
fn removed(state: &AgentState, svc: &ServiceCounters) -> Vec<(IpAddr, u16)> {
    state
        .health
        .iter()
        .filter(|r| r.service == svc.key && r.planned_weight.is_none() && !svc.dests.iter().any(|d| d.addr == r.addr))
        .map(|r| (r.addr, svc.key.port()))
        .collect()
}

/// Services grouped by VIP, in the order of their first service.
fn by_vip(services: &[ServiceCounters]) -> Vec<(IpAddr, Vec<&ServiceCounters>)> {
    let mut out: Vec<(IpAddr, Vec<&ServiceCounters>)> = Vec::new();
    for s in services {
        match out.iter_mut().find(|(v, _)| *v == s.key.ip()) {
            Some((_, list)) => list.push(s),
            None => out.push((s.key.ip(), vec![s])),
        }
    }
    out
}

/// The VRRP instance holding `vip` and its state (`VI_1 MASTER`), if one does.
fn vrrp_of(state: &AgentState, vip: IpAddr) -> Option<String> {
    state.vrrp.iter().find(|v| v.vips.contains(&vip)).map(|v| format!("{} {}", v.name, v.state.as_str()))
}

/// `lvs-agent status` as text.
#[must_use]
pub fn render_status(state: &AgentState, now: SystemTime) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Interface:  {} (XDP {})", state.interface, state.xdp_mode);
    let _ = writeln!(s, "Config:     {}", state.config.display());
    let _ = writeln!(s, "Uptime:     {}", fmt_duration(uptime(state, now)));
    let _ = writeln!(s, "Reloads:    {} ok, {} failed", state.reloads, state.reload_failures);
    let _ = writeln!(
        s,
        "Data plane: {} ICMP errors forwarded, {} fragments without a first fragment",
        state.icmp_forwarded, state.orphan_fragments
    );
    if !state.vrrp.is_empty() {
        let _ = writeln!(s, "\nVRRP instances:");
    }
    for v in &state.vrrp {
        let vips = v.vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        let rejected = v.rejected.iter().map(|(why, n)| format!(" {why}={n}")).collect::<String>();
        let _ = writeln!(
            s,
            "  {} {} priority {} VRID {} VRRPv{} on {}  VIPs {vips}\n    transitions {}, adverts sent {}, received {}, rejected {}{rejected}",
            v.name,
            v.state.as_str(),
            v.priority,
            v.vrid,
            v.version,
            v.interface,
            v.transitions,
            v.adverts_sent,
            v.adverts_received,
            v.rejected.values().sum::<u64>(),
        );
    }
    if state.services.is_empty() {
        let _ = writeln!(s, "\nNo virtual services configured.");
    }
    for (vip, services) in by_vip(&state.services) {
        let _ = writeln!(s, "\nVIP {vip}  VRRP {}", vrrp_of(state, vip).unwrap_or_else(|| "-".to_string()));
        for svc in services {
            let flags = svc.persistent.map(|t| format!(" persistent {t}")).unwrap_or_default();
            let by = if svc.forwarder == crate::stats::IPVS { "  (kernel IPVS)" } else { "" };
            let _ = writeln!(s, "  {} {}{flags}{}{by}", svc.key, svc.scheduler, svc.flags);
            let _ = writeln!(s, "    -> RemoteAddress:Port           Weight ActiveConn InActConn State");
            for d in &svc.dests {
                let name = format!("    -> {}", addr_port(d.addr, d.port));
                let _ = writeln!(
                    s,
                    "{name:<35} {:<6} {:<10} {:<9} {}",
                    d.weight,
                    d.conns.active,
                    d.conns.inactive,
                    health(state, svc.key, d.addr)
                );
            }
            for (addr, port) in removed(state, svc) {
                let name = format!("    -> {}", addr_port(addr, port));
                let _ = writeln!(
                    s,
                    "{name:<35} {:<6} {:<10} {:<9} {} (removed)",
                    "-",
                    "-",
                    "-",
                    health(state, svc.key, addr)
                );
            }
        }
    }
    s
}

/// Counters of a service or real server (Out* are 0 with direct routing: replies bypass the
/// director).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsDoc {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl StatsDoc {
    fn new(s: lvs_common::maps::DestStats, out: crate::stats::OutStats) -> Self {
        Self {
            conns: s.conns,
            in_packets: s.packets,
            out_packets: out.packets,
            in_bytes: s.bytes,
            out_bytes: out.bytes,
        }
    }
}

/// Per-second rates (IPVS's estimator).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RateDoc {
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_bps: f64,
    pub out_bps: f64,
}

impl From<Rates> for RateDoc {
    fn from(r: Rates) -> Self {
        Self { cps: r.cps, in_pps: r.in_pps, out_pps: 0.0, in_bps: r.in_bps, out_bps: 0.0 }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RealServerDoc {
    pub address: IpAddr,
    pub port: u16,
    pub forward: String,
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub stats: StatsDoc,
    pub rate: RateDoc,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceDoc {
    pub protocol: String,
    pub address: IpAddr,
    pub port: u16,
    pub scheduler: String,
    /// `persistence_timeout`, if any.
    pub persistent: Option<u32>,
    /// `xdp`, or `ipvs` for services the kernel's IPVS forwards (NAT, TUN).
    pub forwarder: String,
    pub stats: StatsDoc,
    pub rate: RateDoc,
    /// Packets dropped because no real server was usable.
    pub dropped_packets: u64,
    pub real_servers: Vec<RealServerDoc>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionDoc {
    pub protocol: String,
    /// Seconds until it idles out.
    pub expires_in: u32,
    pub state: String,
    pub source: std::net::SocketAddr,
    pub virtual_address: std::net::SocketAddr,
    /// The real server, or null when its slot no longer holds it.
    pub destination: Option<std::net::SocketAddr>,
}

/// `lvs-agent list --json`: services with counters and rates; the connections with `-c`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ListDoc {
    pub services: Vec<ServiceDoc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connections: Option<Vec<ConnectionDoc>>,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        lvs_common::maps::IPPROTO_TCP => "TCP",
        lvs_common::maps::IPPROTO_UDP => "UDP",
        _ => "???",
    }
}

impl ServiceDoc {
    fn new(svc: &ServiceCounters, rates: &[(RateKey, Rates)]) -> Self {
        let rate = |k: RateKey| rates.iter().find(|(r, _)| *r == k).map(|(_, r)| *r).unwrap_or_default().into();
        Self {
            protocol: proto_name(svc.key.proto()).to_string(),
            address: svc.key.ip(),
            port: svc.key.port(),
            scheduler: svc.scheduler.to_string(),
            persistent: svc.persistent,
            forwarder: svc.forwarder.to_string(),
            stats: StatsDoc::new(svc.totals, svc.out),
            rate: rate(RateKey::Service(svc.key)),
            dropped_packets: svc.dropped_packets,
            real_servers: svc
                .dests
                .iter()
                .map(|d| RealServerDoc {
                    address: d.addr,
                    port: d.port,
                    forward: d.forward.to_string(),
                    weight: d.weight,
                    active_conns: d.conns.active,
                    inactive_conns: d.conns.inactive,
                    stats: StatsDoc::new(d.stats, d.out),
                    rate: rate(RateKey::Dest(svc.key, d.addr, d.port)),
                })
                .collect(),
        }
    }
}

impl ListDoc {
    #[must_use]
    pub fn new(state: &AgentState, connections: bool) -> Self {
        Self {
            services: state.services.iter().map(|s| ServiceDoc::new(s, &state.rates)).collect(),
            connections: connections.then(|| state.connections.iter().flatten().map(ConnectionDoc::from).collect()),
        }
    }
}

impl From<&Connection> for ConnectionDoc {
    fn from(c: &Connection) -> Self {
        Self {
            protocol: proto_name(c.proto).to_string(),
            expires_in: c.expires_in,
            state: c.state.to_string(),
            source: c.client,
            virtual_address: c.virtual_addr,
            destination: c.real_server,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusRealServerDoc {
    pub address: IpAddr,
    pub port: u16,
    /// ipvsadm's Forward column (Route, Masq, Tunnel).
    pub forward: String,
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    /// "up", "no MAC yet" (it takes no new flows until its MAC is resolved), or "down: …"
    /// (health checks failed; "(removed)" when it left the plan).
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusServiceDoc {
    pub protocol: String,
    pub port: u16,
    pub scheduler: String,
    pub persistent: Option<u32>,
    /// `xdp` or `ipvs`.
    pub forwarder: String,
    pub real_servers: Vec<StatusRealServerDoc>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipDoc {
    pub vip: IpAddr,
    /// The VRRP instance holding the VIP and its state (`VI_1 MASTER`); null when no
    /// instance holds it.
    pub vrrp_state: Option<String>,
    pub services: Vec<StatusServiceDoc>,
}

/// `lvs-agent status --json`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusDoc {
    pub interface: String,
    pub xdp_mode: String,
    pub config: PathBuf,
    pub uptime_secs: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub icmp_forwarded: u64,
    pub orphan_fragments: u64,
    pub vips: Vec<VipDoc>,
    #[serde(default)]
    pub vrrp: Vec<VrrpDoc>,
}

/// One VRRP instance in `lvs-agent status --json`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VrrpDoc {
    pub name: String,
    pub state: String,
    pub priority: u8,
    pub vrid: u8,
    pub version: u8,
    pub interface: String,
    pub vips: Vec<IpAddr>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub adverts_rejected: std::collections::BTreeMap<String, u64>,
}

impl StatusDoc {
    #[must_use]
    pub fn new(state: &AgentState, now: SystemTime) -> Self {
        Self {
            interface: state.interface.clone(),
            xdp_mode: state.xdp_mode.to_string(),
            config: state.config.clone(),
            uptime_secs: uptime(state, now).as_secs(),
            reloads: state.reloads,
            reload_failures: state.reload_failures,
            icmp_forwarded: state.icmp_forwarded,
            orphan_fragments: state.orphan_fragments,
            vips: by_vip(&state.services)
                .into_iter()
                .map(|(vip, services)| VipDoc {
                    vip,
                    vrrp_state: vrrp_of(state, vip),
                    services: services
                        .into_iter()
                        .map(|s| StatusServiceDoc {
                            protocol: proto_name(s.key.proto()).to_string(),
                            port: s.key.port(),
                            scheduler: s.scheduler.to_string(),
                            persistent: s.persistent,
                            forwarder: s.forwarder.to_string(),
                            real_servers: s
                                .dests
                                .iter()
                                .map(|d| StatusRealServerDoc {
                                    address: d.addr,
                                    port: d.port,
                                    forward: d.forward.to_string(),
                                    weight: d.weight,
                                    active_conns: d.conns.active,
                                    inactive_conns: d.conns.inactive,
                                    state: health(state, s.key, d.addr),
                                })
                                .chain(removed(state, s).into_iter().map(|(addr, port)| StatusRealServerDoc {
                                    address: addr,
                                    port,
                                    forward: "-".to_string(),
                                    weight: 0,
                                    active_conns: 0,
                                    inactive_conns: 0,
                                    state: format!("{} (removed)", health(state, s.key, addr)),
                                }))
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            vrrp: state
                .vrrp
                .iter()
                .map(|v| VrrpDoc {
                    name: v.name.clone(),
                    state: v.state.as_str().to_string(),
                    priority: v.priority,
                    vrid: v.vrid,
                    version: v.version,
                    interface: v.interface.clone(),
                    vips: v.vips.clone(),
                    transitions: v.transitions,
                    adverts_sent: v.adverts_sent,
                    adverts_received: v.adverts_received,
                    adverts_rejected: v.rejected.iter().map(|(k, n)| ((*k).to_string(), *n)).collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use lvs_common::maps::{ConnCounts, DestStats, IPPROTO_TCP};
    use tokio::io::AsyncWriteExt as _;

    use super::*;
    use crate::{check::target::Failure, stats::DestCounters};

    fn state() -> AgentState {
        let key = ServiceKey::new([10, 77, 0, 100].into(), 80, IPPROTO_TCP);
        let dest = |last: u8, conns: u64, active: u32, inactive: u32| DestCounters {
            addr: [10, 77, 0, last].into(),
            port: 80,
            weight: u32::from(last - 10),
            forward: "Route",
            stats: DestStats { packets: conns * 6, bytes: conns * 400, conns },
            out: crate::stats::OutStats::default(),
            conns: ConnCounts { active, inactive },
        };
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        AgentState {
            interface: "eth0".to_string(),
            xdp_mode: "native",
            config: "/etc/keepalived/keepalived.conf".into(),
            started,
            services: vec![ServiceCounters {
                key,
                scheduler: "wrr",
                persistent: None,
                forwarder: crate::stats::XDP,
                flags: String::new(),
                out: crate::stats::OutStats::default(),
                totals: DestStats { packets: 1800, bytes: 120_000, conns: 300 },
                dropped_packets: 0,
                dests: vec![dest(11, 100, 1, 99), dest(12, 200, 0, 200)],
            }],
            rates: vec![(RateKey::Service(key), Rates { cps: 50.0, in_pps: 300.0, in_bps: 160_000.0 })],
            connections: Some(vec![Connection {
                proto: IPPROTO_TCP,
                expires_in: 899,
                state: "ESTABLISHED",
                client: "10.77.0.10:41000".parse().unwrap(),
                virtual_addr: "10.77.0.100:80".parse().unwrap(),
                real_server: Some("10.77.0.11:80".parse().unwrap()),
            }]),
            unresolved: vec![[10, 77, 0, 12].into()],
            reloads: 2,
            reload_failures: 1,
            health: Vec::new(),
            orphan_fragments: 0,
            icmp_forwarded: 3,
            vrrp: Vec::new(),
        }
    }

    fn list() -> Request {
        Request { view: View::List, stats: false, rate: false, connections: false, json: false }
    }

    #[test]
    fn requests_round_trip_and_default_their_flags() {
        let req = Request { stats: true, json: true, ..list() };
        let line = req.to_line();
        assert_eq!(line, "{\"view\":\"list\",\"stats\":true,\"rate\":false,\"connections\":false,\"json\":true}\n");
        assert_eq!(Request::parse(&line).unwrap(), req);
        assert_eq!(Request::parse("{\"view\":\"status\"}").unwrap(), Request::status(false));
        assert!(matches!(Request::parse("{\"view\":\"reboot\"}"), Err(SocketError::BadRequest(_))));
        assert!(matches!(Request::parse("list"), Err(SocketError::BadRequest(_))));
    }

    #[tokio::test]
    async fn reads_are_bounded() {
        let ok = read_request(&b"{\"view\":\"list\",\"connections\":true}\nrest"[..]).await.unwrap();
        assert_eq!(ok, Request { connections: true, ..list() });
        // No newline within MAX_REQUEST bytes: refused without reading the rest.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let long = vec![b' '; MAX_REQUEST * 4];
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&long).await;
            client
        });
        assert!(matches!(read_request(server).await, Err(SocketError::TooLong)));
        drop(writer);
        // A request cut short (no newline, then EOF) is parsed as it is.
        assert_eq!(read_request(&b"{\"view\":\"status\"}"[..]).await.unwrap(), Request::status(false));
        assert!(matches!(read_request(&b"\xff\xfe\n"[..]).await, Err(SocketError::BadRequest(_))));
    }

    #[test]
    fn list_views_are_the_ipvsadm_renderings() {
        let st = state();
        let now = st.started + Duration::from_secs(3723);
        assert_eq!(respond(&list(), &st, now), stats::render_list(&st.services));
        assert_eq!(respond(&Request { stats: true, ..list() }, &st, now), stats::render(&st.services));
        let rates = respond(&Request { rate: true, ..list() }, &st, now);
        assert_eq!(
            rates.lines().nth(2),
            Some("TCP  10.77.0.100:80                     50      300        0   160000        0")
        );
        let conns = respond(&Request { connections: true, ..list() }, &st, now);
        assert_eq!(conns, stats::render_connections(st.connections.as_deref().unwrap()));
    }

    #[test]
    fn list_json_has_the_same_figures() {
        let st = state();
        let text = respond(&Request { json: true, connections: true, ..list() }, &st, SystemTime::now());
        let doc: ListDoc = serde_json::from_str(&text).unwrap();
        let svc = &doc.services[0];
        assert_eq!((svc.protocol.as_str(), svc.address, svc.port), ("TCP", "10.77.0.100".parse().unwrap(), 80));
        assert_eq!(
            svc.stats,
            StatsDoc { conns: 300, in_packets: 1800, out_packets: 0, in_bytes: 120_000, out_bytes: 0 }
        );
        assert_eq!(svc.rate.cps, 50.0);
        let rs: Vec<_> = svc.real_servers.iter().map(|d| (d.port, d.weight, d.stats.conns, d.inactive_conns)).collect();
        assert_eq!(rs, [(80, 1, 100, 99), (80, 2, 200, 200)]);
        let conns = doc.connections.unwrap();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].destination, Some("10.77.0.11:80".parse().unwrap()));
        // Without -c there is no connections member.
        let text = respond(&Request { json: true, ..list() }, &st, SystemTime::now());
        assert!(!text.contains("connections"));
    }

    #[test]
    fn status_shows_the_agent_and_each_vip() {
        let st = state();
        let now = st.started + Duration::from_secs(3723);
        let text = respond(&Request::status(false), &st, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Interface:  eth0 (XDP native)");
        assert_eq!(lines[2], "Uptime:     1h 02m 03s");
        assert_eq!(lines[3], "Reloads:    2 ok, 1 failed");
        assert!(lines.contains(&"VIP 10.77.0.100  VRRP -"), "{text}");
        assert!(lines.contains(&"  TCP  10.77.0.100:80 wrr"), "{text}");
        assert!(lines.contains(&"    -> 10.77.0.11:80                1      1          99        up"), "{text}");
        assert!(
            lines.contains(&"    -> 10.77.0.12:80                2      0          200       no MAC yet"),
            "{text}"
        );
        let doc: StatusDoc = serde_json::from_str(&respond(&Request::status(true), &st, now)).unwrap();
        assert_eq!(doc.uptime_secs, 3723);
        assert_eq!(doc.vips[0].vrrp_state, None);
        assert_eq!(doc.vips[0].services[0].real_servers[1].state, "no MAC yet");
    }

    #[test]
    fn status_shows_vrrp_instances_and_the_state_of_their_vips() {
        let mut st = state();
        st.vrrp = vec![crate::vrrp::InstanceStatus {
            name: "VI_1".into(),
            state: crate::vrrp::state::State::Master,
            priority: 150,
            vrid: 51,
            version: 2,
            interface: "eth0".into(),
            vips: vec!["10.77.0.100".parse().unwrap()],
            transitions: 2,
            adverts_sent: 40,
            adverts_received: 3,
            rejected: [("auth", 2u64)].into(),
        }];
        let now = st.started + Duration::from_secs(5);
        let text = respond(&Request::status(false), &st, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"VIP 10.77.0.100  VRRP VI_1 MASTER"), "{text}");
        assert!(lines.contains(&"  VI_1 MASTER priority 150 VRID 51 VRRPv2 on eth0  VIPs 10.77.0.100"), "{text}");
        assert!(lines.contains(&"    transitions 2, adverts sent 40, received 3, rejected 2 auth=2"), "{text}");
        let doc: StatusDoc = serde_json::from_str(&respond(&Request::status(true), &st, now)).unwrap();
        assert_eq!(doc.vips[0].vrrp_state.as_deref(), Some("VI_1 MASTER"));
        assert_eq!((doc.vrrp[0].state.as_str(), doc.vrrp[0].adverts_rejected["auth"]), ("MASTER", 2));
    }

    #[test]
    fn status_shows_failed_health_checks_and_removed_servers() {
        let mut st = state();
        let key = st.services[0].key;
        let checker = |kind, up, last_failure| crate::check::CheckerHealth {
            kind,
            up,
            last_failure,
            last_duration: Duration::from_millis(1),
            failures: [0; 8],
        };
        let row = |last: u8, planned_weight, checkers| crate::check::HealthRow {
            service: key,
            addr: [10, 77, 0, last].into(),
            port: 80,
            up: false,
            planned_weight,
            checkers,
        };
        st.health = vec![
            // Kept with weight 0 (inhibit_on_failure).
            row(11, Some(0), vec![checker("TCP_CHECK", true, None), checker("HTTP_GET", false, Some(Failure::Digest))]),
            // Taken out of the plan.
            row(13, None, vec![checker("TCP_CHECK", false, Some(Failure::Timeout))]),
        ];
        let text = respond(&Request::status(false), &st, st.started);
        assert!(
            text.contains("-> 10.77.0.11:80                1      1          99        down: HTTP_GET digest\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "-> 10.77.0.13:80                -      -          -         down: TCP_CHECK timeout (removed)"
            ),
            "{text}"
        );
        let doc: StatusDoc = serde_json::from_str(&respond(&Request::status(true), &st, st.started)).unwrap();
        let rows = &doc.vips[0].services[0].real_servers;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].state, "down: TCP_CHECK timeout (removed)");
    }

    fn temp_socket(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lvs-socket-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("sub").join("eth9.sock")
    }

    #[tokio::test]
    async fn serves_one_answer_per_connection_from_a_fresh_snapshot() {
        let path = temp_socket("serve");
        let (listener, guard) = bind_at("eth9", &path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        let (control, mut requests) = Control::new();
        let answered = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(req) = requests.recv().await {
                n += 1;
                let mut st = state();
                st.reloads = n;
                if !req.connections {
                    st.connections = None;
                }
                let _ = req.reply.send(st);
            }
        });
        let server = tokio::spawn(serve(listener, control));
        let status = Request::status(true);
        for want in 1..=2 {
            let doc: StatusDoc = serde_json::from_str(&request("eth9", &path, &status).await.unwrap()).unwrap();
            assert_eq!(doc.reloads, want, "each answer is a new snapshot");
        }
        let conns = request("eth9", &path, &Request { connections: true, ..list() }).await.unwrap();
        assert!(conns.contains("10.77.0.10:41000"), "{conns}");
        // A bad request gets a one-sentence error.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(b"hello\n").await.unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("error: bad request"), "{answer}");
        // A second agent on the same interface is refused while this one answers.
        let err = bind_at("eth9", &path).unwrap_err().to_string();
        assert!(err.starts_with("another agent is already running on eth9"), "{err}");
        server.abort();
        let _ = server.await;
        answered.abort();
        drop(guard);
        assert!(!path.exists(), "the guard removes the socket");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_missing_one_is_explained() {
        let path = temp_socket("stale");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a socket file nobody answers on");
        let err = request("eth9", &path, &list()).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("no agent is running on eth9 (no socket at {}); start one with `lvs-agent run`", path.display())
        );
        let (_listener, guard) = bind_at("eth9", &path).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(guard);
        let err = request("eth9", &path, &list()).await.unwrap_err();
        assert!(matches!(err, SocketError::NoAgent { .. }), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn sentences_say_what_to_do() {
        let e = SocketError::NoAgent { interface: "eth0".into(), path: "/run/lvs-agent/eth0.sock".into() };
        assert_eq!(
            e.to_string(),
            "no agent is running on eth0 (no socket at /run/lvs-agent/eth0.sock); start one with `lvs-agent run`"
        );
        let e = SocketError::PermissionDenied { path: "/run/lvs-agent/eth0.sock".into() };
        assert!(e.to_string().starts_with("permission denied: the agent's socket is root-only"));
        let e = SocketError::Several { choices: vec!["eth0".into(), "eth1".into()] };
        assert_eq!(e.to_string(), "several agents are running (eth0, eth1); pick one with -i");
    }
}
