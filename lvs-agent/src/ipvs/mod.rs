//! The kernel IPVS fallback: virtual servers the XDP data plane does not forward (lb_kind NAT
//! and TUN, or a real server with its own NAT/TUN `lvs_method`) are programmed into the
//! kernel's IPVS over generic netlink, and kept there.
//!
//! - `codec`: the IPVS messages (uapi constants, attribute encoding and decoding);
//! - `netlink`: the generic netlink socket (family resolution, request/ack, dumps);
//! - `reconcile`: desired table vs. a dump -> requests (pure);
//! - this module: the plan of a virtual server, and [`Ipvs`], which applies plans and repairs
//!   drift. IPVS sends no notifications of changes, so drift is found by dumping periodically.

pub mod codec;
pub mod netlink;
pub mod reconcile;

use std::net::IpAddr;

pub use codec::{Dest, Service, ServiceId, Stats};
pub use reconcile::Table;

use crate::config::{Diagnostic, LbKind, Protocol, VirtualServer};

/// Whether `vs` is forwarded by IPVS rather than XDP: its own method, or any real server's, is
/// NAT or TUN (IPVS forwards a service as one; its DR real servers then go by IPVS too).
#[must_use]
pub fn wants_ipvs(vs: &VirtualServer) -> bool {
    vs.kind != LbKind::Dr || vs.real_servers.iter().any(|rs| rs.lvs_method.is_some_and(|k| k != LbKind::Dr))
}

fn fwd_of(kind: LbKind) -> u32 {
    match kind {
        LbKind::Nat => codec::IP_VS_CONN_F_MASQ,
        LbKind::Tun => codec::IP_VS_CONN_F_TUNNEL,
        LbKind::Dr => codec::IP_VS_CONN_F_DROUTE,
    }
}

fn tunnel_of(t: Option<&crate::config::Tunnel>) -> codec::TunnelParams {
    let Some(t) = t else { return codec::TunnelParams::default() };
    codec::TunnelParams {
        kind: match t.kind.as_str() {
            "gue" => codec::IP_VS_CONN_F_TUNNEL_TYPE_GUE,
            "gre" => codec::IP_VS_CONN_F_TUNNEL_TYPE_GRE,
            _ => codec::IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
        },
        port: t.port.unwrap_or(0),
        flags: match t.checksum.as_deref() {
            Some("csum") => codec::IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
            Some("remcsum") => codec::IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM,
            _ => codec::IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
        },
    }
}

/// The IPVS service and destinations `vs` asks for, as keepalived's `ipvswrapper.c` would set
/// them; problems go to `errors` / `warnings` at their file:line.
pub fn plan_service(vs: &VirtualServer, errors: &mut Vec<Diagnostic>, warnings: &mut Vec<Diagnostic>) -> Option<Table> {
    let at = |message: String| Diagnostic { location: vs.location.clone(), message };
    let name = crate::desired::socket(vs.addr, vs.port);
    let protocol = match vs.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    };
    let mut flags = 0;
    for f in &vs.scheduler_flags {
        flags |= match f.as_str() {
            "flag-1" | "sh-fallback" | "mh-fallback" => codec::IP_VS_SVC_F_SCHED1,
            "flag-2" | "sh-port" | "mh-port" => codec::IP_VS_SVC_F_SCHED2,
            "flag-3" => codec::IP_VS_SVC_F_SCHED3,
            // `hashed`: the kernel sets IP_VS_SVC_F_HASHED on every service itself.
            _ => 0,
        };
    }
    if vs.one_packet_scheduler {
        flags |= codec::IP_VS_SVC_F_ONEPACKET;
    }
    // Not persistent: timeout 0 and the full mask, as ipvsadm -A sends without -p.
    let full = if vs.addr.is_ipv4() { u32::MAX } else { 128 };
    let (timeout, netmask) = match vs.persistence_timeout {
        None | Some(0) => (0, full),
        Some(t) => {
            flags |= codec::IP_VS_SVC_F_PERSISTENT;
            let g = vs.persistence_granularity.as_deref();
            let mask = match vs.addr {
                IpAddr::V4(_) => crate::desired::granularity_mask(vs.addr, g).map(|m| m[0]),
                // IPv6: the kernel takes the prefix length (ip_vs_add_service checks 1..=128).
                IpAddr::V6(_) => {
                    g.unwrap_or("128").trim_start_matches('/').parse::<u32>().ok().filter(|l| (1..=128).contains(l))
                }
            };
            let Some(mask) = mask else {
                errors.push(at(format!(
                    "virtual_server {name}: persistence_granularity {:?} does not fit the service's address family",
                    g.unwrap_or_default()
                )));
                return None;
            };
            (t, mask)
        }
    };
    if vs.sorry_server.is_some() {
        warnings.push(at(format!(
            "virtual_server {name}: sorry_server is not applied to services forwarded by kernel IPVS (lb_kind NAT/TUN); it is ignored"
        )));
    }
    let service = Service {
        id: ServiceId::Addr { protocol, addr: vs.addr, port: vs.port },
        scheduler: vs.scheduler.name().to_string(),
        flags,
        timeout,
        netmask,
        pe_name: vs.persistence_engine.clone(),
        stats: Stats::default(),
    };
    let mut dests = Vec::new();
    let mut ok = true;
    for rs in &vs.real_servers {
        let kind = rs.lvs_method.unwrap_or(vs.kind);
        let fwd = fwd_of(kind);
        // IPVS allows another family only for tunnel destinations (ip_vs_add_dest).
        if rs.addr.is_ipv4() != vs.addr.is_ipv4() && fwd != codec::IP_VS_CONN_F_TUNNEL {
            errors.push(Diagnostic {
                location: rs.location.clone(),
                message: format!(
                    "real_server {}: its address family differs from virtual_server {name}'s; IPVS allows that only with lvs_method TUN",
                    rs.addr
                ),
            });
            ok = false;
            continue;
        }
        let mut d = Dest::new(rs.addr, if rs.port == 0 { vs.port } else { rs.port }, fwd, rs.weight);
        d.u_thresh = rs.uthreshold.unwrap_or(0);
        d.l_thresh = rs.lthreshold.unwrap_or(0);
        if fwd == codec::IP_VS_CONN_F_TUNNEL {
            // A real server's own `lvs_method TUN type ...` wins over the virtual server's.
            let t = if rs.lvs_method.is_some() { rs.tunnel.as_ref() } else { vs.tunnel.as_ref() };
            d.tunnel = tunnel_of(t.or(vs.tunnel.as_ref()));
        }
        dests.push(d);
    }
    ok.then_some(Table { service, dests })
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS family: the one error an operator meets on a host without it.
    #[error(
        "kernel IPVS is not available (module ip_vs not loaded / not built): NAT/TUN services {services} cannot be programmed; DR services are forwarded by XDP as usual"
    )]
    Unavailable { services: String },
    #[error("kernel IPVS: {0}")]
    Netlink(#[from] netlink::GenlError),
    /// A request the kernel refused, named as ipvsadm would name it.
    #[error("kernel IPVS refused {what}: {source}{hint}")]
    Refused { what: String, source: netlink::GenlError, hint: &'static str },
}

/// What one pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub requests: usize,
}

/// The kernel's IPVS table, kept equal to a desired one.
#[derive(Debug)]
pub struct Ipvs {
    sock: netlink::GenlSocket,
}

/// `TCP  10.0.0.1:80, UDP  10.0.0.2:53` for messages.
#[must_use]
pub fn names(tables: &[Table]) -> String {
    tables.iter().map(|t| t.service.id.to_string().replace("  ", " ")).collect::<Vec<_>>().join(", ")
}

impl Ipvs {
    /// Opens the IPVS family; `wanted` names the services in the error when the kernel has none.
    pub fn open(wanted: &[Table]) -> Result<Self, IpvsError> {
        match netlink::GenlSocket::open_ipvs() {
            Ok(sock) => Ok(Self { sock }),
            Err(netlink::GenlError::NoFamily(_)) => Err(IpvsError::Unavailable { services: names(wanted) }),
            Err(e) => Err(e.into()),
        }
    }

    /// The kernel's IPVS version (IPVS_CMD_GET_INFO), e.g. `1.2.1`.
    pub fn version(&mut self) -> Result<String, IpvsError> {
        Ok(self.sock.version()?)
    }

    /// Every service with its destinations and counters, as the kernel has them.
    pub fn dump(&mut self) -> Result<Vec<Table>, IpvsError> {
        let services = self.sock.services()?;
        let mut out = Vec::with_capacity(services.len());
        for service in services {
            let dests = self.sock.dests(&service.id)?;
            out.push(Table { service, dests });
        }
        Ok(out)
    }

    /// Makes the kernel's table `want`: dumps it, sends the difference. A refused request is
    /// reported and the others still go (each is independent of the ones for other services).
    pub fn apply(&mut self, want: &[Table]) -> Result<Applied, Vec<IpvsError>> {
        let have = self.dump().map_err(|e| vec![e])?;
        let ops = reconcile::diff(want, &have);
        let mut errors = Vec::new();
        for op in &ops {
            if let Err(e) = self.sock.execute(op) {
                errors.push(refused(op, e));
            }
        }
        if errors.is_empty() { Ok(Applied { requests: ops.len() }) } else { Err(errors) }
    }

    /// `ipvsadm --set tcp tcpfin udp` (global to the network namespace).
    pub fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<(), IpvsError> {
        let op = codec::Request::SetTimeouts { tcp, tcp_fin, udp };
        self.sock.execute(&op).map_err(|e| refused(&op, e))
    }
}

/// The daemon's side of IPVS: opens the family when services need it, applies plans, repairs
/// drift on each [`Driver::sync`], and reports each kind of trouble once until it clears (a
/// periodic drift check must not repeat the same error every few seconds).
#[derive(Debug, Default)]
pub struct Driver {
    ipvs: Option<Ipvs>,
    /// The last error reported, so that a repeat is quiet.
    reported: Option<String>,
    timeouts: Option<(u32, u32, u32)>,
    /// After the family was found missing, when to look again: each look makes the kernel run
    /// modprobe for it (`ctrl_getfamily` → `request_module`), so not at every drift check.
    next_open: Option<std::time::Instant>,
}

/// How long a host without IPVS waits between looks for it (a module loaded later is found).
const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Driver {
    /// Brings the kernel's table to `want` (also dropping what an earlier run left, once the
    /// family is open). A host without IPVS gets its one error here while `want` is not empty;
    /// nothing is opened for a config without NAT/TUN services.
    pub fn sync(&mut self, want: &[Table]) {
        if self.ipvs.is_none() {
            if want.is_empty() || self.next_open.is_some_and(|t| std::time::Instant::now() < t) {
                return;
            }
            match Ipvs::open(want) {
                Ok(mut i) => {
                    self.next_open = None;
                    match i.version() {
                        Ok(v) => tracing::info!(version = %v, "kernel IPVS"),
                        Err(e) => tracing::warn!(%e, "asking kernel IPVS for its version"),
                    }
                    self.ipvs = Some(i);
                    self.reported = None;
                }
                Err(e) => {
                    if matches!(e, IpvsError::Unavailable { .. }) {
                        self.next_open = Some(std::time::Instant::now() + REOPEN_AFTER);
                    }
                    return self.report(&e.to_string());
                }
            }
        }
        let Some(ipvs) = self.ipvs.as_mut() else { return };
        if let Some((tcp, fin, udp)) = self.timeouts.take()
            && let Err(e) = ipvs.set_timeouts(tcp, fin, udp)
        {
            tracing::error!("{e}");
        }
        match ipvs.apply(want) {
            Ok(Applied { requests: 0 }) => self.reported = None,
            Ok(Applied { requests }) => {
                self.reported = None;
                tracing::info!(requests, services = want.len(), "kernel IPVS table brought to the configuration");
            }
            Err(errors) => {
                let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
                self.report(&text);
            }
        }
    }

    /// A new configuration (reload): a host without IPVS is asked again at the next sync, and
    /// the error is said again if the services it names changed.
    pub fn reconfigured(&mut self) {
        self.next_open = None;
    }

    /// `lvs_timeouts` for IPVS (`ipvsadm --set`), sent with the next [`Driver::sync`].
    pub fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) {
        self.timeouts = Some((tcp, tcp_fin, udp));
    }

    /// The kernel's table with counters, for the views (empty without IPVS).
    pub fn dump(&mut self) -> Vec<Table> {
        let Some(ipvs) = self.ipvs.as_mut() else { return Vec::new() };
        ipvs.dump().unwrap_or_else(|e| {
            tracing::warn!(%e, "reading kernel IPVS counters");
            Vec::new()
        })
    }

    fn report(&mut self, text: &str) {
        if self.reported.as_deref() != Some(text) {
            tracing::error!("{text}");
            self.reported = Some(text.to_string());
        }
    }
}

fn refused(op: &codec::Request, source: netlink::GenlError) -> IpvsError {
    use codec::Request as R;
    let what = match op {
        R::NewService(s) => format!("adding service {} (scheduler {})", s.id, s.scheduler),
        R::SetService(s) => format!("changing service {} (scheduler {})", s.id, s.scheduler),
        R::DelService(id) => format!("removing service {id}"),
        R::NewDest(id, d) => format!("adding real server {} to {id}", crate::desired::socket(d.addr, d.port)),
        R::SetDest(id, d) => format!("changing real server {} of {id}", crate::desired::socket(d.addr, d.port)),
        R::DelDest(id, d) => format!("removing real server {} from {id}", crate::desired::socket(d.addr, d.port)),
        R::GetServices | R::GetDests(_) => "a dump".into(),
        R::GetInfo => "GET_INFO".into(),
        R::SetTimeouts { .. } => "setting lvs_timeouts".into(),
    };
    // ENOENT on a service: the scheduler's module (ip_vs_NAME) is missing (ip_vs_scheduler_get).
    let hint = match (op, source.errno()) {
        (R::NewService(_) | R::SetService(_), Some(libc::ENOENT)) => {
            " (is the scheduler's module ip_vs_<scheduler> available?)"
        }
        (R::NewDest(_, d) | R::SetDest(_, d), Some(libc::EINVAL)) if d.fwd == codec::IP_VS_CONN_F_TUNNEL => {
            " (tunnel types gue/gre need Linux 5.2+ and its fou/gre modules)"
        }
        _ => "",
    };
    IpvsError::Refused { what, source, hint }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_str;

    fn plan_of(text: &str) -> crate::desired::Plan {
        crate::desired::plan(&parse_str(text, Path::new("t.conf")).expect("parses").config).expect("plans").0
    }

    #[test]
    fn nat_tun_and_mixed_services_go_to_ipvs_and_dr_stays_on_xdp() {
        let p = plan_of(
            "virtual_server 10.0.0.100 80 {\n lb_algo wlc\n lb_kind NAT\n persistence_timeout 300\n\
             persistence_granularity 255.255.255.0\n protocol TCP\n\
             real_server 10.0.1.2 8080 {\n weight 3\n uthreshold 100\n lthreshold 10\n }\n}\n\
             virtual_server 10.0.0.101 80 {\n lb_algo lblc\n lb_kind TUN\n protocol TCP\n\
             real_server 10.0.2.2 80 {\n weight 1\n }\n\
             real_server 10.0.2.3 80 {\n lvs_method TUN type gue port 6080 csum\n }\n}\n\
             virtual_server 10.0.0.102 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n\
             real_server 10.0.3.2 80 {\n }\n}\n\
             virtual_server 10.0.0.103 53 {\n lb_algo sh\n sh-port\n lb_kind DR\n protocol UDP\n\
             real_server 10.0.4.2 53 {\n }\n real_server 10.0.4.3 5353 {\n lvs_method NAT\n }\n}\n",
        );
        assert_eq!(p.services.len(), 1, "only the all-DR service is XDP's");
        assert_eq!(p.services[0].key.ip(), IpAddr::from([10, 0, 0, 102]));
        assert_eq!(p.ipvs.len(), 3);
        let nat = &p.ipvs[0];
        assert_eq!(nat.service.id, ServiceId::Addr { protocol: 6, addr: [10, 0, 0, 100].into(), port: 80 });
        assert_eq!(nat.service.scheduler, "wlc");
        assert_eq!(nat.service.flags, codec::IP_VS_SVC_F_PERSISTENT);
        assert_eq!((nat.service.timeout, nat.service.netmask), (300, u32::from_ne_bytes([255, 255, 255, 0])));
        let mut d = Dest::new([10, 0, 1, 2].into(), 8080, codec::IP_VS_CONN_F_MASQ, 3);
        (d.u_thresh, d.l_thresh) = (100, 10);
        assert_eq!(nat.dests, [d]);
        let tun = &p.ipvs[1];
        assert_eq!((tun.service.scheduler.as_str(), tun.service.flags, tun.service.netmask), ("lblc", 0, u32::MAX));
        assert_eq!(tun.dests[0].fwd, codec::IP_VS_CONN_F_TUNNEL);
        assert_eq!(tun.dests[0].tunnel, codec::TunnelParams::default(), "ipip by default");
        assert_eq!(
            tun.dests[1].tunnel,
            codec::TunnelParams {
                kind: codec::IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                port: 6080,
                flags: codec::IP_VS_TUNNEL_ENCAP_FLAG_CSUM
            }
        );
        let mixed = &p.ipvs[2];
        assert_eq!(mixed.service.flags, codec::IP_VS_SVC_F_SCHED2);
        assert_eq!(
            mixed.dests.iter().map(|d| (d.fwd, d.port)).collect::<Vec<_>>(),
            [(codec::IP_VS_CONN_F_DROUTE, 53), (codec::IP_VS_CONN_F_MASQ, 5353)]
        );
        assert_eq!(names(&p.ipvs), "TCP 10.0.0.100:80, TCP 10.0.0.101:80, UDP 10.0.0.103:53");
    }

    #[test]
    fn ipvs_problems_are_located() {
        let text = "virtual_server fd00::1 80 {\n lb_kind NAT\n persistence_timeout 60\n persistence_granularity 64\n\
                    sorry_server fd00::9 80\n real_server 10.0.0.3 80 {\n }\n real_server fd00::3 80 {\n }\n}\n";
        let err = crate::desired::plan(&parse_str(text, Path::new("t.conf")).unwrap().config).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.to_string().contains("t.conf:6:") && err.to_string().contains("only with lvs_method TUN"), "{err}");
        let (p, warnings) =
            crate::desired::plan(&parse_str(&text.replace("10.0.0.3", "fd00::4"), Path::new("t.conf")).unwrap().config)
                .unwrap();
        assert_eq!((p.ipvs[0].service.netmask, p.ipvs[0].service.timeout), (64, 60));
        assert!(warnings.iter().any(|w| w.message.contains("sorry_server")), "{warnings:?}");
    }

    #[test]
    fn the_missing_module_is_named_with_the_services() {
        let e = IpvsError::Unavailable { services: "TCP 10.0.0.100:80, TCP 10.0.0.101:80".into() };
        assert_eq!(
            e.to_string(),
            "kernel IPVS is not available (module ip_vs not loaded / not built): NAT/TUN services TCP 10.0.0.100:80, TCP \
             10.0.0.101:80 cannot be programmed; DR services are forwarded by XDP as usual"
        );
    }

    #[test]
    fn retain_vips_filters_ipvs_like_xdp() {
        let mut p = plan_of(
            "virtual_server 10.0.0.100 80 {\n lb_kind NAT\n real_server 10.0.1.2 80 {\n }\n}\n\
             virtual_server 10.0.0.102 80 {\n lb_kind DR\n lb_algo rr\n real_server 10.0.3.2 80 {\n }\n}\n",
        );
        p.retain_vips(|ip| ip != IpAddr::from([10, 0, 0, 100]));
        assert!(p.ipvs.is_empty());
        assert_eq!(p.services.len(), 1);
        p.retain_vips(|_| false);
        assert!(p.services.is_empty());
    }
}
