//! End to end in network namespaces: a real client, the agent on a director, real nginx real
//! servers. See `lvs_tests::topology` for the bed.

use std::{net::SocketAddr, time::Duration};

use lvs_tests::{
    capture::Capture,
    http,
    privilege::can_run,
    topology::{DrLab, VIP},
};

#[test]
fn dr_split_follows_weights_and_replies_bypass_the_director() {
    if !can_run("dr_split_follows_weights_and_replies_bypass_the_director") {
        return;
    }
    let tag = "e2e";
    let agent = lvs_tests::process::agent_bin();
    let lab = DrLab::http_bed(tag, 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let weights = [1u32, 2, 3];
    let conf = lab.keepalived_conf("wrr", 80, "TCP", &weights);
    let proc = lab.start_agent(&agent, &conf, &[]).expect("starting lvs-agent");

    // Anything from the VIP reaching the director would be a reply that did not go direct.
    let capture = Capture::start(&lab.director.ns, "eth0", &format!("src host {VIP}")).expect("tcpdump");
    const CONNECTIONS: u64 = 3000;
    let tally = http::get_many(&lab.client.ns, SocketAddr::from((VIP, 80)), CONNECTIONS, Duration::from_secs(120))
        .expect("client");
    // Positive control: a packet from the VIP to the director is seen by this capture.
    let rs1 = &lab.real_servers[0];
    let _ = rs1
        .ns
        .run("curl", &["-s", "-m", "1", "--interface", &VIP.to_string(), &format!("http://{}:81/", lab.director.ip)]);
    let from_vip = capture.stop().expect("stopping tcpdump");
    // The connection table (ipvsadm -Lnc layout) on SIGUSR2: every connection is listed.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(proc.pid()).unwrap(), libc::SIGUSR2) };
    let mut proc = proc;
    proc.wait_for_line("printed the connection table", Duration::from_secs(10)).expect("connection table");
    let (status, table) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");
    // Connection rows read "TCP MM:SS  STATE …"; service rows "TCP  VIP:port …".
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("TCP ") && l.as_bytes().get(4).is_some_and(u8::is_ascii_digit))
        .collect();
    assert_eq!(rows.len(), tally.flows.len(), "every connection (distinct 5-tuple) in the connection table");
    assert!(
        rows.iter().all(|l| l.contains(&format!("{VIP}:80"))
            && lab.real_servers.iter().any(|rs| l.ends_with(&format!("{}:80", rs.ip)))),
        "each through the VIP to a configured real server: {:?}",
        rows.first()
    );

    assert!(status.success(), "agent exit: {status}");
    assert_eq!(tally.failures, 0, "failed connections: {:?}", tally.errors);
    assert_eq!(tally.answered(), CONNECTIONS);

    // The client's split follows the weights. Each CPU walks the wrr ring on its own, so the
    // error is at most one ring (6 connections) per CPU: 1 percentage point is generous.
    let total: u32 = weights.iter().sum();
    let agent_conns = lvs_tests::table::conns_by_real_server(&table);
    for (rs, w) in lab.real_servers.iter().zip(weights) {
        let seen = tally.by_server.get(&rs.name).copied().unwrap_or(0);
        let share = seen as f64 / CONNECTIONS as f64;
        let want = f64::from(w) / f64::from(total);
        assert!((share - want).abs() <= 0.01, "{}: {seen} answers, share {share:.3}, weight share {want:.3}", rs.name);
        // And the agent's table agrees with what the client saw, flow for flow (a reused port
        // is one flow).
        assert_eq!(agent_conns.get(&format!("{}:80", rs.ip)), Some(&tally.flows_of(&rs.name)), "agent table:\n{table}");
    }

    // Direct routing: no reply crossed the director; only the control packet(s) did.
    assert!(from_vip >= 1, "the capture must see the control packet from the VIP");
    assert!(from_vip <= 3, "{from_vip} packets from the VIP reached the director");
}
