//! End to end over UDP: the agent on a director, a UDP responder on each real server (answering
//! with the server's name), a client sending datagrams to VIP:53. See `lvs_tests::topology`.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use lvs_tests::{
    privilege::can_run,
    table,
    topology::{DrLab, VIP},
    udp,
};

#[test]
fn udp_rr_splits_evenly_and_pins_each_source_port() {
    if !can_run("udp_rr_splits_evenly_and_pins_each_source_port") {
        return;
    }
    let tag = "udp";
    let agent = lvs_tests::process::agent_bin();
    let floor =
        lvs_tests::topology::write_object(tag, lvs_agent::dataplane::objects::FLOOR).expect("writing the floor object");
    let mut lab = DrLab::build(tag, 3, &floor).expect("building the test bed");
    // Attached by now; removed here so that a failing test leaves no file behind.
    let _ = std::fs::remove_file(floor);
    lab.prepare_real_servers(&agent).expect("realserver up");
    lab.start_udp(53).expect("starting the UDP responders");
    let conf = lab.keepalived_conf("rr", 53, "UDP", &[1, 1, 1]);
    let proc = lab.start_agent(&agent, &conf, &[]).expect("starting lvs-agent");
    let target = SocketAddr::from((VIP, 53));

    // Every datagram from a source port never used before: a new flow each, so rr spreads them.
    const DATAGRAMS: u64 = 3000;
    let tally = udp::udp_many(&lab.client.ns, target, DATAGRAMS, Duration::from_secs(60)).expect("client");
    // Then 30 ports, 3 datagrams each, round by round: every port must keep its server although
    // rr moves on between two datagrams of one port.
    const PORTS: usize = 30;
    const ROUNDS: usize = 3;
    let pinned = udp::udp_same_port(&lab.client.ns, target, PORTS, ROUNDS).expect("client, same ports");
    let (status, stats) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");

    assert!(status.success(), "agent exit: {status}");
    assert_eq!(tally.failures, 0, "unanswered datagrams: {:?}", tally.errors);
    assert_eq!(tally.answered(), DATAGRAMS);

    let mut pinned_to: BTreeMap<String, u64> = BTreeMap::new();
    for (i, names) in pinned.iter().enumerate() {
        assert!(!names[0].starts_with('!'), "port {i}: no answer: {names:?}");
        assert!(names.iter().all(|n| n == &names[0]), "port {i} changed server: {names:?}");
        *pinned_to.entry(names[0].clone()).or_default() += 1;
    }
    // The ports themselves were spread (rr was live), so pinning is not a coincidence.
    assert_eq!(pinned_to.len(), 3, "the pinned ports should reach every server: {pinned_to:?}");

    // rr over 3 equal servers; each CPU walks the ring on its own, so the error is a few
    // datagrams per CPU: 1 percentage point is generous.
    let rows = table::by_real_server(&stats);
    for rs in &lab.real_servers {
        let seen = tally.by_server.get(&rs.name).copied().unwrap_or(0);
        let share = seen as f64 / DATAGRAMS as f64;
        assert!((share - 1.0 / 3.0).abs() <= 0.01, "{}: {seen} answers, share {share:.3}", rs.name);
        // The agent agrees exactly: one flow per new-port datagram plus one per pinned port;
        // one packet per datagram.
        let ports = pinned_to.get(&rs.name).copied().unwrap_or(0);
        let row = rows.get(&format!("{}:53", rs.ip)).copied().unwrap_or_default();
        assert_eq!(row.conns, seen + ports, "{}: agent table:\n{stats}", rs.name);
        assert_eq!(row.in_packets, seen + ports * ROUNDS as u64, "{}: agent table:\n{stats}", rs.name);
    }
}
