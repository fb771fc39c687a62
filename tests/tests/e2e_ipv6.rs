//! IPv6 end to end: the DR bed of `e2e_dr.rs` with every host also in fd00:77::/64, an rr
//! service on [fd00:77::100]:80, real nginx real servers holding the VIP6 on lo. See
//! `lvs_tests::topology` (`enable_ipv6`) for the bed.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lvs_agent::desired::socket;
use lvs_tests::{
    capture::Capture,
    http,
    privilege::can_run,
    topology::{DrLab, VIP6},
};

#[test]
fn ipv6_dr_splits_evenly_and_replies_bypass_the_director() {
    if !can_run("ipv6_dr_splits_evenly_and_replies_bypass_the_director") {
        return;
    }
    let tag = "e2e6";
    let agent = lvs_tests::process::agent_bin();
    let floor =
        lvs_tests::topology::write_object(tag, lvs_agent::dataplane::objects::FLOOR).expect("writing the floor object");
    let mut lab = DrLab::build(tag, 3, &floor).expect("building the test bed");
    // Addresses first: the agent resolves the real servers' MACs (neighbour discovery) as it
    // starts, and they must answer then.
    lab.enable_ipv6().expect("IPv6 addresses");
    lab.prepare_real_servers_v6(&agent).expect("realserver up --vip VIP6");
    lab.start_http().expect("starting nginx");
    let conf = lab.keepalived_conf_v6("rr", 80, "TCP", &[1, 1, 1]);
    let proc = lab.start_agent(&agent, &conf, &[]).expect("starting lvs-agent");

    // Anything from the VIP6 reaching the director would be a reply that did not go direct.
    let capture = Capture::start(&lab.director.ns, "eth0", &format!("ip6 and src host {VIP6}")).expect("tcpdump");
    const CONNECTIONS: u64 = 600;
    let tally = http::get_many(&lab.client.ns, SocketAddr::from((VIP6, 80)), CONNECTIONS, Duration::from_secs(60))
        .expect("client");
    // Positive control: a packet from the VIP6 to the director (a SYN to a closed port) is seen
    // by this capture, so an empty capture means something.
    let rs1 = &lab.real_servers[0];
    let _ = rs1.ns.run(
        "curl",
        &["-s", "-m", "1", "--interface", &VIP6.to_string(), &format!("http://[{}]:81/", lab.director.ip6())],
    );
    let from_vip = capture.stop().expect("stopping tcpdump");
    let (status, table) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");

    assert!(status.success(), "agent exit: {status}");
    assert_eq!(tally.failures, 0, "failed connections: {:?}", tally.errors);
    assert_eq!(tally.answered(), CONNECTIONS);

    // rr: each CPU walks the ring on its own, so a server's count is off an even third by at
    // most one per CPU; 2 percentage points (12 connections) is generous and still fails if a
    // server is skipped or favoured.
    let agent_conns = lvs_tests::table::conns_by_real_server(&table);
    for rs in &lab.real_servers {
        let seen = tally.by_server.get(&rs.name).copied().unwrap_or(0);
        let share = seen as f64 / CONNECTIONS as f64;
        assert!((share - 1.0 / 3.0).abs() <= 0.02, "{}: {seen} answers, share {share:.3}", rs.name);
        // The agent's counters agree with the client, connection for connection; its table
        // names IPv6 real servers as [addr]:port.
        assert_eq!(
            agent_conns.get(&socket(IpAddr::V6(rs.ip6()), 80)),
            Some(&tally.flows_of(&rs.name)),
            "agent table (a reused client port is one flow):\n{table}"
        );
    }
    assert_eq!(agent_conns.len(), lab.real_servers.len(), "agent table:\n{table}");

    // Direct routing: no reply crossed the director; only the control packet(s) did.
    assert!(from_vip >= 1, "the capture must see the control packet from the VIP6");
    assert!(from_vip <= 3, "{from_vip} packets from the VIP6 reached the director");
    let _ = std::fs::remove_file(floor);
}
