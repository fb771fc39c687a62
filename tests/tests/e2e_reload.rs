//! Live reload (SIGHUP) end to end: the agent applies only the difference, connections to real
//! servers that stay keep going, and a broken config is rejected with forwarding untouched.

use std::{net::SocketAddr, time::Duration};

use lvs_tests::{
    http::{self, Held},
    privilege::can_run,
    process::agent_bin,
    topology::{DrLab, VIP},
};

#[test]
fn sighup_applies_the_difference_and_rejects_a_broken_config() {
    if !can_run("sighup_applies_the_difference_and_rejects_a_broken_config") {
        return;
    }
    let tag = "reload";
    let agent = agent_bin();
    let lab = DrLab::http_bed(tag, 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let conf = lab.keepalived_conf("rr", 80, "TCP", &[1, 1, 1]);
    let mut proc = lab.start_agent(&agent, &conf, &[]).expect("starting lvs-agent");
    let vip = SocketAddr::from((VIP, 80));

    // A long-lived connection, and the server it landed on.
    let mut held = Held::open(&lab.client.ns, vip).expect("connecting");
    let kept = held.ask().expect("first answer");
    let others: Vec<&str> = lab.real_servers.iter().map(|r| r.name.as_str()).filter(|n| *n != kept).collect();

    // New config: the held connection's server stays, one other is removed, the last is
    // quiesced (weight 0).
    let weight = |name: &str| match name {
        n if n == kept => 1,
        n if n == others[0] => 0,
        _ => 2,
    };
    let removed = others[1];
    let mut next = String::from("virtual_server 10.77.0.100 80 {\n  lb_algo wrr\n  lb_kind DR\n");
    for rs in lab.real_servers.iter().filter(|r| r.name != removed) {
        next.push_str(&format!("  real_server {} 80 {{\n    weight {}\n  }}\n", rs.ip, weight(&rs.name)));
    }
    next.push_str("}\n");
    std::fs::write(lab.dir.join("keepalived.conf"), &next).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(proc.pid()).unwrap(), libc::SIGHUP) };
    proc.wait_for_line("reloaded /", Duration::from_secs(10)).expect("the reload is applied");

    assert_eq!(held.ask().expect("the held connection still answers"), kept, "same real server");
    let tally = http::get_many(&lab.client.ns, vip, 300, Duration::from_secs(60)).expect("client");
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    let answering: Vec<&str> = tally.by_server.keys().map(String::as_str).collect();
    assert_eq!(answering, [kept.as_str()], "only the server with weight > 0");

    // A broken config: rejected, logged, nothing changes.
    std::fs::write(lab.dir.join("keepalived.conf"), next.replace("lb_kind DR", "lb_kind BOGUS")).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(i32::try_from(proc.pid()).unwrap(), libc::SIGHUP) };
    proc.wait_for_line("reload rejected", Duration::from_secs(10)).expect("the reload is rejected");
    assert_eq!(held.ask().expect("still answering"), kept);
    let tally = http::get_many(&lab.client.ns, vip, 100, Duration::from_secs(60)).expect("client");
    assert_eq!((tally.failures, tally.answered()), (0, 100), "{:?}", tally.errors);

    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");
    assert!(status.success(), "{status}");
}
