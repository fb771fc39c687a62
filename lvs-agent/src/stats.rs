//! Counters of the installed services, laid out as `ipvsadm -Ln --stats` lays them out, so
//! that operators read them with the habits they have.

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, time::Duration};

use lvs_common::maps::{ConnCounts, DestStats};

use crate::{
    dataplane::{DataplaneError, Maps},
    desired::{ServiceKey, socket},
    reconcile::Reconciler,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCounters {
    pub key: ServiceKey,
    /// ipvsadm's scheduler name.
    pub scheduler: &'static str,
    /// `persistence_timeout`, if any.
    pub persistent: Option<u32>,
    /// What forwards the service: [`XDP`] or [`IPVS`] (the kernel's).
    pub forwarder: &'static str,
    /// ipvsadm's flags after `persistent N` (` mask 255.255.255.0`, ` ops`); empty for XDP.
    pub flags: String,
    pub totals: DestStats,
    /// Packets and bytes from the real servers back to clients (only IPVS NAT/TUN sees them).
    pub out: OutStats,
    /// Packets dropped because the service had no usable real server.
    pub dropped_packets: u64,
    pub dests: Vec<DestCounters>,
}

/// The forwarders of [`ServiceCounters::forwarder`].
pub const XDP: &str = "xdp";
pub const IPVS: &str = "ipvs";

/// Counters of the reply direction (ipvsadm's OutPkts, OutBytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutStats {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestCounters {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// ipvsadm's Forward column: `Route` (XDP and IPVS DR), `Masq` (NAT), `Tunnel` (TUN).
    pub forward: &'static str,
    pub stats: DestStats,
    pub out: OutStats,
    /// ActiveConn / InActConn.
    pub conns: ConnCounts,
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
            dests.push(DestCounters {
                addr: d.addr,
                port: d.port,
                weight: d.weight,
                forward: "Route",
                stats,
                out: OutStats::default(),
                conns: maps.dest_conns(d.slot)?,
            });
        }
        let dropped = maps.service_stats(s.index)?;
        totals.packets += dropped.dropped_packets;
        totals.bytes += dropped.dropped_bytes;
        out.push(ServiceCounters {
            key: s.key,
            scheduler: s.kind.name(),
            persistent: (s.value.persist_timeout > 0).then_some(s.value.persist_timeout),
            forwarder: XDP,
            flags: String::new(),
            totals,
            out: OutStats::default(),
            dropped_packets: dropped.dropped_packets,
            dests,
        });
    }
    Ok(out)
}

/// The kernel IPVS services as views show them (beside the XDP ones), with the rates of the
/// kernel's own estimator.
#[must_use]
pub fn from_ipvs(tables: &[crate::ipvs::Table]) -> (Vec<ServiceCounters>, Vec<(RateKey, Rates)>) {
    use crate::ipvs::codec;
    let mut services = Vec::new();
    let mut rates = Vec::new();
    let in_stats = |st: &codec::Stats| DestStats { packets: st.inpkts, bytes: st.inbytes, conns: st.conns };
    let out_stats = |st: &codec::Stats| OutStats { packets: st.outpkts, bytes: st.outbytes };
    // The kernel's estimator keeps bytes per second, ours bits (as ipvsadm prints them).
    let rate = |st: &codec::Stats| Rates { cps: st.cps as f64, in_pps: st.inpps as f64, in_bps: st.inbps as f64 * 8.0 };
    for t in tables {
        let Some(key) = t.key() else { continue };
        let svc = &t.service;
        let scheduler = crate::config::Scheduler::ALL
            .iter()
            .map(crate::config::Scheduler::name)
            .find(|n| *n == svc.scheduler)
            .unwrap_or("?");
        let persistent = svc.flags & codec::IP_VS_SVC_F_PERSISTENT != 0;
        // ipvsadm's print_service_entry: the mask only when it is not the full one.
        let mut flags = String::new();
        if persistent {
            match key.ip() {
                IpAddr::V4(_) if svc.netmask != u32::MAX => {
                    flags += &format!(" mask {}", std::net::Ipv4Addr::from(svc.netmask.to_ne_bytes()));
                }
                IpAddr::V6(_) if svc.netmask != 128 => flags += &format!(" mask {}", svc.netmask),
                _ => {}
            }
            if let Some(pe) = &svc.pe_name {
                flags += &format!(" pe {pe}");
            }
        }
        if svc.flags & codec::IP_VS_SVC_F_ONEPACKET != 0 {
            flags += " ops";
        }
        rates.push((RateKey::Service(key), rate(&svc.stats)));
        let dests = t
            .dests
            .iter()
            .map(|d| {
                rates.push((RateKey::Dest(key, d.addr, d.port), rate(&d.stats)));
                DestCounters {
                    addr: d.addr,
                    port: d.port,
                    weight: d.weight,
                    forward: codec::fwd_name(d.fwd),
                    stats: in_stats(&d.stats),
                    out: out_stats(&d.stats),
                    conns: ConnCounts { active: d.active_conns, inactive: d.inact_conns },
                }
            })
            .collect();
        services.push(ServiceCounters {
            key,
            scheduler,
            persistent: persistent.then_some(svc.timeout),
            forwarder: IPVS,
            flags,
            totals: in_stats(&svc.stats),
            out: out_stats(&svc.stats),
            dropped_packets: 0,
            dests,
        });
    }
    (services, rates)
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

/// `ipvsadm -Ln`: services with their scheduler, real servers with forwarding method, weight
/// and connections.
#[must_use]
pub fn render_list(services: &[ServiceCounters]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Prot LocalAddress:Port Scheduler Flags");
    let _ = writeln!(s, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn");
    for svc in services {
        let flags = svc.persistent.map(|t| format!(" persistent {t}")).unwrap_or_default();
        let _ = writeln!(s, "{} {}{flags}{}", svc.key, svc.scheduler, svc.flags);
        for d in &svc.dests {
            let name = format!("  -> {}", socket(d.addr, d.port));
            let _ = writeln!(
                s,
                "{name:<33} {:<7} {:<6} {:<10} {:<10}",
                d.forward, d.weight, d.conns.active, d.conns.inactive
            );
        }
    }
    s
}

/// One connection of the flow table, for [`render_connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub proto: u8,
    /// Seconds until it idles out.
    pub expires_in: u32,
    pub state: &'static str,
    pub client: std::net::SocketAddr,
    pub virtual_addr: std::net::SocketAddr,
    /// The real server, if its slot still holds it.
    pub real_server: Option<std::net::SocketAddr>,
}

/// `ipvsadm -Lnc`: the connection (flow) table.
#[must_use]
pub fn render_connections(conns: &[Connection]) -> String {
    let sock = |a: std::net::SocketAddr| socket(a.ip(), a.port());
    let mut s = String::from(
        "IPVS connection entries\npro expire state       source                 virtual                destination\n",
    );
    for c in conns {
        let proto = match c.proto {
            lvs_common::maps::IPPROTO_TCP => "TCP",
            lvs_common::maps::IPPROTO_UDP => "UDP",
            _ => "???",
        };
        let dest = c.real_server.map_or_else(|| "(gone)".to_string(), sock);
        let _ = writeln!(
            s,
            "{proto} {:02}:{:02}  {:<11} {:<22} {:<22} {dest}",
            c.expires_in / 60,
            c.expires_in % 60,
            c.state,
            sock(c.client),
            sock(c.virtual_addr)
        );
    }
    s
}

/// One line of the table: the name, then Conns InPkts OutPkts InBytes OutBytes.
fn row(s: &mut String, name: &str, st: &DestStats, out: &OutStats) {
    let _ = writeln!(
        s,
        "{name:<33} {} {} {} {} {}",
        largenum(st.conns),
        largenum(st.packets),
        largenum(out.packets),
        largenum(st.bytes),
        largenum(out.bytes)
    );
}

/// `ipvsadm -Ln --stats`. Out* columns are 0 for XDP services by the nature of direct
/// routing: replies go from the real server to the client and never cross the director.
#[must_use]
pub fn render(services: &[ServiceCounters]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
    let _ = writeln!(s, "  -> RemoteAddress:Port");
    for svc in services {
        row(&mut s, &svc.key.to_string(), &svc.totals, &svc.out);
        for d in &svc.dests {
            row(&mut s, &format!("  -> {}", socket(d.addr, d.port)), &d.stats, &d.out);
        }
        if svc.dropped_packets > 0 {
            let _ = writeln!(s, "  (dropped {} packets: no usable real server)", svc.dropped_packets);
        }
    }
    s
}

/// Per-second rates, as `ipvsadm -Ln --rate` shows them (Out* are 0 with direct routing).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    pub cps: f64,
    pub in_pps: f64,
    pub in_bps: f64,
}

/// What a rate is kept for: a service, or one real server of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    Service(ServiceKey),
    Dest(ServiceKey, IpAddr, u16),
}

/// IPVS's rate estimator (net/netfilter/ipvs/ip_vs_est.c): the counters are sampled every
/// [`Estimator::INTERVAL`] and each rate moves a quarter of the way to the rate of the last
/// interval (`avg += (rate - avg) / 4`), so a burst shows at once and decays over seconds.
#[derive(Debug, Default)]
pub struct Estimator {
    last: HashMap<RateKey, DestStats>,
    rates: HashMap<RateKey, Rates>,
}

impl Estimator {
    pub const INTERVAL: Duration = Duration::from_secs(2);

    /// Feeds one sample of every service's counters, `elapsed` after the previous one.
    /// Services and real servers that are gone are forgotten.
    pub fn sample(&mut self, services: &[ServiceCounters], elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let mut seen = HashMap::new();
        for svc in services {
            seen.insert(RateKey::Service(svc.key), svc.totals);
            for d in &svc.dests {
                seen.insert(RateKey::Dest(svc.key, d.addr, d.port), d.stats);
            }
        }
        for (key, now) in &seen {
            let rate = match self.last.get(key) {
                // A counter that went down was reset (a slot given to another server): start over.
                Some(prev) if now.conns >= prev.conns && now.packets >= prev.packets && now.bytes >= prev.bytes => {
                    Rates {
                        cps: (now.conns - prev.conns) as f64 / secs,
                        in_pps: (now.packets - prev.packets) as f64 / secs,
                        in_bps: (now.bytes - prev.bytes) as f64 * 8.0 / secs,
                    }
                }
                _ => continue,
            };
            let avg = self.rates.entry(*key).or_default();
            avg.cps += (rate.cps - avg.cps) / 4.0;
            avg.in_pps += (rate.in_pps - avg.in_pps) / 4.0;
            avg.in_bps += (rate.in_bps - avg.in_bps) / 4.0;
        }
        self.rates.retain(|k, _| seen.contains_key(k));
        self.last = seen;
    }

    /// An estimator that only answers `rates` (a snapshot from [`Estimator::all`]), for
    /// [`render_rates`] away from the event loop.
    #[must_use]
    pub fn from_rates(rates: impl IntoIterator<Item = (RateKey, Rates)>) -> Self {
        Self { last: HashMap::new(), rates: rates.into_iter().collect() }
    }

    /// Every rate kept.
    #[must_use]
    pub fn all(&self) -> Vec<(RateKey, Rates)> {
        self.rates.iter().map(|(k, r)| (*k, *r)).collect()
    }

    #[must_use]
    pub fn rate(&self, key: &RateKey) -> Rates {
        self.rates.get(key).copied().unwrap_or_default()
    }
}

/// `ipvsadm -Ln --rate`.
#[must_use]
pub fn render_rates(services: &[ServiceCounters], est: &Estimator) -> String {
    fn row(s: &mut String, name: &str, r: Rates) {
        let n = |v: f64| largenum(v.round() as u64);
        let _ = writeln!(s, "{name:<33} {} {} {} {} {}", n(r.cps), n(r.in_pps), n(0.0), n(r.in_bps), n(0.0));
    }
    let mut s = String::new();
    let _ = writeln!(s, "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS");
    let _ = writeln!(s, "  -> RemoteAddress:Port");
    for svc in services {
        row(&mut s, &svc.key.to_string(), est.rate(&RateKey::Service(svc.key)));
        for d in &svc.dests {
            row(&mut s, &format!("  -> {}", socket(d.addr, d.port)), est.rate(&RateKey::Dest(svc.key, d.addr, d.port)));
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
            scheduler: "wrr",
            persistent: None,
            forwarder: XDP,
            flags: String::new(),
            totals: DestStats { packets: 18000, bytes: 123_456_789_012, conns: 3000 },
            out: OutStats::default(),
            dropped_packets: 0,
            dests: vec![DestCounters {
                addr: [10, 0, 0, 11].into(),
                port: 80,
                weight: 1,
                forward: "Route",
                stats: DestStats { packets: 6000, bytes: 400_000, conns: 1000 },
                out: OutStats::default(),
                conns: ConnCounts { active: 3, inactive: 997 },
            }],
        };
        let text = render(std::slice::from_ref(&svc));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
        assert_eq!(lines[2], "TCP  10.0.0.100:80                    3000    18000        0  123456M        0");
        assert_eq!(lines[3], "  -> 10.0.0.11:80                     1000     6000        0   400000        0");
        // Figures end under their column titles, as in ipvsadm.
        assert_eq!(lines[0].find("Conns").unwrap() + 5, lines[2].find("3000").unwrap() + 4);
        assert_eq!(lines.len(), 4);
        let list = render_list(&[svc]);
        assert_eq!(list.lines().nth(2), Some("TCP  10.0.0.100:80 wrr"));
        assert_eq!(list.lines().nth(3), Some("  -> 10.0.0.11:80                 Route   1      3          997       "));
    }

    /// Kernel IPVS services render as ipvsadm renders them: Forward column, mask, Out* counters.
    #[test]
    fn kernel_ipvs_services_render_like_ipvsadm() {
        use crate::ipvs::{Dest, Service, ServiceId, Stats, Table, codec};
        let mut d = Dest::new([10, 7, 1, 2].into(), 8080, codec::IP_VS_CONN_F_MASQ, 3);
        (d.active_conns, d.inact_conns) = (1, 4);
        d.stats = Stats {
            conns: 5,
            inpkts: 35,
            outpkts: 25,
            inbytes: 2225,
            outbytes: 2395,
            cps: 1,
            inbps: 100,
            ..Stats::default()
        };
        let mut t = Table {
            service: Service {
                id: ServiceId::Addr { protocol: 17, addr: [10, 7, 0, 100].into(), port: 53 },
                scheduler: "wlc".into(),
                flags: codec::IP_VS_SVC_F_PERSISTENT,
                timeout: 120,
                netmask: u32::from_ne_bytes([255, 255, 255, 0]),
                pe_name: None,
                stats: d.stats,
            },
            dests: vec![d],
        };
        let mut tun = Dest::new([10, 7, 3, 2].into(), 80, codec::IP_VS_CONN_F_TUNNEL, 1);
        tun.weight = 0;
        t.dests.push(tun);
        let (services, rates) = from_ipvs(&[t]);
        assert_eq!(services[0].forwarder, IPVS);
        let list = render_list(&services);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines[2], "UDP  10.7.0.100:53 wlc persistent 120 mask 255.255.255.0");
        assert_eq!(lines[3], "  -> 10.7.1.2:8080                Masq    3      1          4         ");
        assert_eq!(lines[4], "  -> 10.7.3.2:80                  Tunnel  0      0          0         ");
        let stats = render(&services);
        assert_eq!(
            stats.lines().nth(3),
            Some("  -> 10.7.1.2:8080                       5       35       25     2225     2395")
        );
        let key = services[0].key;
        let r = rates.iter().find(|(k, _)| *k == RateKey::Dest(key, [10, 7, 1, 2].into(), 8080)).unwrap().1;
        assert_eq!(r, Rates { cps: 1.0, in_pps: 0.0, in_bps: 800.0 }, "the kernel's bytes/s as bits/s");
    }

    fn one(conns: u64, packets: u64, bytes: u64) -> Vec<ServiceCounters> {
        let key = ServiceKey::new([10, 0, 0, 100].into(), 80, lvs_common::maps::IPPROTO_TCP);
        let stats = DestStats { packets, bytes, conns };
        vec![ServiceCounters {
            key,
            scheduler: "rr",
            persistent: None,
            forwarder: XDP,
            flags: String::new(),
            totals: stats,
            out: OutStats::default(),
            dropped_packets: 0,
            dests: vec![DestCounters {
                addr: [10, 0, 0, 11].into(),
                port: 80,
                weight: 1,
                forward: "Route",
                stats,
                out: OutStats::default(),
                conns: ConnCounts::default(),
            }],
        }]
    }

    #[test]
    fn rates_move_a_quarter_of_the_way_each_interval() {
        let mut est = Estimator::default();
        let two = Estimator::INTERVAL;
        est.sample(&one(0, 0, 0), two);
        // 400 connections, 4000 packets, 400000 bytes in 2 s: 200/s, 2000/s, 1.6 Mbit/s.
        est.sample(&one(400, 4000, 400_000), two);
        let key = RateKey::Service(one(0, 0, 0)[0].key);
        assert_eq!(est.rate(&key), Rates { cps: 50.0, in_pps: 500.0, in_bps: 400_000.0 });
        est.sample(&one(800, 8000, 800_000), two);
        assert_eq!(est.rate(&key).cps, 87.5);
        // Traffic stops: the rate decays, it does not drop to 0 at once.
        est.sample(&one(800, 8000, 800_000), two);
        assert!((est.rate(&key).cps - 65.625).abs() < 1e-9);
        let text = render_rates(&one(800, 8000, 800_000), &est);
        assert_eq!(
            text.lines().nth(2).unwrap(),
            "TCP  10.0.0.100:80                      66      656        0   525000        0"
        );
        // A service that disappears is forgotten.
        est.sample(&[], two);
        assert_eq!(est.rate(&key), Rates::default());
    }

    #[test]
    fn connections_render_like_ipvsadm_lnc() {
        let c = Connection {
            proto: lvs_common::maps::IPPROTO_TCP,
            expires_in: 899,
            state: "ESTABLISHED",
            client: "10.77.0.10:41000".parse().unwrap(),
            virtual_addr: "10.77.0.100:80".parse().unwrap(),
            real_server: Some("10.77.0.11:80".parse().unwrap()),
        };
        let text = render_connections(&[c]);
        assert_eq!(
            text.lines().nth(2),
            Some("TCP 14:59  ESTABLISHED 10.77.0.10:41000       10.77.0.100:80         10.77.0.11:80")
        );
    }

    #[test]
    fn largenum_units() {
        assert_eq!(largenum(99_999_999), "99999999");
        assert_eq!(largenum(100_000_000), " 100000K");
        assert_eq!(largenum(5_000_000_000), "   5000M");
    }
}
