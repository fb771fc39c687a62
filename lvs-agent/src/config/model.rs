//! The typed config: what keepalived.conf says, per block, with keepalived's defaults. Built
//! by `lower.rs` from the generic tree. Durations are keepalived `<TIMER>`s (seconds with an
//! optional fraction, microsecond resolution).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `virtual_server IP PORT` only (`target` is always [`VsTarget::Addr`]): the services the
    /// data plane programs. fwmark and group virtual servers are in `other_virtual_servers`.
    pub virtual_servers: Vec<VirtualServer>,
    /// `virtual_server fwmark N` and `virtual_server group NAME`, parsed in full; `addr` is
    /// 0.0.0.0 and `port` 0 there, `target` says what they are.
    pub other_virtual_servers: Vec<VirtualServer>,
    pub virtual_server_groups: Vec<VirtualServerGroup>,
    pub global_defs: GlobalDefs,
    pub vrrp_scripts: Vec<VrrpScript>,
    pub vrrp_instances: Vec<VrrpInstance>,
    pub vrrp_sync_groups: Vec<VrrpSyncGroup>,
    /// The top-level `SSL { }` block (client certificate for SSL_GET).
    pub ssl: Option<SslConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0 means "the file as a whole" (e.g. it could not be read).
        match self.line {
            0 => write!(f, "{}", self.file.display()),
            _ => write!(f, "{}:{}:{}", self.file.display(), self.line, self.column),
        }
    }
}

/// What a `virtual_server` line names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VsTarget {
    Addr(IpAddr, u16),
    Fwmark(u32),
    Group(String),
}

impl fmt::Display for VsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(IpAddr::V6(a), p) => write!(f, "[{a}]:{p}"),
            Self::Addr(a, p) => write!(f, "{a}:{p}"),
            Self::Fwmark(m) => write!(f, "fwmark {m}"),
            Self::Group(g) => write!(f, "group {g}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualServer {
    /// The IP form's address and port (0.0.0.0 and 0 for fwmark and group targets).
    pub addr: IpAddr,
    pub port: u16,
    pub target: VsTarget,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub kind: LbKind,
    pub persistence_timeout: Option<u32>,
    pub persistence_granularity: Option<String>,
    pub delay_loop: Option<u32>,
    pub real_servers: Vec<RealServer>,
    pub sorry_server: Option<(IpAddr, u16)>,
    pub sorry_server_inhibit: bool,
    pub sorry_server_lvs_method: Option<LbKind>,
    /// `ha_suspend`: checkers only run while the VS address is configured locally.
    pub ha_suspend: bool,
    /// Default `Host:` for HTTP_GET/SSL_GET checkers.
    pub virtualhost: Option<String>,
    /// `alpha`: real servers start down until their checkers succeed.
    pub alpha: bool,
    /// `omega`: run quorum_down and clear the pool on shutdown.
    pub omega: bool,
    /// Minimum total weight of live real servers (default 1).
    pub quorum: u32,
    /// Default 0.
    pub hysteresis: u32,
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// `ops` / `one_packet_scheduler`.
    pub one_packet_scheduler: bool,
    /// `ip_family inet|inet6` (for fwmark/group targets).
    pub ip_family: Option<IpFamily>,
    /// `persistence_engine NAME` (e.g. sip).
    pub persistence_engine: Option<String>,
    /// Scheduler flags given on the `lvs_sched` line: hashed, flag-1..3, sh-port, sh-fallback,
    /// mh-port, mh-fallback.
    pub scheduler_flags: Vec<String>,
    /// `lvs_method TUN type ipip|gue port N|gre` and `nocsum|csum|remcsum`.
    pub tunnel: Option<Tunnel>,
    /// Checker defaults given at virtual server level (delay_loop mirrors `delay_loop`).
    pub check_defaults: CheckDefaults,
    /// `inhibit_on_failure`: a failed real server gets weight 0 instead of being removed.
    pub inhibit_on_failure: bool,
    pub smtp_alert: Option<bool>,
    pub snmp_name: Option<String>,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    Inet,
    Inet6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// ipip (default), gue or gre.
    pub kind: String,
    /// The GUE port.
    pub port: Option<u16>,
    /// nocsum, csum or remcsum.
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealServer {
    pub addr: IpAddr,
    /// 0 when omitted (allowed for fwmark and group virtual servers).
    pub port: u16,
    pub weight: u32,
    pub inhibit_on_failure: Option<bool>,
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
    pub uthreshold: Option<u32>,
    pub lthreshold: Option<u32>,
    pub lvs_method: Option<LbKind>,
    pub tunnel: Option<Tunnel>,
    pub alpha: Option<bool>,
    pub smtp_alert: Option<bool>,
    pub virtualhost: Option<String>,
    pub check_defaults: CheckDefaults,
    /// Every checker block; the server is up only while all of them succeed.
    pub checkers: Vec<Checker>,
    pub location: Location,
}

/// Checker timing settable on a virtual server, a real server or a checker: the most specific
/// wins, then keepalived's default (see [`Checker::timing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckDefaults {
    pub connect_timeout: Option<Duration>,
    /// `retry`, or its deprecated alias `nb_get_retry`.
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
    pub delay_loop: Option<Duration>,
}

/// keepalived's checker defaults (`check_api.c`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);

/// The effective timing of one checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    pub connect_timeout: Duration,
    pub retry: u32,
    pub delay_before_retry: Duration,
    pub delay_loop: Duration,
    /// None: keepalived waits a random time up to `delay_loop` before the first check.
    pub warmup: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checker {
    pub kind: CheckKind,
    /// Options every checker takes.
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub bind_if: Option<String>,
    pub bind_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub alpha: Option<bool>,
    pub log_all_failures: Option<bool>,
    pub timing: CheckDefaults,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Tcp,
    Http(HttpCheck),
    Ssl(HttpCheck),
    Misc(MiscCheck),
    Smtp(SmtpCheck),
    Dns(DnsCheck),
    Udp(UdpCheck),
    Ping,
}

impl CheckKind {
    /// The keepalived block name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tcp => "TCP_CHECK",
            Self::Http(_) => "HTTP_GET",
            Self::Ssl(_) => "SSL_GET",
            Self::Misc(_) => "MISC_CHECK",
            Self::Smtp(_) => "SMTP_CHECK",
            Self::Dns(_) => "DNS_CHECK",
            Self::Udp(_) => "UDP_CHECK",
            Self::Ping => "PING_CHECK",
        }
    }
}

impl Checker {
    /// The effective timing with keepalived's defaults: the checker's own setting, else the real
    /// server's, else the virtual server's, else connect_timeout 5 s (MISC_CHECK: misc_timeout,
    /// else delay_loop), retry 1 (DNS 3, MISC 0), delay_before_retry 1 s (HTTP/SSL 3 s, DNS
    /// delay_loop), delay_loop 60 s, warmup random.
    pub fn timing(&self, rs: &RealServer, vs: &VirtualServer) -> CheckTiming {
        let layers = [self.timing, rs.check_defaults, vs.check_defaults];
        let pick = |f: fn(&CheckDefaults) -> Option<Duration>| layers.iter().find_map(f);
        let delay_loop = pick(|d| d.delay_loop).unwrap_or(DEFAULT_DELAY_LOOP);
        let connect_timeout = match &self.kind {
            CheckKind::Misc(m) => m.timeout.unwrap_or(delay_loop),
            _ => pick(|d| d.connect_timeout).unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        let retry = layers.iter().find_map(|d| d.retry).unwrap_or(match self.kind {
            CheckKind::Dns(_) => 3,
            CheckKind::Misc(_) => 0,
            _ => 1,
        });
        let delay_before_retry = pick(|d| d.delay_before_retry).unwrap_or(match self.kind {
            CheckKind::Http(_) | CheckKind::Ssl(_) => Duration::from_secs(3),
            CheckKind::Dns(_) => delay_loop,
            _ => Duration::from_secs(1),
        });
        CheckTiming { connect_timeout, retry, delay_before_retry, delay_loop, warmup: pick(|d| d.warmup) }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpCheck {
    pub urls: Vec<Url>,
    /// 1.0, 1.0C or 1.1.
    pub http_protocol: Option<String>,
    pub virtualhost: Option<String>,
    pub fast_recovery: Option<bool>,
    pub enable_sni: Option<bool>,
    pub sni_name: Option<String>,
    pub tls_compliant: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub path: Option<String>,
    /// MD5 of the body, 32 lower-case hex digits.
    pub digest: Option<String>,
    /// Accepted status codes as inclusive ranges; empty means keepalived's default: 200-299
    /// when there is no digest (with a digest, any status).
    pub status_codes: Vec<(u16, u16)>,
    pub virtualhost: Option<String>,
    pub regex: Option<String>,
    pub regex_no_match: bool,
    pub location: Location,
}

impl Url {
    /// Whether `status` passes this url's status check (ignoring the digest).
    pub fn accepts_status(&self, status: u16) -> bool {
        if self.status_codes.is_empty() {
            return self.digest.is_some() || (200..=299).contains(&status);
        }
        self.status_codes.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MiscCheck {
    /// The command line (keepalived runs it through its own word splitting).
    pub path: Option<String>,
    pub timeout: Option<Duration>,
    /// Exit codes 2-255 set the weight to code - 2.
    pub dynamic: bool,
    pub user: Option<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SmtpCheck {
    pub helo_name: Option<String>,
    /// The deprecated `host { connect_ip ...; connect_port ... }` sub-blocks, each its own
    /// check target (checker kind Tcp-like, holding the connection options).
    pub hosts: Vec<Checker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsType {
    A,
    Ns,
    Cname,
    #[default]
    Soa,
    Mx,
    Txt,
    Aaaa,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheck {
    /// Default SOA.
    pub query_type: DnsType,
    /// Default ".".
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpCheck {
    pub payload: Option<Vec<u8>>,
    pub require_reply: bool,
    /// Hex pattern the reply must match; `X` digits are wildcards.
    pub reply_pattern: Option<String>,
    pub min_reply_length: Option<u32>,
    pub max_reply_length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SslConfig {
    pub password: Option<String>,
    pub ca: Option<String>,
    pub certificate: Option<String>,
    pub key: Option<String>,
}

/// `virtual_server_group NAME { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualServerGroup {
    pub name: String,
    pub entries: Vec<VsgEntry>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsgEntry {
    /// `IP [PORT]`, `IP-LAST [PORT]` (last byte/hextet) or `IP/LEN [PORT]`: the inclusive range
    /// `first..=last` (equal for a single address); port 0 when omitted.
    Range {
        first: IpAddr,
        last: IpAddr,
        port: u16,
    },
    Fwmark {
        mark: u32,
        family: Option<IpFamily>,
    },
}

/// `lvs_timeouts tcp N tcpfin N udp N`, in seconds; None leaves the kernel's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LvsTimeouts {
    pub tcp: Option<u32>,
    pub tcp_fin: Option<u32>,
    pub udp: Option<u32>,
}

/// `lvs_sync_daemon IF [VRRP_INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group IP]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LvsSyncDaemon {
    pub interface: String,
    pub vrrp_instance: Option<String>,
    pub sync_id: Option<u32>,
    pub maxlen: Option<u32>,
    pub port: Option<u16>,
    pub ttl: Option<u32>,
    pub group: Option<IpAddr>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GlobalDefs {
    pub router_id: Option<String>,
    pub notification_email: Vec<String>,
    pub notification_email_from: Option<String>,
    /// Host (address or name) and port (default 25).
    pub smtp_server: Option<(String, u16)>,
    pub smtp_helo_name: Option<String>,
    pub smtp_connect_timeout: Option<Duration>,
    pub smtp_alert: Option<bool>,
    pub smtp_alert_vrrp: Option<bool>,
    pub smtp_alert_checker: Option<bool>,
    pub no_email_faults: bool,
    pub lvs_timeouts: Option<LvsTimeouts>,
    pub lvs_sync_daemon: Option<LvsSyncDaemon>,
    pub lvs_flush: bool,
    pub lvs_flush_on_stop: bool,
    pub enable_script_security: bool,
    pub script_user: Option<(String, Option<String>)>,
    pub dynamic_interfaces: bool,
    pub notify_fifo: Option<String>,
    pub vrrp_notify_fifo: Option<String>,
    pub lvs_notify_fifo: Option<String>,
    pub checker_log_all_failures: Option<bool>,
    pub vrrp_version: Option<u8>,
    pub vrrp_strict: bool,
    pub vrrp_mcast_group4: Option<IpAddr>,
    pub vrrp_mcast_group6: Option<IpAddr>,
    pub vrrp_garp_master_delay: Option<Duration>,
    pub vrrp_garp_master_repeat: Option<u32>,
    pub vrrp_garp_master_refresh: Option<Duration>,
    pub vrrp_garp_master_refresh_repeat: Option<u32>,
    pub vrrp_garp_lower_prio_delay: Option<Duration>,
    pub vrrp_garp_lower_prio_repeat: Option<u32>,
    pub vrrp_garp_interval: Option<Duration>,
    pub vrrp_gna_interval: Option<Duration>,
    pub vrrp_min_garp: bool,
    pub vrrp_check_unicast_src: bool,
    pub vrrp_skip_check_adv_addr: bool,
    pub vrrp_lower_prio_no_advert: Option<bool>,
    pub vrrp_higher_prio_send_advert: Option<bool>,
    pub vrrp_priority: Option<i32>,
    pub vrrp_no_swap: bool,
    pub vrrp_startup_delay: Option<Duration>,
    pub vrrp_down_timer_adverts: Option<u32>,
    pub v3_checksum_as_v2: bool,
}

/// `vrrp_script NAME { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpScript {
    pub name: String,
    pub script: Option<String>,
    /// Default 1 s.
    pub interval: Duration,
    pub timeout: Option<Duration>,
    /// -253..253, default 0 (failure means FAULT).
    pub weight: i32,
    pub weight_reverse: bool,
    /// Default 1.
    pub rise: u32,
    /// Default 1.
    pub fall: u32,
    pub user: Option<(String, Option<String>)>,
    pub init_fail: bool,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VrrpState {
    Master,
    #[default]
    Backup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Pass,
    Ah,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub auth_type: Option<AuthType>,
    /// At most 8 characters are used (longer is truncated, with a warning).
    pub auth_pass: Option<String>,
}

/// One `virtual_ipaddress` line: `ADDR[/LEN] [brd X] [dev IF] [scope S] [label L] [peer X]
/// [home] [-nodad] [noprefixroute] [autojoin] [no_track] [preferred_lft X] ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualIp {
    pub addr: IpAddr,
    pub prefix_len: Option<u8>,
    pub dev: Option<String>,
    pub label: Option<String>,
    pub brd: Option<String>,
    pub scope: Option<String>,
    pub peer: Option<String>,
    /// Valueless options and `preferred_lft VALUE`, as written.
    pub options: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnicastPeer {
    pub addr: IpAddr,
    pub min_ttl: Option<u8>,
    pub max_ttl: Option<u8>,
}

/// A `track_interface` or `track_script` entry: `NAME [weight W] [reverse|noreverse]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub name: String,
    pub weight: Option<i32>,
    pub reverse: bool,
}

/// The notify scripts of an instance or a sync group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    pub deleted: Option<String>,
    pub master_rx_lower_pri: Option<String>,
    /// `notify`: called on every transition with TYPE NAME STATE PRIORITY appended.
    pub any: Option<String>,
}

/// `vrrp_instance NAME { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpInstance {
    pub name: String,
    /// Initial state; default BACKUP.
    pub state: VrrpState,
    pub interface: Option<String>,
    /// 1-255; required by keepalived (an instance without one is dropped, with a warning).
    pub virtual_router_id: Option<u8>,
    /// 1-255, default 100.
    pub priority: u8,
    /// Default 1 s.
    pub advert_int: Duration,
    pub nopreempt: bool,
    pub preempt_delay: Option<Duration>,
    pub authentication: Option<Authentication>,
    pub virtual_ipaddress: Vec<VirtualIp>,
    pub virtual_ipaddress_excluded: Vec<VirtualIp>,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peers: Vec<UnicastPeer>,
    pub unicast_ttl: Option<u8>,
    pub mcast_src_ip: Option<IpAddr>,
    pub track_interface: Vec<Track>,
    pub track_script: Vec<Track>,
    pub dont_track_primary: bool,
    pub notify: Notify,
    pub smtp_alert: Option<bool>,
    pub garp_master_delay: Option<Duration>,
    pub garp_master_repeat: Option<u32>,
    pub garp_master_refresh: Option<Duration>,
    pub garp_master_refresh_repeat: Option<u32>,
    pub garp_lower_prio_delay: Option<Duration>,
    pub garp_lower_prio_repeat: Option<u32>,
    /// `version` (or `vrrp_version`): 2 or 3; None takes the global `vrrp_version` (default 2).
    pub version: Option<u8>,
    pub use_vmac: bool,
    pub vmac_name: Option<String>,
    pub vmac_xmit_base: bool,
    /// Deprecated.
    pub native_ipv6: bool,
    /// `accept` / `no_accept`.
    pub accept: Option<bool>,
    pub strict_mode: Option<bool>,
    pub check_unicast_src: bool,
    pub skip_check_adv_addr: Option<bool>,
    pub lower_prio_no_advert: Option<bool>,
    pub higher_prio_send_advert: Option<bool>,
    pub down_timer_adverts: Option<u32>,
    pub v3_checksum_as_v2: Option<bool>,
    pub promote_secondaries: bool,
    pub location: Location,
}

/// `vrrp_sync_group NAME { group { ... } ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpSyncGroup {
    pub name: String,
    pub group: Vec<String>,
    pub notify: Notify,
    pub smtp_alert: Option<bool>,
    pub track_interface: Vec<Track>,
    pub track_script: Vec<Track>,
    pub sync_group_tracking_weight: bool,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LbKind {
    Dr,
    #[default]
    Nat,
    Tun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheduler {
    Rr,
    Wrr,
    Lc,
    #[default]
    Wlc,
    Lblc,
    Lblcr,
    Dh,
    Sh,
    Sed,
    Nq,
    Fo,
    Ovf,
    Mh,
    Twos,
}

impl Scheduler {
    #[rustfmt::skip]
    pub const ALL: [Scheduler; 14] = [
        Self::Rr, Self::Wrr, Self::Lc, Self::Wlc, Self::Lblc, Self::Lblcr, Self::Dh,
        Self::Sh, Self::Sed, Self::Nq, Self::Fo, Self::Ovf, Self::Mh, Self::Twos,
    ];

    /// The IPVS / ipvsadm scheduler name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Mh => "mh",
            Self::Twos => "twos",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl Config {
    /// Notices for what is parsed but not acted on yet, one per block (VRRP, health checks,
    /// fwmark/group services, sync daemon, mail alerts), located at the block. Meant to be
    /// logged at startup and reload, like warnings.
    pub fn inactive_features(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut note = |location: &Location, message: String| {
            out.push(Diagnostic { location: location.clone(), message });
        };
        for s in &self.vrrp_scripts {
            note(
                &s.location,
                format!("vrrp_script {} is parsed but VRRP is not implemented yet; it is not run", s.name),
            );
        }
        for i in &self.vrrp_instances {
            note(
                &i.location,
                format!(
                    "vrrp_instance {} is parsed but VRRP is not implemented yet; its virtual addresses are not managed",
                    i.name
                ),
            );
        }
        for g in &self.vrrp_sync_groups {
            note(&g.location, format!("vrrp_sync_group {} is parsed but VRRP is not implemented yet", g.name));
        }
        for g in &self.virtual_server_groups {
            note(
                &g.location,
                format!("virtual_server_group {} is parsed but virtual server groups are not implemented yet", g.name),
            );
        }
        for vs in &self.other_virtual_servers {
            note(
                &vs.location,
                format!(
                    "virtual_server {} is parsed but fwmark and group virtual servers are not implemented yet; it is not served",
                    vs.target
                ),
            );
        }
        // Checkers and quorum scripts of the served virtual servers run (crate::check); those
        // of fwmark and group virtual servers, which are not served, do not.
        for vs in &self.other_virtual_servers {
            for rs in &vs.real_servers {
                for c in &rs.checkers {
                    note(
                        &c.location,
                        format!(
                            "{} of real_server {} is not run: its virtual server is not served",
                            c.kind.name(),
                            VsTarget::Addr(rs.addr, rs.port)
                        ),
                    );
                }
            }
            if vs.quorum_up.is_some() || vs.quorum_down.is_some() {
                let message =
                    format!("quorum_up/quorum_down of virtual_server {} are not run: it is not served", vs.target);
                note(&vs.location, message);
            }
        }
        let g = &self.global_defs;
        if let Some(d) = &g.lvs_sync_daemon {
            let message =
                format!("lvs_sync_daemon on {} is parsed but connection sync is not implemented yet", d.interface);
            out.push(Diagnostic { location: d.location.clone(), message });
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Diagnostic>);
