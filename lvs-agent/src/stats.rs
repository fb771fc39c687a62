//! Counters of the installed services, laid out as `ipvsadm -Ln --stats` lays them out, so
//! that operators read them with the habits they have.

use std::{fmt::Write as _, net::IpAddr};

use lvs_common::maps::DestStats;

use crate::{
    dataplane::{DataplaneError, Maps},
    desired::{ServiceKey, socket},
    reconcile::Reconciler,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCounters {
    pub key: ServiceKey,
    pub totals: DestStats,
    /// Packets dropped because the service had no usable real server.
    pub dropped_packets: u64,
    pub dests: Vec<DestCounters>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestCounters {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub stats: DestStats,
}

/// Reads every installed service's counters (summed over CPUs).
pub fn snapshot(rec: &Reconciler, maps: &Maps) -> Result<Vec<ServiceCounters>, DataplaneError> {
    let mut out = Vec::new();
    for s in rec.services() {
        let mut dests = Vec::new();
        let mut totals = DestStats::default();
        for d in &s.dests {
            let stats = maps.dest_stats(d.slot)?;
            totals.packets += stats.packets;
            totals.bytes += stats.bytes;
            totals.conns += stats.conns;
            dests.push(DestCounters { addr: d.addr, port: d.port, weight: d.weight, stats });
        }
        let dropped = maps.service_stats(s.index)?;
        totals.packets += dropped.dropped_packets;
        totals.bytes += dropped.dropped_bytes;
        out.push(ServiceCounters { key: s.key, totals, dropped_packets: dropped.dropped_packets, dests });
    }
    Ok(out)
}

/// ipvsadm's `print_largenum`: exact below 10^8, then K, M, G.
fn largenum(n: u64) -> String {
    match n {
        0..100_000_000 => format!("{n:8}"),
        100_000_000..1_000_000_000 => format!("{:7}K", n / 1_000),
        1_000_000_000..1_000_000_000_000 => format!("{:7}M", n / 1_000_000),
        _ => format!("{:7}G", n / 1_000_000_000),
    }
}

/// One line of the table: the name, then Conns InPkts OutPkts InBytes OutBytes.
fn row(s: &mut String, name: &str, st: &DestStats) {
    let out = largenum(0);
    let _ =
        writeln!(s, "{name:<33} {} {} {out} {} {out}", largenum(st.conns), largenum(st.packets), largenum(st.bytes));
}

/// `ipvsadm -Ln --stats`. Out* columns are 0 by the nature of direct routing: replies go from
/// the real server to the client and never cross the director.
#[must_use]
pub fn render(services: &[ServiceCounters]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
    let _ = writeln!(s, "  -> RemoteAddress:Port");
    for svc in services {
        row(&mut s, &svc.key.to_string(), &svc.totals);
        for d in &svc.dests {
            row(&mut s, &format!("  -> {}", socket(d.addr, d.port)), &d.stats);
        }
        if svc.dropped_packets > 0 {
            let _ = writeln!(s, "  (dropped {} packets: no usable real server)", svc.dropped_packets);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_ipvsadm() {
        let svc = ServiceCounters {
            key: ServiceKey::new([10, 0, 0, 100].into(), 80, lvs_common::maps::IPPROTO_TCP),
            totals: DestStats { packets: 18000, bytes: 123_456_789_012, conns: 3000 },
            dropped_packets: 0,
            dests: vec![DestCounters {
                addr: [10, 0, 0, 11].into(),
                port: 80,
                weight: 1,
                stats: DestStats { packets: 6000, bytes: 400_000, conns: 1000 },
            }],
        };
        let text = render(&[svc]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
        assert_eq!(lines[2], "TCP  10.0.0.100:80                    3000    18000        0  123456M        0");
        assert_eq!(lines[3], "  -> 10.0.0.11:80                     1000     6000        0   400000        0");
        // Figures end under their column titles, as in ipvsadm.
        assert_eq!(lines[0].find("Conns").unwrap() + 5, lines[2].find("3000").unwrap() + 4);
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn largenum_units() {
        assert_eq!(largenum(99_999_999), "99999999");
        assert_eq!(largenum(100_000_000), " 100000K");
        assert_eq!(largenum(5_000_000_000), "   5000M");
    }
}
