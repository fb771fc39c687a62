//! Hitless restart end to end: the data plane is pinned, keeps forwarding while no agent runs
//! (after a crash, after a stop), and a new agent adopts it without a gap: established
//! connections keep their real servers (rr would move them if the flows were scheduled anew)
//! and a client sending through the restart sees no failure. `lvs-agent teardown` removes it.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lvs_tests::{
    bpffs::Bpffs,
    http::{self, Held},
    netns::Netns,
    privilege::can_run,
    process::agent_bin,
    topology::{DrLab, VIP},
};

/// Whether an XDP program is attached to `iface` in `ns`.
fn xdp_attached(ns: &Netns, iface: &str) -> bool {
    let out = ns.ip(&["-d", "link", "show", "dev", iface]).expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn teardown(ns: &Netns, agent: &Path, iface: &str, pins: &Path) -> std::process::Output {
    let mut cmd: Command = ns.cmd(agent.to_str().unwrap());
    cmd.args(["teardown", "-i", iface, "--pin-dir", pins.to_str().unwrap()]);
    cmd.output().expect("running lvs-agent teardown")
}

#[test]
fn a_restarted_agent_adopts_the_pinned_data_plane_without_a_gap() {
    if !can_run("a_restarted_agent_adopts_the_pinned_data_plane_without_a_gap") {
        return;
    }
    let agent = agent_bin();
    let bpffs = Bpffs::mount("restart").expect("mounting a bpffs");
    let lab = DrLab::http_bed("restart", 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let conf = lab.keepalived_conf("rr", 80, "TCP", &[1, 1, 1]);
    let pin_args = ["--pin-dir", bpffs.path.to_str().unwrap()];
    let (dns, iface) = (&lab.director.ns, lab.director.iface);
    let vip = SocketAddr::from((VIP, 80));

    let first = lab.start_agent(&agent, &conf, &pin_args).expect("starting lvs-agent");
    let refused = teardown(dns, &agent, iface, &bpffs.path);
    assert!(!refused.status.success(), "teardown must refuse while an agent runs");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop it first"), "{refused:?}");

    // Long-lived connections, one on each real server (rr's cursor is per CPU, so a few more
    // connections than servers may be needed; bounded).
    let mut held: Vec<(Held, String)> = Vec::new();
    for _ in 0..30 {
        let mut h = Held::open(&lab.client.ns, vip).expect("connecting");
        let server = h.ask().expect("first answer");
        if !held.iter().any(|(_, s)| *s == server) {
            held.push((h, server));
        }
        if held.len() == lab.real_servers.len() {
            break;
        }
    }
    assert_eq!(held.len(), 3, "rr spreads connections over the three servers");

    // A crash: nobody detaches anything, the pinned program goes on forwarding.
    first.stop(libc::SIGKILL, Duration::from_secs(10)).expect("killing the agent");
    assert!(xdp_attached(dns, iface), "the program outlives the killed agent");
    for (h, server) in &mut held {
        assert_eq!(&h.ask().expect("a held connection answers with no agent running"), server);
    }
    let tally = http::get_many(&lab.client.ns, vip, 150, Duration::from_secs(60)).expect("client");
    assert_eq!((tally.failures, tally.answered()), (0, 150), "new connections with no agent: {:?}", tally.errors);

    // The new agent starts while a client keeps sending: nothing is lost. Its config lists the
    // real servers the other way round: an agent starting from nothing would give the slots
    // (which flows point at) to other servers, and the held connections would break.
    let servers: String = lab
        .real_servers
        .iter()
        .rev()
        .map(|rs| format!("    real_server {} 80 {{\n        weight 1\n    }}\n", rs.ip))
        .collect();
    let conf = format!("virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n{servers}}}\n");
    let stop = Arc::new(AtomicBool::new(false));
    let (second, tally, more) = std::thread::scope(|s| {
        let flag = Arc::clone(&stop);
        let during = s.spawn(|| http::get_until(&lab.client.ns, vip, flag, 20_000, Duration::from_secs(60)));
        let second = lab.start_agent(&agent, &conf, &pin_args);
        // A little more traffic on the new program before the client stops.
        let more = http::get_many(&lab.client.ns, vip, 50, Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        (second, during.join().expect("client thread").expect("client"), more)
    });
    let second = second.expect("restarting lvs-agent");
    assert_eq!(tally.failures, 0, "through the restart: {:?}", tally.errors);
    assert!(tally.answered() >= 50, "the client kept sending through the restart: {}", tally.answered());
    let more = more.expect("client");
    assert_eq!((more.failures, more.answered()), (0, 50), "after the restart: {:?}", more.errors);
    assert!(tally.by_server.len() == 3, "new connections still spread: {:?}", tally.by_server);
    for (h, server) in &mut held {
        assert_eq!(&h.ask().expect("a held connection answers after the restart"), server, "same real server");
    }
    assert!(second.said("adopted the pinned data plane"), "the second agent adopts the maps");
    assert!(second.said("replaced in the pinned link"), "the second agent swaps its program into the pinned link");

    // A clean stop leaves it forwarding too; teardown removes it.
    let (status, _) = second.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");
    assert!(status.success(), "{status}");
    assert!(xdp_attached(dns, iface), "a stopped agent leaves the pinned program attached");
    for (h, server) in &mut held {
        assert_eq!(&h.ask().expect("a held connection answers after a clean stop"), server);
    }
    let out = teardown(dns, &agent, iface, &bpffs.path);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed the data plane"), "{out:?}");
    assert!(!xdp_attached(dns, iface), "teardown detaches the program");
    // (The kernel's own maps.debug/progs.debug, and iproute2's ip/tc/xdp, are not ours.)
    assert!(!bpffs.path.join("netns").exists(), "teardown leaves no pins nor directories");
    let again = teardown(dns, &agent, iface, &bpffs.path);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing pinned"), "{again:?}");
}
