//! Director failover with stateless schedulers: two directors with the same config, long-lived
//! TCP connections opened through the first, then the VIP moved to the second, whose flow table
//! is empty. With mh or sh the second director hashes every mid-stream packet to the real server
//! the first chose, so every connection survives. With rr it does not (the control).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddrV4,
    time::Duration,
};

use lvs_tests::{
    http::Held,
    privilege::can_run,
    table,
    topology::{DrLab, VIP},
};

/// Connections held across the failover. One client address each: sh and mh hash the client's
/// address, and with a single client every connection would go to one server.
const CONNECTIONS: u8 = 30;

struct Failover {
    /// Which server answered each connection through director 1.
    before: Vec<String>,
    /// The same connections through director 2: the server, or the error.
    after: Vec<Result<String, String>>,
    /// The agents' tables (ipvsadm layout), printed on SIGTERM.
    table1: String,
    table2: String,
    /// `addr:port` as in the tables -> name as in the answers.
    real_servers: BTreeMap<String, String>,
}

impl Failover {
    fn kept(&self) -> usize {
        self.before.iter().zip(&self.after).filter(|(b, a)| a.as_ref().ok() == Some(*b)).count()
    }

    fn report(&self) -> String {
        self.before
            .iter()
            .zip(&self.after)
            .enumerate()
            .filter(|(_, (b, a))| a.as_ref().ok() != Some(*b))
            .map(|(i, (b, a))| format!("  connection {i}: {b} -> {a:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sums a column of an agent's table over the real servers.
    fn total(table: &str, column: impl Fn(&table::RealServerRow) -> u64) -> u64 {
        table::by_real_server(table).values().map(column).sum()
    }
}

/// Builds two directors and three nginx real servers, runs both agents with `lb_algo algo`,
/// holds `CONNECTIONS` keep-alive connections across `move_vip(0, 1)`.
fn failover(tag: &str, algo: &str) -> Failover {
    let agent = lvs_tests::process::agent_bin();
    let floor =
        lvs_tests::topology::write_object(tag, lvs_agent::dataplane::objects::FLOOR).expect("writing the floor object");
    let mut lab = DrLab::build_with(tag, 3, 2, &floor).expect("building the test bed");
    // Attached by now; removed here so that a failing test leaves no file behind.
    let _ = std::fs::remove_file(floor);
    lab.prepare_real_servers(&agent).expect("realserver up");
    lab.start_http().expect("starting nginx");
    let sources = lab.add_client_addresses(CONNECTIONS).expect("client addresses");
    let conf = lab.keepalived_conf(algo, 80, "TCP", &[1, 1, 1]);
    let agent1 = lab.start_agent_on(0, &agent, &conf, &[]).expect("starting lvs-agent on director 1");
    let agent2 = lab.start_agent_on(1, &agent, &conf, &[]).expect("starting lvs-agent on director 2");

    let target = SocketAddrV4::new(VIP, 80);
    let mut held: Vec<Held> = sources
        .iter()
        .map(|&src| Held::open_from(&lab.client.ns, src, target).expect("connecting through director 1"))
        .collect();
    let before: Vec<String> = held
        .iter_mut()
        .map(|h| h.ask().unwrap_or_else(|e| panic!("{}: asking through director 1: {e:#}", h.local)))
        .collect();

    lab.move_vip(0, 1).expect("moving the VIP");
    // Reverse order: with rr, asking in the order the connections were opened would walk
    // director 2's ring in step with director 1's and keep them by coincidence.
    let mut after: Vec<Result<String, String>> =
        held.iter_mut().rev().map(|h| h.ask().map_err(|e| format!("{e:#}"))).collect();
    after.reverse();
    drop(held);

    let (s1, table1) = agent1.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping agent 1");
    let (s2, table2) = agent2.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping agent 2");
    assert!(s1.success() && s2.success(), "agent exits: {s1}, {s2}");
    // Director 1 scheduled exactly the held connections, and director 2 saw every one of them
    // after the move: each connection's first mid-stream packet was a new flow in its table.
    assert_eq!(Failover::total(&table1, |r| r.conns), u64::from(CONNECTIONS), "director 1:\n{table1}");
    assert_eq!(Failover::total(&table2, |r| r.conns), u64::from(CONNECTIONS), "director 2:\n{table2}");
    assert!(Failover::total(&table2, |r| r.in_packets) >= u64::from(CONNECTIONS), "director 2:\n{table2}");
    let real_servers = lab.real_servers.iter().map(|r| (format!("{}:80", r.ip), r.name.clone())).collect();
    drop(lab);
    Failover { before, after, table1, table2, real_servers }
}

/// The stateless schedulers keep every connection on its server across the failover.
fn assert_all_kept(f: &Failover) {
    // The connections were spread, so keeping them is not one server answering everything.
    let used: BTreeSet<_> = f.before.iter().collect();
    eprintln!("director 1 spread the {CONNECTIONS} connections:\n{}", f.table1);
    assert!(used.len() >= 2, "all {CONNECTIONS} connections on {used:?} of {:?}", f.real_servers);
    assert_eq!(
        f.kept(),
        usize::from(CONNECTIONS),
        "connections lost or moved:\n{}\ndirector 1:\n{}director 2:\n{}",
        f.report(),
        f.table1,
        f.table2
    );
    // Each director's table agrees exactly with what the client saw through it.
    let seen = |answers: &[&String]| {
        let mut n: BTreeMap<String, u64> = f.real_servers.keys().map(|a| (a.clone(), 0)).collect();
        for name in answers {
            let addr = f.real_servers.iter().find(|(_, v)| v == name).map(|(a, _)| a.clone());
            *n.entry(addr.unwrap_or_else(|| panic!("unknown server {name}"))).or_default() += 1;
        }
        n
    };
    let before: Vec<&String> = f.before.iter().collect();
    let after: Vec<&String> = f.after.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(table::conns_by_real_server(&f.table1), seen(&before), "director 1:\n{}", f.table1);
    assert_eq!(table::conns_by_real_server(&f.table2), seen(&after), "director 2:\n{}", f.table2);
}

#[test]
fn failover_mh_keeps_established_connections() {
    if !can_run("failover_mh_keeps_established_connections") {
        return;
    }
    assert_all_kept(&failover("fo-mh", "mh"));
}

#[test]
fn failover_sh_keeps_established_connections() {
    if !can_run("failover_sh_keeps_established_connections") {
        return;
    }
    assert_all_kept(&failover("fo-sh", "sh"));
}

/// The control: rr keeps no state a second director could recompute, so mid-stream packets are
/// scheduled afresh; a connection sent to another server is answered with a RST.
#[test]
fn failover_rr_loses_established_connections() {
    if !can_run("failover_rr_loses_established_connections") {
        return;
    }
    let f = failover("fo-rr", "rr");
    eprintln!("rr: {} of {CONNECTIONS} connections kept; the others:\n{}", f.kept(), f.report());
    assert!(
        f.kept() < usize::from(CONNECTIONS),
        "rr kept all {CONNECTIONS} connections: the failover test could not fail\ndirector 2:\n{}",
        f.table2
    );
    // A lost connection is lost the TCP way: the other server knows no such connection and
    // resets it. A timeout would mean the bed lost packets, which proves nothing.
    for (i, a) in f.after.iter().enumerate() {
        if let Err(e) = a {
            assert!(e.contains("reset") || e.contains("Broken pipe"), "connection {i}: {e}");
        }
    }
}
