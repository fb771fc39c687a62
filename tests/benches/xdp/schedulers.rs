//! Per scheduler, with the flow table full: an established flow (repeat mode, wall clock, as
//! the figures above) and a new flow (one call per distinct 5-tuple), each beside the MAC-swap
//! floor measured the same way, interleaved with it.
//!
//! The flow table (`FLOWS_V4` at its default size, for 2^20 flows in 2^21 slots) is filled
//! with `fill` flows first, through the agent's mapping of it and the same placement the
//! program uses (`lvs_common::flowtab`), each flow on a live destination of one of the
//! services. Each new flow measured then finds its two buckets as a table holding a million
//! flows has them.

use std::{collections::BTreeMap, net::Ipv4Addr};

use std::net::{IpAddr, SocketAddr};

use aya::programs::Xdp;
use lvs_agent::{dataplane::Dataplane, desired::RingKind};
use lvs_common::{
    flowtab,
    maps::{FlowKeyV4, IPPROTO_TCP},
    sched_ext::tcp_state::{self, Timeouts},
};

use super::{Opts, median, per_packet, run, tcp_from};

/// The schedulers measured (every `RingKind` there is).
pub const KINDS: &[RingKind] = &[
    RingKind::Rr,
    RingKind::Wrr,
    RingKind::Sh,
    RingKind::Dh,
    RingKind::Mh,
    RingKind::Lc,
    RingKind::Wlc,
    RingKind::Sed,
    RingKind::Nq,
];

/// The VIP of the k-th scheduler's service.
pub fn vip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1, 100 + u8::try_from(k).expect("few schedulers"))
}

/// A real server of the k-th scheduler's service.
pub fn real(k: usize, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 2 + u8::try_from(k).expect("few schedulers"), 10 + n)
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

pub struct SchedFigure {
    pub name: &'static str,
    /// ns/packet of an established flow: median, min, max over the runs.
    pub est: (f64, f64, f64),
    /// ns of a new flow, one call each: median, min, max of the per-run medians.
    pub new: (f64, f64, f64),
    /// The MAC-swap floor measured one call per frame beside this scheduler's new flows.
    pub new_floor: (f64, f64, f64),
    /// `new_flow_bound` on the same frames, one call each: the bound on a new flow.
    pub bound: (f64, f64, f64),
}

pub struct Report {
    pub entries: usize,
    pub fill_secs: f64,
    /// The MAC-swap floor in repeat mode, interleaved with the established flows.
    pub floor: (f64, f64, f64),
    pub figures: Vec<SchedFigure>,
}

/// Fills the flow table with `total` flows (keys no measured frame uses), spread over the
/// services; returns the flows it holds and how many live flows the fill evicted.
fn fill(dp: &Dataplane, total: usize, flows: &[u32], vips: &[Ipv4Addr]) -> (usize, usize) {
    let table = dp.maps_ref().flow_table_v4();
    let t = Timeouts::DEFAULT;
    // The program's clock stands at 0 here (no agent publishes it): the fill's flows are as
    // fresh as the measured ones.
    let now = 0;
    let mut evicted = 0;
    for i in 0..total {
        let i32_ = u32::try_from(i).expect("fewer than 2^32 flows");
        // 172.16.0.0/12 as client addresses: no measured frame comes from there.
        let saddr = u32::from_ne_bytes(Ipv4Addr::from(0xac10_0000 | (i32_ & 0x000f_ffff)).octets());
        let k = i % vips.len();
        let key = FlowKeyV4 {
            saddr,
            daddr: u32::from_ne_bytes(vips[k].octets()),
            sport: (1024 + (i32_ >> 20) as u16).to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        evicted += usize::from(table.insert_v4(key, flows[k], now, &t));
    }
    (dp.maps_ref().flow_count(), evicted)
}

pub fn measure(dp: &mut Dataplane, swap: &Xdp, lookup: &Xdp, o: &Opts) -> Report {
    // One flow per service, scheduled by the program itself: the fill copies its value (a live
    // destination slot and its generation), and the same frames serve as established flows.
    let established: Vec<Vec<u8>> = (0..KINDS.len()).map(|k| tcp_from(CLIENT, 40000, vip(k), false)).collect();
    for (k, est) in established.iter().enumerate() {
        assert_eq!(run(dp.program(), &tcp_from(CLIENT, 40000, vip(k), true), 1).0, 3, "SYN to {}", vip(k));
        let (a, _, _, out) = run(dp.program(), est, 1);
        assert_eq!(a, 3, "established flow to {}: XDP_TX", vip(k));
        assert_eq!(&out[12..], &est[12..]);
    }
    let by_vip: BTreeMap<IpAddr, u32> = dp
        .maps_ref()
        .connections(0)
        .into_iter()
        .filter(|(client, ..)| *client == SocketAddr::new(CLIENT.into(), 40000))
        .map(|(_, vip, _, e)| (vip.ip(), flowtab::pack(e.flow.dest, e.flow.generation, tcp_state::ESTABLISHED)))
        .collect();
    let vips: Vec<Ipv4Addr> = (0..KINDS.len()).map(vip).collect();
    let flows: Vec<u32> = vips.iter().map(|v| by_vip[&IpAddr::V4(*v)]).collect();

    let start = std::time::Instant::now();
    let (entries, evicted) = fill(dp, o.fill, &flows, &vips);
    assert!(evicted <= o.fill / 10_000, "the fill evicted {evicted} live flows");
    let fill_secs = start.elapsed().as_secs_f64();
    // Established flows still forwarded after the fill (their entries may have been evicted
    // from CPU 0's list by then; the program would reschedule them, equally valid).
    for f in &established {
        assert_eq!(run(dp.program(), f, 1).0, 3);
    }

    // Established: per run, the floor then every scheduler, in repeat mode.
    let mut floor_runs = Vec::new();
    let mut est_runs = vec![Vec::new(); KINDS.len()];
    for _ in 0..o.runs {
        floor_runs.push(per_packet(swap, &established[0], o.repeat).0);
        for (k, f) in established.iter().enumerate() {
            est_runs[k].push(per_packet(dp.program(), f, o.repeat).0);
        }
    }

    // New flows: one call per distinct 5-tuple (a distinct client address each), the floor and
    // the bound on the same frame right after it.
    let mut new_runs = vec![Vec::new(); KINDS.len()];
    let mut new_floor_runs = vec![Vec::new(); KINDS.len()];
    let mut bound_runs = vec![Vec::new(); KINDS.len()];
    for run_no in 0..o.runs {
        for k in 0..KINDS.len() {
            let mut lvs_ns = Vec::with_capacity(usize::from(o.new_flows));
            let mut floor_ns = Vec::with_capacity(usize::from(o.new_flows));
            let mut bound_ns = Vec::with_capacity(usize::from(o.new_flows));
            for i in 0..o.new_flows {
                let [hi, lo] = i.to_be_bytes();
                let src = Ipv4Addr::new(10, 200 + u8::try_from(run_no).expect("few runs"), hi, lo);
                let f = tcp_from(src, 1024, vip(k), true);
                let (a, ns, _, _) = run(dp.program(), &f, 1);
                assert_eq!(a, 3, "new flow to {}: XDP_TX", vip(k));
                lvs_ns.push(ns);
                floor_ns.push(run(swap, &f, 1).1);
                let (a, ns, _, _) = run(lookup, &f, 1);
                assert_eq!(a, 3, "the bound forwards");
                bound_ns.push(ns);
            }
            new_runs[k].push(median(lvs_ns).0);
            new_floor_runs[k].push(median(floor_ns).0);
            bound_runs[k].push(median(bound_ns).0);
        }
    }

    let figures = KINDS
        .iter()
        .enumerate()
        .map(|(k, kind)| SchedFigure {
            name: kind.name(),
            est: median(est_runs[k].clone()),
            new: median(new_runs[k].clone()),
            new_floor: median(new_floor_runs[k].clone()),
            bound: median(bound_runs[k].clone()),
        })
        .collect();
    Report { entries, fill_secs, floor: median(floor_runs), figures }
}

/// ns per dependent random read in a region of `mib` MiB (a pointer chase over a random cycle
/// through its cache lines): what a lookup in a flow table of that size pays when the flow is
/// new, since a new flow's entry is, by definition, not in any cache.
pub fn memory_latency_ns(mib: usize, reads: usize) -> f64 {
    const LINE: usize = 64 / std::mem::size_of::<usize>();
    let lines = mib * 1024 * 1024 / 64;
    // A random cyclic order of the lines (Sattolo's shuffle, xorshift random numbers).
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % i as u64) as usize);
    }
    let mut next = vec![0usize; lines * LINE];
    for w in order.windows(2) {
        next[w[0] * LINE] = w[1] * LINE;
    }
    next[order[lines - 1] * LINE] = order[0] * LINE;
    let mut p = 0;
    let start = std::time::Instant::now();
    for _ in 0..reads {
        p = next[p];
    }
    let ns = start.elapsed().as_nanos() as f64 / reads as f64;
    std::hint::black_box(p);
    ns
}
