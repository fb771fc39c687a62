//! Per scheduler, with the flow table full: an established flow (repeat mode, wall clock, as
//! the figures above) and a new flow (one call per distinct 5-tuple), each beside the MAC-swap
//! floor measured the same way, interleaved with it.
//!
//! The flow table (`FLOWS_V4`, 2^20 slots) is filled from userspace with `fill` entries first.
//! `lvs_agent::dataplane::Maps` only reads it, so the bench opens the map by its kernel id
//! (found through the program's map ids). It is an LRU hash with one LRU list per CPU
//! (`BPF_F_NO_COMMON_LRU`), each owning `max_entries / possible CPUs` slots, and an entry
//! goes to the list of the CPU that inserts it: so the entries are inserted half from each
//! CPU, otherwise CPU 0's list (2^19 slots here) would evict them and the table would never
//! hold a million. Once CPU 0's list is full, each new flow measured evicts the oldest entry
//! of that list: the steady state of a full table.

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::{
    maps::{HashMap, Map, MapData, MapInfo},
    programs::Xdp,
};
use lvs_agent::{dataplane::Dataplane, desired::RingKind};
use lvs_common::maps::{FlowKeyV4, IPPROTO_TCP};

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
}

pub struct Report {
    pub entries: usize,
    pub fill_secs: f64,
    /// The MAC-swap floor in repeat mode, interleaved with the established flows.
    pub floor: (f64, f64, f64),
    pub figures: Vec<SchedFigure>,
}

/// `FLOWS_V4`, its value type (whatever `Maps::flows` yields) left to the caller.
fn flows_map<V: aya::Pod>(dp: &mut Dataplane) -> HashMap<MapData, FlowKeyV4, V> {
    let ids = dp.program().info().expect("program info").map_ids().expect("map ids").expect("map ids supported");
    let id = ids
        .into_iter()
        .find(|&id| MapInfo::from_id(id).is_ok_and(|i| i.name_as_str() == Some(lvs_common::maps::names::FLOWS_V4)))
        .expect("the program uses FLOWS_V4");
    let map = Map::from_map_data(MapData::from_id(id).expect("opening FLOWS_V4")).expect("FLOWS_V4 type");
    HashMap::try_from(map).expect("FLOWS_V4 as a hash map")
}

/// Fills the flow table up to `total` entries (keys no measured frame uses), each flow pinned
/// to a live destination of one of the services; half inserted from each CPU.
fn fill<V: aya::Pod + Send + Sync>(dp: &mut Dataplane, total: usize, flows: &[V], vips: &[Ipv4Addr]) -> usize {
    // Every entry so far was inserted by the program on CPU 0.
    let existing = dp.maps_ref().flows().count();
    let per_cpu = [(total / 2).saturating_sub(existing), total - total / 2];
    std::thread::scope(|s| {
        let mut first = 0usize;
        for (cpu, &n) in per_cpu.iter().enumerate() {
            let mut map = flows_map::<V>(dp);
            let range = first..first + n;
            first += n;
            s.spawn(move || {
                lvs_tests::process::pin_to_cpu(cpu);
                for i in range {
                    let i32_ = u32::try_from(i).expect("fewer than 2^32 flows");
                    // 172.16.0.0/12 as client addresses: no measured frame comes from there.
                    let saddr = Ipv4Addr::from(0xac10_0000 | (i32_ & 0x000f_ffff));
                    let k = i % vips.len();
                    let key = FlowKeyV4 {
                        saddr: u32::from_ne_bytes(saddr.octets()),
                        daddr: u32::from_ne_bytes(vips[k].octets()),
                        sport: (1024 + (i32_ >> 20) as u16).to_be(),
                        dport: 80u16.to_be(),
                        proto: IPPROTO_TCP,
                        _pad: [0; 3],
                    };
                    map.insert(key, flows[k], 0).expect("inserting a flow");
                }
            });
        }
    });
    lvs_tests::process::pin_to_cpu(0);
    dp.maps_ref().flows().count()
}

pub fn measure(dp: &mut Dataplane, swap: &Xdp, o: &Opts) -> Report {
    // One flow per service, scheduled by the program itself: the fill copies its value (a live
    // destination slot and its generation), and the same frames serve as established flows.
    let established: Vec<Vec<u8>> = (0..KINDS.len()).map(|k| tcp_from(CLIENT, 40000, vip(k), false)).collect();
    for (k, est) in established.iter().enumerate() {
        assert_eq!(run(dp.program(), &tcp_from(CLIENT, 40000, vip(k), true), 1).0, 3, "SYN to {}", vip(k));
        let (a, _, _, out) = run(dp.program(), est, 1);
        assert_eq!(a, 3, "established flow to {}: XDP_TX", vip(k));
        assert_eq!(&out[12..], &est[12..]);
    }
    let by_vip: BTreeMap<u32, _> = dp
        .maps_ref()
        .flows()
        .map(|r| r.expect("reading the flow table"))
        .filter(|(key, _)| key.saddr == u32::from_ne_bytes(CLIENT.octets()) && key.sport == 40000u16.to_be())
        .map(|(key, flow)| (key.daddr, flow))
        .collect();
    let vips: Vec<Ipv4Addr> = (0..KINDS.len()).map(vip).collect();
    let flows: Vec<_> = vips.iter().map(|v| by_vip[&u32::from_ne_bytes(v.octets())]).collect();

    let start = std::time::Instant::now();
    let entries = fill(dp, o.fill, &flows, &vips);
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

    // New flows: one call per distinct 5-tuple (a distinct client address each), the floor on
    // the same frame right after it.
    let mut new_runs = vec![Vec::new(); KINDS.len()];
    let mut new_floor_runs = vec![Vec::new(); KINDS.len()];
    for run_no in 0..o.runs {
        for k in 0..KINDS.len() {
            let mut lvs_ns = Vec::with_capacity(usize::from(o.new_flows));
            let mut floor_ns = Vec::with_capacity(usize::from(o.new_flows));
            for i in 0..o.new_flows {
                let [hi, lo] = i.to_be_bytes();
                let src = Ipv4Addr::new(10, 200 + u8::try_from(run_no).expect("few runs"), hi, lo);
                let f = tcp_from(src, 1024, vip(k), true);
                let (a, ns, _, _) = run(dp.program(), &f, 1);
                assert_eq!(a, 3, "new flow to {}: XDP_TX", vip(k));
                lvs_ns.push(ns);
                floor_ns.push(run(swap, &f, 1).1);
            }
            new_runs[k].push(median(lvs_ns).0);
            new_floor_runs[k].push(median(floor_ns).0);
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
