//! End to end: frames per second through the director on a veth pair, the load balancer
//! attached (native XDP) to the director's end, the floor object's `pass` program on the peer
//! (veth delivers XDP_TX frames only to a peer running XDP).
//!
//! xdp-trafficgen does not load on this kernel, so frames come from what it uses underneath:
//! BPF_PROG_TEST_RUN in live-frames mode, which runs the program under test on each frame
//! and transmits the XDP_TX ones out of the context's ingress interface, the director's veth.
//! So the load balancer itself runs on every frame (one established flow) and forwards it to
//! the peer; the MAC-swap floor is run the same way, attached at the same place, alternating
//! with it. Frames per second = frames counted received by the peer / wall clock of the call.
//! The receiving side (veth NAPI, the pass program, the stack dropping frames addressed to
//! another host) runs on the same CPU and is included in both, as on the lab's path; it costs
//! far more than either program, so the figures are repeated with `floor_drop` on the peer
//! (the frames stop at the peer's XDP hook and veth still counts them received), where the
//! director's share of the time per frame is larger.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, TestRun as _,
    programs::{TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use lvs_agent::dataplane::{AttachMode, Dataplane, LoadOptions, objects};
use lvs_tests::netns::{self, Netns};

use super::{run, tcp_from};

const NS: &str = "lvs-bench-e2e";
const DIRECTOR: &str = "d0";
const PEER: &str = "d1";

pub struct Report {
    pub frames: u32,
    pub peers: Vec<Peer>,
}

pub struct Peer {
    /// The program on the peer.
    pub program: &'static str,
    /// Frames per second (median, min, max over the runs) and the fraction received.
    pub lvs: ((f64, f64, f64), f64),
    pub swap: ((f64, f64, f64), f64),
}

pub fn measure(frames: u32, runs: usize) -> Result<Report> {
    netns::remove_stale("lvs-bench-");
    let ns = Netns::create(NS)?;
    ns.ip(&["link", "add", DIRECTOR, "type", "veth", "peer", "name", PEER])?;
    ns.ip(&["link", "set", DIRECTOR, "up"])?;
    ns.ip(&["link", "set", PEER, "up"])?;
    ns.within(move || within(frames, runs))?
}

/// The peer's received-frame counter, read in this thread's namespace.
fn rx_packets(iface: &str) -> Result<u64> {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    for line in dev.lines() {
        if let Some((name, rest)) = line.split_once(':')
            && name.trim() == iface
        {
            return rest.split_whitespace().nth(1).context("rx packets column")?.parse().context("rx packets");
        }
    }
    bail!("{iface} not in /proc/thread-self/net/dev")
}

/// Sends `frames` copies of `frame` through `prog` in live-frames mode out of `ifindex`;
/// returns (frames/s received by the peer, fraction received).
fn live(prog: &Xdp, frame: &[u8], ifindex: u32, frames: u32) -> Result<(f64, f64)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let len = u32::try_from(frame.len())?;
    let md: Vec<u8> = [0, len, 0, ifindex, 0, 0].iter().flat_map(|w: &u32| w.to_ne_bytes()).collect();
    let before = rx_packets(PEER)?;
    let start = Instant::now();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&md),
        repeat: frames,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..TestRunOptions::default()
    })
    .context("BPF_PROG_TEST_RUN, live frames")?;
    let secs = start.elapsed().as_secs_f64();
    // The peer's NAPI may still be draining: read its counter until every frame has arrived,
    // or until it stops rising (frames lost), within a second at most.
    let deadline = Instant::now() + std::time::Duration::from_secs(1);
    let mut got = rx_packets(PEER)? - before;
    while got < u64::from(frames) && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let now = rx_packets(PEER)? - before;
        if now == got {
            break;
        }
        got = now;
    }
    Ok((got as f64 / secs, got as f64 / f64::from(frames)))
}

fn within(frames: u32, runs: usize) -> Result<Report> {
    lvs_tests::process::pin_to_cpu(0);
    let mut floors = Ebpf::load(objects::FLOOR).context("loading the floor programs")?;
    for name in ["floor_swap", "floor_drop", "pass"] {
        let p: &mut Xdp = floors.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    let mut dp = Dataplane::load(LoadOptions::default()).context("loading lvs")?;
    let vip = super::schedulers::vip(1);
    let reals = (1..=3).map(|n| super::schedulers::real(1, n)).collect();
    let mut rec = lvs_agent::reconcile::Reconciler::new(super::MAC);
    super::apply(&mut rec, &mut dp, vec![super::service(vip, lvs_agent::desired::RingKind::Wrr, reals)]);
    let client = Ipv4Addr::new(10, 77, 0, 10);
    assert_eq!(run(dp.program(), &tcp_from(client, 40000, vip, true), 1).0, 3);
    let frame = tcp_from(client, 40000, vip, false);
    assert_eq!(run(dp.program(), &frame, 1).0, 3);
    let ifindex = {
        let name = std::ffi::CString::new(DIRECTOR)?;
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    };
    if ifindex == 0 {
        bail!("{DIRECTOR} not found");
    }

    let summary = |r: &[(f64, f64)]| {
        (super::median(r.iter().map(|x| x.0).collect()), super::median(r.iter().map(|x| x.1).collect()).0)
    };
    let mut peers = Vec::new();
    for peer_program in ["pass", "floor_drop"] {
        let p: &mut Xdp = floors.program_mut(peer_program).context(peer_program)?.try_into()?;
        let peer_link =
            p.attach(PEER, XdpMode::Driver).with_context(|| format!("attaching {peer_program} to the peer"))?;
        let (mut lvs_runs, mut swap_runs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            dp.attach(DIRECTOR, AttachMode::Native)?;
            lvs_runs.push(live(dp.program(), &frame, ifindex, frames)?);
            dp.detach();
            let swap: &mut Xdp = floors.program_mut("floor_swap").context("floor_swap")?.try_into()?;
            let link = swap.attach(DIRECTOR, XdpMode::Driver).context("attaching floor_swap")?;
            swap_runs.push(live(swap, &frame, ifindex, frames)?);
            swap.detach(link)?;
        }
        let p: &mut Xdp = floors.program_mut(peer_program).context(peer_program)?.try_into()?;
        p.detach(peer_link)?;
        peers.push(Peer { program: peer_program, lvs: summary(&lvs_runs), swap: summary(&swap_runs) });
    }
    Ok(Report { frames, peers })
}
