//! Typed `virtual_server` config, lowered from the generic tree, and validated.
//! Unsupported-but-valid keepalived keywords become warnings; malformed values
//! become errors. All problems are collected, never just the first.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::tree::{Node, Word};

#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub virtual_servers: Vec<VirtualServer>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualServer {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub kind: LbKind,
    pub persistence_timeout: Option<u32>,
    pub persistence_granularity: Option<String>,
    pub delay_loop: Option<u32>,
    pub real_servers: Vec<RealServer>,
    pub sorry_server: Option<(IpAddr, u16)>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

/// Top-level blocks keepalived knows that we skip without descending.
#[rustfmt::skip]
const UNSUPPORTED_TOP: &[&str] = &[
    "global_defs", "vrrp_instance", "vrrp_script", "vrrp_sync_group", "virtual_server_group",
    "static_ipaddress", "static_routes", "static_rules", "linkbeat_interfaces", "garp_group",
    "vrrp_track_file", "track_file", "vrrp_track_process", "track_process", "bfd_instance",
    "net_namespace",
];

/// keepalived keywords inside virtual_server / real_server we do not act on yet.
#[rustfmt::skip]
const UNSUPPORTED_INNER: &[&str] = &[
    "ha_suspend", "alpha", "omega", "quorum", "hysteresis", "quorum_up", "quorum_down",
    "virtualhost", "ops", "one_packet_scheduler", "retry", "delay_before_retry",
    "connect_timeout", "inhibit_on_failure", "notify_up", "notify_down", "uthreshold",
    "lthreshold", "smtp_alert", "sorry_server_inhibit", "sorry_server_lvs_method", "ip_family",
    "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK", "UDP_CHECK",
    "PING_CHECK", "BFD_CHECK", "FILE_CHECK",
];

/// keepalived's value for a bare `persistence_timeout`.
const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;

/// Lowers the tree into a [`Config`]; returns (config, errors, warnings).
pub(super) fn lower(nodes: &[Node], file: &Arc<Path>) -> (Config, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut cx = Lower { file: Arc::clone(file), errors: Vec::new(), warnings: Vec::new() };
    let mut config = Config::default();
    for node in nodes {
        let Some(kw) = node.words.first() else {
            continue;
        };
        match kw.text.as_str() {
            "virtual_server" => match node.words.get(1).map(|w| w.text.as_str()) {
                Some(sub @ ("fwmark" | "group")) => {
                    cx.warn(kw, format!("`virtual_server {sub}` is not supported yet; block ignored"))
                }
                _ => config.virtual_servers.extend(cx.virtual_server(node, kw)),
            },
            // Skipping an include would silently lose the services it holds.
            "include" => cx.error(kw, "`include` is not supported yet; inline the included file".to_string()),
            name if UNSUPPORTED_TOP.contains(&name) => {
                let what = if node.children.is_some() { "block ignored" } else { "ignored" };
                cx.warn(kw, format!("`{name}` is not supported yet; {what}"))
            }
            name => cx.warn(kw, format!("unknown keyword `{name}`; ignored")),
        }
    }
    cx.validate(&config);
    (config, cx.errors, cx.warnings)
}

struct Lower {
    file: Arc<Path>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Lower {
    fn loc(&self, line: u32, column: u32) -> Location {
        Location { file: Arc::clone(&self.file), line, column }
    }

    fn error(&mut self, at: &Word, message: String) {
        let location = self.loc(at.line, at.column);
        self.errors.push(Diagnostic { location, message });
    }

    fn warn(&mut self, at: &Word, message: String) {
        let location = self.loc(at.line, at.column);
        self.warnings.push(Diagnostic { location, message });
    }

    /// The `n` arguments after the keyword, or an error naming the usage.
    /// Extra arguments are warned about and ignored.
    fn args<'a>(&mut self, node: &'a Node, kw: &Word, usage: &str, n: usize) -> Option<&'a [Word]> {
        let args = node.words.get(1..).unwrap_or_default();
        let Some(wanted) = args.get(..n) else {
            self.error(kw, format!("missing argument for `{}`: expected `{usage}`", kw.text));
            return None;
        };
        if let Some(extra) = args.get(n) {
            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
        }
        Some(wanted)
    }

    fn invalid(&mut self, what: &str, word: &Word, expected: &str) {
        self.error(word, format!("invalid {what} `{}`: expected {expected}", word.text));
    }

    fn ip(&mut self, word: &Word) -> Option<IpAddr> {
        let ip = word.text.parse().ok();
        if ip.is_none() {
            self.invalid("IP address", word, "an IPv4 or IPv6 address");
        }
        ip
    }

    /// Unsigned decimal integer within `0..=max`; no sign, no hex.
    fn uint(&mut self, what: &str, word: &Word, max: u32) -> Option<u32> {
        let digits = !word.text.is_empty() && word.text.bytes().all(|b| b.is_ascii_digit());
        let value = digits.then(|| word.text.parse::<u32>().ok()).flatten().filter(|v| *v <= max);
        if value.is_none() {
            self.invalid(what, word, &format!("an integer 0-{max}"));
        }
        value
    }

    fn port(&mut self, word: &Word) -> Option<u16> {
        self.uint("port", word, u16::MAX.into()).and_then(|p| u16::try_from(p).ok())
    }

    /// Parses `KEYWORD IP PORT` (virtual_server, real_server, sorry_server).
    fn endpoint(&mut self, node: &Node, kw: &Word) -> Option<(IpAddr, u16, Word)> {
        let usage = format!("{} IP PORT", kw.text);
        let [ip, port] = self.args(node, kw, &usage, 2)? else {
            return None;
        };
        let (ip, port_value) = (self.ip(ip), self.port(port));
        Some((ip?, port_value?, port.clone()))
    }

    fn virtual_server(&mut self, node: &Node, kw: &Word) -> Option<VirtualServer> {
        let endpoint = self.endpoint(node, kw);
        let Some(children) = &node.children else {
            self.error(kw, "`virtual_server` needs a `{ ... }` block".to_string());
            return None;
        };
        let mut vs = VirtualServer {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            protocol: Protocol::default(),
            scheduler: Scheduler::default(),
            kind: LbKind::default(),
            persistence_timeout: None,
            persistence_granularity: None,
            delay_loop: None,
            real_servers: Vec::new(),
            sorry_server: None,
            location: self.loc(kw.line, kw.column),
        };
        let header_ok = match endpoint {
            Some((_, 0, port)) => {
                self.error(&port, "port 0 (all ports) is not supported".to_string());
                false
            }
            Some((addr, port, _)) => {
                (vs.addr, vs.port) = (addr, port);
                true
            }
            None => false,
        };
        // Keep checking the body even when the header is bad.
        for child in children {
            self.vs_statement(&mut vs, child, header_ok);
        }
        header_ok.then_some(vs)
    }

    fn vs_statement(&mut self, vs: &mut VirtualServer, node: &Node, header_ok: bool) {
        let Some(kw) = node.words.first() else { return };
        let name = kw.text.as_str();
        let usage = |v: &str| format!("{name} {v}");
        match name {
            "lb_algo" | "lvs_sched" => {
                let Some([w]) = self.args(node, kw, &usage("SCHEDULER"), 1) else {
                    return;
                };
                match Scheduler::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(&w.text)) {
                    Some(s) => vs.scheduler = s,
                    None => {
                        let names: Vec<&str> = Scheduler::ALL.iter().map(Scheduler::name).collect();
                        self.invalid(name, w, &format!("one of {}", names.join(", ")))
                    }
                }
            }
            "lb_kind" | "lvs_method" => {
                let Some([w]) = self.args(node, kw, &usage("DR|NAT|TUN"), 1) else {
                    return;
                };
                match w.text.to_ascii_uppercase().as_str() {
                    "DR" => vs.kind = LbKind::Dr,
                    "NAT" => vs.kind = LbKind::Nat,
                    "TUN" => vs.kind = LbKind::Tun,
                    _ => self.invalid(name, w, "DR, NAT or TUN"),
                }
            }
            "protocol" => {
                let Some([w]) = self.args(node, kw, &usage("TCP|UDP|SCTP"), 1) else {
                    return;
                };
                match w.text.to_ascii_uppercase().as_str() {
                    "TCP" => vs.protocol = Protocol::Tcp,
                    "UDP" => vs.protocol = Protocol::Udp,
                    "SCTP" => vs.protocol = Protocol::Sctp,
                    _ => self.invalid(name, w, "TCP, UDP or SCTP"),
                }
            }
            "persistence_timeout" => match node.words.get(1) {
                None => vs.persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT),
                Some(_) => {
                    let Some([w]) = self.args(node, kw, &usage("SECONDS"), 1) else {
                        return;
                    };
                    vs.persistence_timeout = self.uint(name, w, u32::MAX).or(vs.persistence_timeout);
                }
            },
            "persistence_granularity" => {
                let Some([w]) = self.args(node, kw, &usage("NETMASK"), 1) else {
                    return;
                };
                // keepalived takes a netmask for IPv4 and a prefix length for IPv6.
                let v6 = header_ok.then_some(vs.addr.is_ipv6());
                let mask_ok = v6 != Some(true) && is_ipv4_netmask(&w.text);
                let prefix_ok = v6 != Some(false) && w.text.parse::<u8>().is_ok_and(|p| (1..=128).contains(&p));
                match (mask_ok || prefix_ok, v6) {
                    (true, _) => vs.persistence_granularity = Some(w.text.clone()),
                    (false, Some(true)) => self.invalid(name, w, "an IPv6 prefix length 1-128"),
                    (false, Some(false)) => self.invalid(name, w, "an IPv4 netmask such as 255.255.255.0"),
                    (false, None) => self.invalid(name, w, "an IPv4 netmask or an IPv6 prefix length"),
                }
            }
            "delay_loop" => {
                let Some([w]) = self.args(node, kw, &usage("SECONDS"), 1) else {
                    return;
                };
                vs.delay_loop = self.uint(name, w, u32::MAX).or(vs.delay_loop);
            }
            "sorry_server" => {
                if let Some((addr, port, _)) = self.endpoint(node, kw) {
                    vs.sorry_server = Some((addr, port));
                }
            }
            "real_server" => {
                if let Some(rs) = self.real_server(node, kw) {
                    vs.real_servers.push(rs);
                }
            }
            _ => self.unsupported_or_unknown(kw),
        }
    }

    fn real_server(&mut self, node: &Node, kw: &Word) -> Option<RealServer> {
        let endpoint = self.endpoint(node, kw);
        let mut weight = 1;
        for child in node.children.iter().flatten() {
            let Some(ckw) = child.words.first() else {
                continue;
            };
            if ckw.text == "weight" {
                if let Some([w]) = self.args(child, ckw, "weight 0-65535", 1) {
                    weight = self.uint("weight", w, u16::MAX.into()).unwrap_or(weight);
                }
            } else {
                self.unsupported_or_unknown(ckw);
            }
        }
        let (addr, port, _) = endpoint?;
        Some(RealServer { addr, port, weight, location: self.loc(kw.line, kw.column) })
    }

    fn unsupported_or_unknown(&mut self, kw: &Word) {
        let name = kw.text.as_str();
        let message = if UNSUPPORTED_INNER.contains(&name) || name == "delay_loop" {
            format!("`{name}` is not supported yet; ignored")
        } else {
            format!("unknown keyword `{name}`; ignored")
        };
        self.warn(kw, message);
    }

    /// Cross-statement checks: duplicate virtual and real servers.
    fn validate(&mut self, config: &Config) {
        let mut seen_vs: HashMap<(IpAddr, u16, Protocol), u32> = HashMap::new();
        for vs in &config.virtual_servers {
            let key = (vs.addr, vs.port, vs.protocol);
            if let Some(first) = seen_vs.insert(key, vs.location.line) {
                seen_vs.insert(key, first);
                let proto = format!("{:?}", vs.protocol).to_uppercase();
                let message = format!(
                    "duplicate virtual server {} {proto} (first defined on line {first})",
                    SocketAddr::new(vs.addr, vs.port)
                );
                self.errors.push(Diagnostic { location: vs.location.clone(), message });
            }
            let mut seen_rs: HashMap<(IpAddr, u16), u32> = HashMap::new();
            for rs in &vs.real_servers {
                if let Some(first) = seen_rs.insert((rs.addr, rs.port), rs.location.line) {
                    seen_rs.insert((rs.addr, rs.port), first);
                    let message = format!(
                        "duplicate real server {} in this virtual server (first defined on line {first})",
                        SocketAddr::new(rs.addr, rs.port)
                    );
                    self.errors.push(Diagnostic { location: rs.location.clone(), message });
                }
            }
        }
    }
}

/// A dotted-quad with contiguous leading one bits (0.0.0.0 excluded).
fn is_ipv4_netmask(text: &str) -> bool {
    text.parse::<Ipv4Addr>().is_ok_and(|m| {
        let bits = u32::from(m);
        bits != 0 && bits.leading_ones() + bits.trailing_zeros() == 32
    })
}
