//! From the operator's config to the forwarding plan of the XDP data plane.
//!
//! The plan is what the config asks for, checked against what this data plane can do. Real
//! server MACs are not part of it: they come and go at run time and the reconciler joins them in.

use std::{fmt, net::IpAddr};

use lvs_common::maps::{IPPROTO_TCP, IPPROTO_UDP, ServiceKeyV4, ServiceKeyV6};

use crate::config::{Config, ConfigErrors, Diagnostic, Protocol, Scheduler};

/// How a service spreads new flows over its real servers (see `lvs_common::sched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    Rr,
    Wrr,
    Sh,
    Dh,
    Mh,
    Lc,
    Wlc,
    Sed,
    Nq,
}

impl RingKind {
    /// Every kind, in the order of [`RingKind::id`].
    pub const ALL: [Self; 9] =
        [Self::Rr, Self::Wrr, Self::Sh, Self::Dh, Self::Mh, Self::Lc, Self::Wlc, Self::Sed, Self::Nq];

    /// The number kept in `Service::algo` (the agent's own: the program reads `Service::sched`).
    #[must_use]
    pub fn id(self) -> u8 {
        Self::ALL.iter().position(|&k| k == self).map_or(0, |i| i as u8 + 1)
    }

    /// The kind numbered `id` by [`RingKind::id`].
    #[must_use]
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id).checked_sub(1)?).copied()
    }

    /// The ipvsadm name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Sh => "sh",
            Self::Dh => "dh",
            Self::Mh => "mh",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Sed => "sed",
            Self::Nq => "nq",
        }
    }
}

/// A virtual service in either family, as the maps key it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    V4(ServiceKeyV4),
    V6(ServiceKeyV6),
}

impl ServiceKey {
    #[must_use]
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        match addr {
            IpAddr::V4(a) => Self::V4(ServiceKeyV4::new(a, port, proto)),
            IpAddr::V6(a) => Self::V6(ServiceKeyV6::new(a, port, proto)),
        }
    }

    #[must_use]
    pub const fn ip(&self) -> IpAddr {
        match self {
            Self::V4(k) => IpAddr::V4(k.ip()),
            Self::V6(k) => IpAddr::V6(k.ip()),
        }
    }

    #[must_use]
    pub const fn port(&self) -> u16 {
        match self {
            Self::V4(k) => k.port(),
            Self::V6(k) => k.port(),
        }
    }

    #[must_use]
    pub const fn proto(&self) -> u8 {
        match self {
            Self::V4(k) => k.proto,
            Self::V6(k) => k.proto,
        }
    }
}

/// `TCP  10.0.0.1:80`, `UDP  [fd00::1]:53`, as ipvsadm writes them.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto() {
            IPPROTO_TCP => "TCP",
            IPPROTO_UDP => "UDP",
            _ => "???",
        };
        write!(f, "{proto}  {}", socket(self.ip(), self.port()))
    }
}

/// `addr:port`, with brackets around IPv6 addresses.
#[must_use]
pub fn socket(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    pub key: ServiceKey,
    pub kind: RingKind,
    pub dests: Vec<PlannedDest>,
    /// `persistence_timeout` and the client-address mask of `persistence_granularity`.
    pub persistence: Option<Persistence>,
    /// `sorry_server`: takes new flows while no real server is usable.
    pub sorry: Option<PlannedDest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: u32,
    /// Applied to the client's address, as on the wire (IPv4 in the first word).
    pub mask: [u32; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDest {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Services the XDP data plane forwards (lb_kind DR).
    pub services: Vec<PlannedService>,
    /// Services the kernel's IPVS forwards: lb_kind NAT or TUN, or with a real server whose own
    /// `lvs_method` is NAT or TUN (see `crate::ipvs`).
    pub ipvs: Vec<crate::ipvs::Table>,
}

impl Plan {
    /// Every real server (and sorry server) address, once each, in config order.
    #[must_use]
    pub fn real_server_addrs(&self) -> Vec<IpAddr> {
        let mut seen = std::collections::HashSet::new();
        self.services
            .iter()
            .flat_map(|s| s.dests.iter().chain(&s.sorry))
            .filter(|d| seen.insert(d.addr))
            .map(|d| d.addr)
            .collect()
    }

    /// Keeps only the services whose VIP `keep` accepts, XDP and IPVS alike: the one place a
    /// rule over VIPs (VRRP mastership) filters what is forwarded.
    pub fn retain_vips(&mut self, keep: impl Fn(IpAddr) -> bool) {
        self.services.retain(|s| keep(s.key.ip()));
        self.ipvs.retain(|t| match t.service.id {
            crate::ipvs::ServiceId::Addr { addr, .. } => keep(addr),
            crate::ipvs::ServiceId::Fwmark { .. } => true,
        });
    }
}

/// Checks the config against what the XDP data plane does and builds the plan. Every problem is
/// reported, each at its file:line:column; warnings are for what is accepted but has no effect.
pub fn plan(config: &Config) -> Result<(Plan, Vec<Diagnostic>), ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut services = Vec::new();
    let mut ipvs = Vec::new();
    for vs in &config.virtual_servers {
        let at = |message: String| Diagnostic { location: vs.location.clone(), message };
        let name = socket(vs.addr, vs.port);
        if crate::ipvs::wants_ipvs(vs) {
            if let Some(t) = crate::ipvs::plan_service(vs, &mut errors, &mut warnings) {
                ipvs.push(t);
            }
            continue;
        }
        let kind = match vs.scheduler {
            Scheduler::Rr => RingKind::Rr,
            Scheduler::Wrr => RingKind::Wrr,
            Scheduler::Sh => RingKind::Sh,
            Scheduler::Dh => RingKind::Dh,
            Scheduler::Mh => RingKind::Mh,
            Scheduler::Lc => RingKind::Lc,
            Scheduler::Wlc => RingKind::Wlc,
            Scheduler::Sed => RingKind::Sed,
            Scheduler::Nq => RingKind::Nq,
            other => {
                errors.push(at(format!(
                    "virtual_server {name}: lb_algo {} is not supported yet (supported: rr, wrr, lc, wlc, sh, dh, \
                     sed, nq, mh)",
                    other.name()
                )));
                continue;
            }
        };
        let conn_based = matches!(kind, RingKind::Lc | RingKind::Wlc | RingKind::Sed | RingKind::Nq);
        if conn_based && vs.real_servers.len() > lvs_common::maps::MAX_CONN_DESTS as usize {
            errors.push(at(format!(
                "virtual_server {name}: lb_algo {} compares at most {} real servers per new connection; this \
                 service has {}",
                kind.name(),
                lvs_common::maps::MAX_CONN_DESTS,
                vs.real_servers.len()
            )));
            continue;
        }
        let proto = match vs.protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => {
                errors.push(at(format!("virtual_server {name}: protocol SCTP is not supported")));
                continue;
            }
        };
        let persistence = match vs.persistence_timeout {
            None | Some(0) => None,
            Some(timeout) => match granularity_mask(vs.addr, vs.persistence_granularity.as_deref()) {
                Some(mask) => Some(Persistence { timeout, mask }),
                None => {
                    errors.push(at(format!(
                        "virtual_server {name}: persistence_granularity {:?} does not fit the service's address family",
                        vs.persistence_granularity.as_deref().unwrap_or_default()
                    )));
                    continue;
                }
            },
        };
        let sorry = match vs.sorry_server {
            None => None,
            Some((addr, port)) if addr.is_ipv4() == vs.addr.is_ipv4() => {
                if port != vs.port {
                    warnings.push(at(format!(
                        "sorry_server {}: direct routing keeps the virtual server's port {}",
                        socket(addr, port),
                        vs.port
                    )));
                }
                Some(PlannedDest { addr, port: vs.port, weight: 1 })
            }
            Some((addr, _)) => {
                errors
                    .push(at(format!("sorry_server {addr}: its address family differs from virtual_server {name}'s")));
                continue;
            }
        };
        let mut dests = Vec::new();
        for rs in &vs.real_servers {
            let rat = |message: String| Diagnostic { location: rs.location.clone(), message };
            if rs.addr.is_ipv4() != vs.addr.is_ipv4() {
                errors.push(rat(format!(
                    "real_server {}: its address family differs from virtual_server {name}'s; direct routing \
                     cannot translate between IPv4 and IPv6",
                    rs.addr
                )));
                continue;
            }
            if rs.port != vs.port {
                // IPVS does the same: DR only rewrites the MAC, the packet keeps its port.
                warnings.push(rat(format!(
                    "real_server {}: direct routing keeps the virtual server's port {}; the real server must listen on it",
                    socket(rs.addr, rs.port),
                    vs.port
                )));
            }
            dests.push(PlannedDest { addr: rs.addr, port: vs.port, weight: rs.weight });
        }
        services.push(PlannedService {
            key: ServiceKey::new(vs.addr, vs.port, proto),
            kind,
            dests,
            persistence,
            sorry,
        });
    }
    // Health-check scripts that cannot run are config errors, as with keepalived -t.
    errors.extend(crate::check::validate(config));
    if errors.is_empty() { Ok((Plan { services, ipvs }, warnings)) } else { Err(ConfigErrors(errors)) }
}

/// The client-address mask of `persistence_granularity` (IPv4: a netmask, default
/// 255.255.255.255; IPv6: a prefix length, default 128), as wire-order words.
pub(crate) fn granularity_mask(vip: IpAddr, granularity: Option<&str>) -> Option<[u32; 4]> {
    match vip {
        IpAddr::V4(_) => {
            let mask: std::net::Ipv4Addr = granularity.unwrap_or("255.255.255.255").parse().ok()?;
            Some([u32::from_ne_bytes(mask.octets()), 0, 0, 0])
        }
        IpAddr::V6(_) => {
            let len: u32 = granularity.unwrap_or("128").trim_start_matches('/').parse().ok()?;
            let bits = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
            Some(lvs_common::maps::v6_words(std::net::Ipv6Addr::from(bits)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_str;

    fn plan_of(text: &str) -> Result<(Plan, Vec<Diagnostic>), ConfigErrors> {
        plan(&parse_str(text, Path::new("test.conf")).expect("parses").config)
    }

    #[test]
    fn dr_service_becomes_a_plan() {
        let (p, warnings) = plan_of(
            "virtual_server 10.0.0.100 80 {\n lb_algo wrr\n lb_kind DR\n protocol TCP\n\
             real_server 10.0.0.11 80 { weight 3 }\n real_server 10.0.0.12 80 {\n weight 1\n }\n}\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p.services.len(), 1);
        let s = &p.services[0];
        assert_eq!(s.key, ServiceKey::new([10, 0, 0, 100].into(), 80, IPPROTO_TCP));
        assert_eq!(s.kind, RingKind::Wrr);
        assert_eq!(
            s.dests,
            [
                PlannedDest { addr: [10, 0, 0, 11].into(), port: 80, weight: 3 },
                PlannedDest { addr: [10, 0, 0, 12].into(), port: 80, weight: 1 },
            ]
        );
        assert_eq!(p.real_server_addrs().len(), 2);
    }

    #[test]
    fn unsupported_features_are_errors_with_locations() {
        let err = plan_of(
            "virtual_server 10.0.0.1 80 {\n lb_kind NAT\n real_server fd00::3 80 {\n }\n}\nvirtual_server 10.0.0.2 80 {\n lb_kind DR\n lb_algo lblc\n}\n\
             virtual_server fd00::1 80 {\n lb_kind DR\n lb_algo rr\n real_server 10.0.0.3 80 {\n }\n}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(text.contains("test.conf:3:") && text.contains("only with lvs_method TUN"), "{text}");
        assert!(text.contains("test.conf:6:") && text.contains("lb_algo lblc"), "{text}");
        assert!(text.contains("test.conf:13:") && text.contains("address family"), "{text}");
    }

    #[test]
    fn ipv6_services_are_planned_with_brackets_in_messages() {
        let (p, warnings) =
            plan_of("virtual_server fd00::100 80 {\n lb_kind DR\n lb_algo mh\n real_server fd00::11 8080 {\n }\n}\n")
                .unwrap();
        assert_eq!(p.services[0].key.to_string(), "TCP  [fd00::100]:80");
        assert_eq!(p.services[0].kind, RingKind::Mh);
        assert!(warnings[0].message.contains("[fd00::11]:8080"), "{warnings:?}");
    }

    #[test]
    fn port_mismatch_warns() {
        let (p, warnings) =
            plan_of("virtual_server 10.0.0.1 80 {\n lb_kind DR\n lb_algo rr\n real_server 10.0.0.2 8080 {\n }\n}\n")
                .unwrap();
        assert_eq!(p.services[0].dests[0].port, 80);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn persistence_and_sorry_server_are_planned() {
        let (p, _) = plan_of(
            "virtual_server 10.0.0.1 80 {\n lb_kind DR\n lb_algo rr\n persistence_timeout 50\n\
             persistence_granularity 255.255.255.0\n sorry_server 10.0.0.9 80\n real_server 10.0.0.2 80 {\n }\n}\n\
             virtual_server fd00::1 80 {\n lb_kind DR\n lb_algo rr\n persistence_timeout\n\
             persistence_granularity 64\n real_server fd00::2 80 {\n }\n}\n",
        )
        .unwrap();
        let v4 = &p.services[0];
        assert_eq!(
            v4.persistence,
            Some(Persistence { timeout: 50, mask: [u32::from_ne_bytes([255, 255, 255, 0]), 0, 0, 0] })
        );
        assert_eq!(v4.sorry, Some(PlannedDest { addr: [10, 0, 0, 9].into(), port: 80, weight: 1 }));
        assert!(p.real_server_addrs().contains(&[10, 0, 0, 9].into()), "the sorry server's MAC is tracked too");
        let v6 = p.services[1].persistence.unwrap();
        assert_eq!(v6.timeout, 360, "a bare persistence_timeout is keepalived's 360 s");
        assert_eq!(v6.mask, [u32::MAX, u32::MAX, 0, 0]);
    }
}
