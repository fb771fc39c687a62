//! From the operator's config to the forwarding plan of the XDP data plane.
//!
//! The plan is what the config asks for, checked against what this data plane can do. Real
//! server MACs are not part of it: they come and go at run time and the reconciler joins them in.

use std::net::{IpAddr, Ipv4Addr};

use lvs_common::maps::{IPPROTO_TCP, IPPROTO_UDP, ServiceKeyV4};

use crate::config::{Config, ConfigErrors, Diagnostic, LbKind, Protocol, Scheduler};

/// How a service spreads new flows over its real servers (both walk a ring, see
/// `lvs_common::sched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    Rr,
    Wrr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    pub key: ServiceKeyV4,
    pub kind: RingKind,
    pub dests: Vec<PlannedDest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDest {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub services: Vec<PlannedService>,
}

impl Plan {
    /// Every real server address, once each, in config order.
    #[must_use]
    pub fn real_server_addrs(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for d in self.services.iter().flat_map(|s| &s.dests) {
            if !out.contains(&d.addr) {
                out.push(d.addr);
            }
        }
        out
    }
}

/// Checks the config against what the XDP data plane does and builds the plan. Every problem is
/// reported, each at its file:line:column; warnings are for what is accepted but has no effect.
pub fn plan(config: &Config) -> Result<(Plan, Vec<Diagnostic>), ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut services = Vec::new();
    for vs in &config.virtual_servers {
        let at = |message: String| Diagnostic { location: vs.location.clone(), message };
        let IpAddr::V4(vip) = vs.addr else {
            errors.push(at(format!("virtual_server {}: IPv6 services are not supported yet", vs.addr)));
            continue;
        };
        if vs.kind != LbKind::Dr {
            errors.push(at(format!(
                "virtual_server {vip} {}: lb_kind {} needs the kernel IPVS fallback, which is not \
                 implemented yet; only lb_kind DR is forwarded (by XDP)",
                vs.port,
                match vs.kind {
                    LbKind::Nat => "NAT",
                    LbKind::Tun => "TUN",
                    LbKind::Dr => "DR",
                }
            )));
            continue;
        }
        let kind = match vs.scheduler {
            Scheduler::Rr => RingKind::Rr,
            Scheduler::Wrr => RingKind::Wrr,
            other => {
                errors.push(at(format!(
                    "virtual_server {vip} {}: lb_algo {} is not supported yet (supported: rr, wrr)",
                    vs.port,
                    other.name()
                )));
                continue;
            }
        };
        let proto = match vs.protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => {
                errors.push(at(format!("virtual_server {vip} {}: protocol SCTP is not supported", vs.port)));
                continue;
            }
        };
        if vs.persistence_timeout.is_some() {
            warnings.push(at(
                "persistence_timeout is not implemented yet; clients are not pinned across connections".into()
            ));
        }
        if vs.sorry_server.is_some() {
            warnings.push(at("sorry_server is not implemented yet; ignored".into()));
        }
        let mut dests = Vec::new();
        for rs in &vs.real_servers {
            let rat = |message: String| Diagnostic { location: rs.location.clone(), message };
            let IpAddr::V4(addr) = rs.addr else {
                errors.push(rat(format!(
                    "real_server {}: an IPv6 real server in an IPv4 service; direct routing cannot translate between families",
                    rs.addr
                )));
                continue;
            };
            if rs.port != vs.port {
                // IPVS does the same: DR only rewrites the MAC, the packet keeps its port.
                warnings.push(rat(format!(
                    "real_server {addr} {}: direct routing keeps the virtual server's port {}; the real server must listen on it",
                    rs.port, vs.port
                )));
            }
            dests.push(PlannedDest { addr, port: vs.port, weight: rs.weight });
        }
        services.push(PlannedService { key: ServiceKeyV4::new(vip, vs.port, proto), kind, dests });
    }
    if errors.is_empty() { Ok((Plan { services }, warnings)) } else { Err(ConfigErrors(errors)) }
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
        assert_eq!(s.key, ServiceKeyV4::new(Ipv4Addr::new(10, 0, 0, 100), 80, IPPROTO_TCP));
        assert_eq!(s.kind, RingKind::Wrr);
        assert_eq!(
            s.dests,
            [
                PlannedDest { addr: Ipv4Addr::new(10, 0, 0, 11), port: 80, weight: 3 },
                PlannedDest { addr: Ipv4Addr::new(10, 0, 0, 12), port: 80, weight: 1 },
            ]
        );
        assert_eq!(p.real_server_addrs().len(), 2);
    }

    #[test]
    fn unsupported_features_are_errors_with_locations() {
        let err = plan_of(
            "virtual_server 10.0.0.1 80 {\n lb_kind NAT\n}\nvirtual_server 10.0.0.2 80 {\n lb_kind DR\n lb_algo sh\n}\n\
             virtual_server fd00::1 80 {\n lb_kind DR\n lb_algo rr\n}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(text.contains("test.conf:1:") && text.contains("lb_kind NAT"), "{text}");
        assert!(text.contains("test.conf:4:") && text.contains("lb_algo sh"), "{text}");
        assert!(text.contains("test.conf:8:") && text.contains("IPv6"), "{text}");
    }

    #[test]
    fn port_mismatch_and_persistence_warn() {
        let (p, warnings) = plan_of(
            "virtual_server 10.0.0.1 80 {\n lb_kind DR\n lb_algo rr\n persistence_timeout 50\n\
             real_server 10.0.0.2 8080 {\n }\n}\n",
        )
        .unwrap();
        assert_eq!(p.services[0].dests[0].port, 80);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }
}
