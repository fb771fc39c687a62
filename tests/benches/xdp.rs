//! `cargo xtask bench`: the XDP program's cost per packet under BPF_PROG_TEST_RUN, each figure
//! next to two floor programs measured in the same run (the machines are shared and noisy, so
//! only ratios measured side by side mean anything):
//! - `floor_drop` reads the Ethernet header and drops: the cost of running any XDP program;
//! - `floor_swap` swaps the MACs and returns XDP_TX: the least any XDP forwarder does;
//! - `new_flow_bound` (`lvs-bound`) reads the 5-tuple and the two buckets lvs's flow table
//!   would hold that flow in (a table of the same size), then swaps: the least a forwarder
//!   that keeps per-flow state pays for a flow's first packet, whose buckets are in no
//!   cache. Reported beside the new-flow figures as their bound.
//!
//! Repeat mode runs the same frame `repeat` times without restoring it; the load balancer's
//! rewrite is idempotent (it writes fixed MACs), so every iteration sees the same input.
//! A new flow cannot be measured that way (after the first iteration the flow exists), so it
//! is measured as one call per distinct 5-tuple, against the floor measured the same way.
//!
//! Then, per scheduler, the same two figures with the flow table holding a million entries
//! (`xdp/schedulers.rs`), frames per second end to end on a veth pair (`xdp/e2e.rs`), and the
//! control plane applying 10,000 services x 10 real servers (`xdp/control.rs`).

#[path = "xdp/control.rs"]
mod control;
#[path = "xdp/e2e.rs"]
mod e2e;
#[path = "xdp/schedulers.rs"]
mod schedulers;

use std::net::Ipv4Addr;

use aya::{
    Ebpf, EbpfLoader, TestRun as _,
    programs::{TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use lvs_agent::{
    dataplane::{Dataplane, LoadOptions, objects},
    desired::{Plan, PlannedDest, PlannedService, RingKind, ServiceKey},
    reconcile::Reconciler,
};
use lvs_common::maps::IPPROTO_TCP;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

struct Opts {
    repeat: u32,
    runs: usize,
    new_flows: u16,
    /// Flow-table entries before the per-scheduler figures.
    fill: usize,
    /// The flow table's size (`lvs-agent run --flows`).
    flows: u32,
    /// Frames per end-to-end run (0: skip the end-to-end figures).
    e2e_frames: u32,
    /// Skip the control-plane figures (`--no-control`).
    control: bool,
    /// Only the control-plane figures (`--control-only`).
    control_only: bool,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        repeat: 50_000_000,
        runs: 5,
        new_flows: 20_000,
        fill: 1_000_000,
        flows: lvs_common::maps::DEFAULT_FLOWS,
        e2e_frames: 5_000_000,
        control: true,
        control_only: false,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--repeat" => o.repeat = v.parse().expect("--repeat N"),
            "--runs" => o.runs = v.parse().expect("--runs N"),
            "--new-flows" => o.new_flows = v.parse().expect("--new-flows N"),
            "--fill" => o.fill = v.parse().expect("--fill N"),
            "--flows" => o.flows = v.parse().expect("--flows N"),
            "--e2e-frames" => o.e2e_frames = v.parse().expect("--e2e-frames N"),
            "--no-control" | "--control-only" => {
                o.control = args[i] == "--control-only";
                o.control_only = o.control;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn tcp(src_port: u16, dst: Ipv4Addr, syn: bool) -> Vec<u8> {
    tcp_from(Ipv4Addr::new(10, 77, 0, 10), src_port, dst, syn)
}

fn tcp_from(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x10], MAC).ipv4(src.octets(), dst.octets(), 64);
    let b = if syn { b.tcp(src_port, 80, 1, 64240).syn() } else { b.tcp(src_port, 80, 2, 64240).ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, if syn { b"" } else { b"0123456789" }).unwrap();
    v
}

/// One test run: the action, the kernel's figure (mean ns per repetition, rounded down to
/// whole ns), the wall-clock time of the whole call, and the output frame.
fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> (u32, f64, f64, Vec<u8>) {
    let mut out = vec![0u8; frame.len()];
    let start = std::time::Instant::now();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    let wall = start.elapsed().as_nanos() as f64;
    (r.return_value, r.duration.as_nanos() as f64, wall, out)
}

/// ns per packet: the wall-clock time of one call divided by its repetitions, and the
/// kernel's own figure. The kernel's figure is rounded down to whole ns, too coarse for
/// programs of a few ns. The wall clock is precise but includes the call's fixed cost, which
/// was measured here at 12-24 ms (a wait quantised in timer ticks, not work): with 50 million
/// repetitions that adds at most 0.5 ns per packet, to every program alike.
fn per_packet(prog: &Xdp, frame: &[u8], repeat: u32) -> (f64, f64) {
    let (_, kernel, wall, _) = run(prog, frame, repeat);
    (wall / f64::from(repeat), kernel)
}

/// A service with real servers of weights 1, 2, 3…
fn service(vip: Ipv4Addr, kind: RingKind, reals: Vec<Ipv4Addr>) -> PlannedService {
    PlannedService {
        key: ServiceKey::new(vip.into(), 80, IPPROTO_TCP),
        kind,
        dests: (1..).zip(reals).map(|(w, addr)| PlannedDest { addr: addr.into(), port: 80, weight: w }).collect(),
        persistence: None,
        sorry: None,
    }
}

fn apply(rec: &mut Reconciler, dp: &mut Dataplane, services: Vec<PlannedService>) {
    let mac_of = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => Some([2, 0, 0, a.octets()[1], a.octets()[2], a.octets()[3]]),
        std::net::IpAddr::V6(_) => None,
    };
    rec.apply(&Plan { services, ipvs: Vec::new() }, &mac_of, dp.maps()).expect("applying the plan");
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

struct Figure {
    name: &'static str,
    /// Precise ns/packet: median, min, max over the runs.
    ns: (f64, f64, f64),
    /// The kernel's whole-ns figure: median over the runs.
    kernel: f64,
}

fn main() {
    if !lvs_tests::privilege::can_run("benchmark") {
        return;
    }
    let o = parse_args();
    if o.control_only {
        print_control_targets(&control::report());
        return;
    }
    // BPF_PROG_TEST_RUN runs on the calling CPU: keep every run on one.
    lvs_tests::process::pin_to_cpu(0);

    let mut floors = Ebpf::load(objects::FLOOR).expect("loading the floor programs");
    for name in ["floor_drop", "floor_swap"] {
        let p: &mut Xdp = floors.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    let drop: &Xdp = floors.program("floor_drop").unwrap().try_into().unwrap();
    let swap: &Xdp = floors.program("floor_swap").unwrap().try_into().unwrap();
    let buckets = lvs_common::flowtab::buckets_for(o.flows);
    let mut bound = EbpfLoader::new()
        .map_max_entries("BOUND_FLOWS", buckets)
        .override_global("BOUND_MASK", &(buckets - 1), true)
        .load(objects::BOUND)
        .expect("loading the bound program");
    let lookup: &mut Xdp = bound.program_mut("new_flow_bound").unwrap().try_into().unwrap();
    lookup.load().expect("loading the bound program");
    let lookup: &Xdp = lookup;

    let mut dp = Dataplane::load(LoadOptions { flows: o.flows, ..LoadOptions::default() }).expect("loading lvs");
    let mut rec = Reconciler::new(MAC);
    let wrr = service(VIP, RingKind::Wrr, (1..=3).map(|n| Ipv4Addr::new(10, 77, 0, 10 + n)).collect());
    apply(&mut rec, &mut dp, vec![wrr.clone()]);

    let established = tcp(40000, VIP, false);
    let non_vip = tcp(40000, Ipv4Addr::new(10, 77, 0, 2), false);
    // Check the outputs once: the figures below are only worth something if these hold.
    {
        let lvs = dp.program();
        let (a, _, _, out) = run(lvs, &established, 1);
        assert_eq!(a, 3, "established flow: XDP_TX");
        assert_eq!(&out[6..12], &MAC);
        assert_eq!(&out[12..], &established[12..]);
        let (a, _, _, out) = run(lvs, &non_vip, 1);
        assert_eq!((a, out.as_slice()), (2, non_vip.as_slice()), "non-VIP: XDP_PASS, untouched");
        let (a, _, _, out) = run(swap, &established, 1);
        assert_eq!((a, &out[0..6], &out[6..12]), (3, &established[6..12], &established[0..6]), "swap floor");
    }

    let mut figures = Vec::new();
    let repeated = |name, prog: &Xdp, frame: &[u8]| {
        let runs: Vec<(f64, f64)> = (0..o.runs).map(|_| per_packet(prog, frame, o.repeat)).collect();
        Figure {
            name,
            ns: median(runs.iter().map(|r| r.0).collect()),
            kernel: median(runs.iter().map(|r| r.1).collect()).0,
        }
    };
    figures.push(repeated("floor: read Ethernet, drop", drop, &established));
    figures.push(repeated("floor: MAC swap, XDP_TX", swap, &established));
    figures.push(repeated("lvs: packet of an established flow", dp.program(), &established));
    figures.push(repeated("lvs: SYN to the VIP (flow known)", dp.program(), &tcp(40001, VIP, true)));
    figures.push(repeated("lvs: non-VIP packet", dp.program(), &non_vip));

    // New flows: one call per distinct 5-tuple; the floor is measured the same way, alternating.
    let mut new_runs = Vec::new();
    let mut floor_single = Vec::new();
    for run_no in 0..o.runs {
        let mut lvs_ns = Vec::new();
        let mut floor_ns = Vec::new();
        for i in 0..o.new_flows {
            let port = 1024 + (run_no as u16).wrapping_mul(o.new_flows).wrapping_add(i);
            let f = tcp(port, VIP, true);
            let (a, ns, _, _) = run(dp.program(), &f, 1);
            assert_eq!(a, 3);
            lvs_ns.push(ns);
            floor_ns.push(run(swap, &f, 1).1);
        }
        new_runs.push(median(lvs_ns).0);
        floor_single.push(median(floor_ns).0);
    }
    let floor_single = median(floor_single);
    let new_flow = median(new_runs);

    let swap_ns = figures[1].ns.0;
    println!("\nlvs-xdp benchmark: BPF_PROG_TEST_RUN on CPU 0, {} runs of {} repetitions per figure", o.runs, o.repeat);
    println!("(ns/pkt: wall clock / repetitions, median of the runs; spread: min-max of the runs;");
    println!(" kernel: the kernel's own figure, whole ns, median)");
    println!("{:<40} {:>8} {:>17} {:>7} {:>9}", "", "ns/pkt", "spread", "kernel", "x swap");
    for f in &figures {
        println!(
            "{:<40} {:>8.2} {:>8.2}-{:<8.2} {:>7.0} {:>8.2}x",
            f.name,
            f.ns.0,
            f.ns.1,
            f.ns.2,
            f.kernel,
            f.ns.0 / swap_ns
        );
    }
    println!("\nNew flows: one call per distinct 5-tuple ({} per run), median of per-run medians", o.new_flows);
    println!(
        "{:<40} {:>8.1} {:>8.1}-{:<8.1}",
        "floor: MAC swap, same method", floor_single.0, floor_single.1, floor_single.2
    );
    println!(
        "{:<40} {:>8.1} {:>8.1}-{:<8.1} {:>8.2}x",
        "lvs: new flow (schedule + insert)",
        new_flow.0,
        new_flow.1,
        new_flow.2,
        new_flow.0 / floor_single.0
    );
    let est = figures[2].ns.0 / swap_ns;
    let nonvip = figures[4].ns.0 / swap_ns;
    let new_ratio = new_flow.0 / floor_single.0;
    let mut targets = vec![
        ("established <= 2.50x swap (above)".to_string(), est, 2.5),
        ("new flow <= 4.00x swap (above, same method)".to_string(), new_ratio, 4.0),
        ("non-VIP <= 1.30x swap".to_string(), nonvip, 1.3),
    ];

    // Per scheduler, with the flow table full.
    let reals = |k: usize| (1..=3).map(|n| schedulers::real(k, n)).collect::<Vec<_>>();
    let mut services = vec![wrr];
    services.extend(schedulers::KINDS.iter().enumerate().map(|(k, &kind)| service(schedulers::vip(k), kind, reals(k))));
    apply(&mut rec, &mut dp, services);
    let r = schedulers::measure(&mut dp, swap, lookup, &o);
    println!(
        "\nPer scheduler: flow table holding {} entries (filled in {:.1} s), 3 real servers; established: \
         {} repetitions per run, new flows: one call per distinct 5-tuple, {} per run; {} runs",
        r.entries, r.fill_secs, o.repeat, o.new_flows, o.runs
    );
    println!(
        "{:<10} {:>8} {:>17} {:>7} | {:>8} {:>17} {:>8} {:>7} | {:>8} {:>7}",
        "scheduler", "est. ns", "spread", "x swap", "new ns", "spread", "floor ns", "x swap", "bound ns", "x swap"
    );
    println!("{:<10} {:>8.2} {:>8.2}-{:<8.2} {:>7} |", "(floor)", r.floor.0, r.floor.1, r.floor.2, "1.00x");
    for f in &r.figures {
        let (e, n) = (f.est.0 / r.floor.0, f.new.0 / f.new_floor.0);
        println!(
            "{:<10} {:>8.2} {:>8.2}-{:<8.2} {:>6.2}x | {:>8.1} {:>8.1}-{:<8.1} {:>8.1} {:>6.2}x | {:>8.1} {:>6.2}x",
            f.name,
            f.est.0,
            f.est.1,
            f.est.2,
            e,
            f.new.0,
            f.new.1,
            f.new.2,
            f.new_floor.0,
            n,
            f.bound.0,
            f.bound.0 / f.new_floor.0
        );
        targets.push((format!("{}: established <= 2.50x swap", f.name), e, 2.5));
        targets.push((format!("{}: new flow <= 4.00x swap", f.name), n, 4.0));
    }
    // Why a new flow costs what it does: its lookup misses every cache by definition. The
    // bound (`new_flow_bound`) is that miss with nothing else.
    let bound = r.figures.iter().map(|f| f.bound.0 / f.new_floor.0).sum::<f64>() / r.figures.len().max(1) as f64;
    println!(
        "bound: parsing a new flow and reading its two buckets, and nothing else, costs {bound:.2}x the \
         single-call swap floor here (mean over the schedulers' runs): the least a new flow can cost"
    );
    let floor_one = r.figures.iter().map(|f| f.new_floor.0).sum::<f64>() / r.figures.len().max(1) as f64;
    let table_mib = (lvs_common::flowtab::buckets_for(o.flows) as usize * 64) >> 20;
    let mem = schedulers::memory_latency_ns(table_mib.max(1), 2_000_000);
    println!(
        "reference: one random read in {table_mib} MiB (the IPv4 flow table for {} flows) costs {mem:.1} ns here = \
         {:.2}x the single-call swap floor ({floor_one:.1} ns); a new flow's lookup pays at least one",
        o.flows,
        mem / floor_one
    );
    // Its flow table is large: free it before the end-to-end part loads another.
    std::mem::drop(dp);

    if o.e2e_frames > 0 {
        match e2e::measure(o.e2e_frames, o.runs) {
            Ok(r) => {
                println!(
                    "\nEnd to end: veth pair, XDP_TX out of the director's end (native XDP) to the peer; frames from \
                     BPF_PROG_TEST_RUN live-frames mode, {} per run, {} runs; frames/s counted received at the peer",
                    r.frames, o.runs
                );
                println!("{:<40} {:>10} {:>21} {:>9}", "", "Mframes/s", "spread", "received");
                let line = |name: String, ((m, lo, hi), got): ((f64, f64, f64), f64)| {
                    println!(
                        "{name:<40} {:>10.3} {:>10.3}-{:<10.3} {:>8.1}%",
                        m / 1e6,
                        lo / 1e6,
                        hi / 1e6,
                        got * 100.0
                    );
                };
                for p in &r.peers {
                    line(format!("peer {}: floor: MAC swap, XDP_TX", p.program), p.swap);
                    line(format!("peer {}: lvs: established flow", p.program), p.lvs);
                    println!(
                        "peer {}: lvs at {:.2}x the floor's rate ({:.2}x its time per frame)",
                        p.program,
                        p.lvs.0.0 / p.swap.0.0,
                        p.swap.0.0 / p.lvs.0.0
                    );
                }
            }
            Err(e) => println!("\nEnd to end: not measured: {e:#}"),
        }
    }

    let control = if o.control { control::report() } else { Vec::new() };

    println!("\nTargets:");
    for (name, value, max) in targets {
        println!("  {name:<45} {value:>5.2}x  {}", if value <= max { "met" } else { "MISSED" });
    }
    if o.control {
        print_control_targets(&control);
    }
}

/// The control plane's figures against their targets (under 1 s, under 64 MiB).
fn print_control_targets(lines: &[(String, f64, f64, &str)]) {
    println!("Control plane targets:");
    for (name, value, max, unit) in lines {
        println!(
            "  {name:<38} {value:>8.3} {unit:<3} < {max} {unit:<3}  {}",
            if value < max { "met" } else { "MISSED" }
        );
    }
}
