//! `lvs-agent list` and `lvs-agent status` against a running agent, as an operator uses them
//! (ipvsadm habits): the figures they print are those the client saw; a non-root user and a
//! host with no agent get one sentence each, and exit 1.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::Output,
    time::Duration,
};

use lvs_tests::{
    http,
    privilege::can_run,
    topology::{DrLab, VIP},
};

const CONNECTIONS: u64 = 300;

/// Removes the agent's socket directory for the director namespace, even when the test fails.
struct SocketDir(String);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `lvs-agent ARGS…` in the director namespace, as root.
fn agent_cmd(lab: &DrLab, agent: &std::path::Path, args: &[&str]) -> Output {
    lab.director.ns.cmd(agent.to_str().unwrap()).args(args).output().expect("running lvs-agent")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// `lvs-agent ARGS…` in namespace `ns` as user nobody (65534).
fn as_nobody(ns: &str, agent: &std::path::Path, args: &[&str]) -> Output {
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let mut cmd = std::process::Command::new(agent);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec; the fd outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn list_and_status_show_what_the_client_saw() {
    if !can_run("list_and_status_show_what_the_client_saw") {
        return;
    }
    let tag = "list";
    let agent = lvs_tests::process::agent_bin();
    let floor =
        lvs_tests::topology::write_object(tag, lvs_agent::dataplane::objects::FLOOR).expect("writing the floor object");
    let mut lab = DrLab::build(tag, 3, &floor).expect("building the test bed");
    // The agent in a named namespace serves /run/lvs-agent/netns/NAME/IFACE.sock.
    let dir = SocketDir(format!("/run/lvs-agent/netns/{}", lab.director.ns.name));
    let socket = format!("{}/eth0.sock", dir.0);
    lab.prepare_real_servers(&agent).expect("realserver up");
    lab.start_http().expect("starting nginx");
    let weights = [1u32, 2, 3];
    let conf = lab.keepalived_conf("wrr", 80, "TCP", &weights);
    let proc = lab.start_agent(&agent, &conf, &[]).expect("starting lvs-agent");

    let mode =
        |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode(&dir.0).ok(), Some(0o700), "socket directory is root-only");
    assert_eq!(mode(&socket).ok(), Some(0o600), "socket is root-only");

    let tally = http::get_many(&lab.client.ns, SocketAddr::from((VIP, 80)), CONNECTIONS, Duration::from_secs(60))
        .expect("client");
    assert_eq!(tally.failures, 0, "failed connections: {:?}", tally.errors);
    assert_eq!(tally.answered(), CONNECTIONS);
    // Real server `addr:port` -> flows the client had answered by it (a reused source port
    // is one flow, one connection entry).
    let seen: BTreeMap<String, u64> =
        lab.real_servers.iter().map(|rs| (format!("{}:80", rs.ip), tally.flows_of(&rs.name))).collect();

    // `ipvsadm -Ln`: the service and its real servers with their weights; every connection is
    // counted active or inactive on the server that answered it.
    let list = stdout(&agent_cmd(&lab, &agent, &["list", "-n"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "Prot LocalAddress:Port Scheduler Flags", "{list}");
    assert_eq!(lines[1], "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn", "{list}");
    assert_eq!(lines[2], format!("TCP  {VIP}:80 wrr"), "{list}");
    for (rs, w) in lab.real_servers.iter().zip(weights) {
        let row = lines.iter().find(|l| l.starts_with(&format!("  -> {}:80 ", rs.ip))).expect("a row per real server");
        let f: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(f[2..4], ["Route", &w.to_string()], "{row}");
        let (active, inactive): (u64, u64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
        assert_eq!(active + inactive, seen[&format!("{}:80", rs.ip)], "{row}");
    }

    // `--stats`: connections per real server, exactly what the client saw.
    let stats = stdout(&agent_cmd(&lab, &agent, &["list", "-n", "--stats"]));
    assert_eq!(lvs_tests::table::conns_by_real_server(&stats), seen, "{stats}");

    // `--rate`: the rates table, one row per service and real server.
    let rate = stdout(&agent_cmd(&lab, &agent, &["list", "-n", "--rate"]));
    assert!(
        rate.starts_with("Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"),
        "{rate}"
    );
    assert_eq!(rate.lines().count(), 2 + 1 + 3, "{rate}");

    // `-c`: one row per connection, through the VIP to the real server that answered.
    let table = stdout(&agent_cmd(&lab, &agent, &["list", "-n", "-c"]));
    assert!(table.starts_with("IPVS connection entries\n"), "{table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("TCP ")).collect();
    assert_eq!(rows.len(), CONNECTIONS as usize, "every connection in the table");
    let mut by_dest: BTreeMap<String, u64> = seen.keys().map(|k| (k.clone(), 0)).collect();
    for r in &rows {
        assert!(r.contains(&format!(" {VIP}:80 ")), "{r}");
        *by_dest.entry(r.split_whitespace().last().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(by_dest, seen, "connections per real server in -c");

    // `--json -c`: the same figures as a document.
    let json = stdout(&agent_cmd(&lab, &agent, &["list", "--json", "-c"]));
    let doc: serde_json::Value = serde_json::from_str(&json).expect("list --json parses");
    let svc = &doc["services"][0];
    assert_eq!(svc["address"], VIP.to_string());
    assert_eq!(svc["port"], 80);
    assert_eq!(svc["scheduler"], "wrr");
    assert_eq!(svc["stats"]["conns"], CONNECTIONS);
    let json_seen: BTreeMap<String, u64> = svc["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (format!("{}:{}", d["address"].as_str().unwrap(), d["port"]), d["stats"]["conns"].as_u64().unwrap()))
        .collect();
    assert_eq!(json_seen, seen, "{json}");
    assert_eq!(doc["connections"].as_array().map(Vec::len), Some(CONNECTIONS as usize));

    // `status`: the agent, the VIP with VRRP not yet known, each real server up.
    let status = stdout(&agent_cmd(&lab, &agent, &["status"]));
    eprintln!("lvs-agent list -n:\n{list}\nlvs-agent list -n --stats:\n{stats}\nlvs-agent status:\n{status}");
    let lines: Vec<&str> = status.lines().collect();
    assert!(lines[0].starts_with("Interface:  eth0 (XDP "), "{status}");
    assert!(lines.contains(&"Reloads:    0 ok, 0 failed"), "{status}");
    assert!(lines.contains(&format!("VIP {VIP}  VRRP -").as_str()), "{status}");
    assert!(lines.contains(&format!("  TCP  {VIP}:80 wrr").as_str()), "{status}");
    for (rs, w) in lab.real_servers.iter().zip(weights) {
        let row =
            lines.iter().find(|l| l.starts_with(&format!("    -> {}:80 ", rs.ip))).expect("a row per real server");
        let f: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(f[2], w.to_string(), "{row}");
        assert_eq!(f.last(), Some(&"up"), "{row}");
    }

    // Not root: one sentence, exit 1, with and without -i.
    for args in [&["list"][..], &["list", "-i", "eth0"], &["status"]] {
        let out = as_nobody(&lab.director.ns.name, &agent, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("lvs-agent: permission denied: the agent's socket is root-only"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }

    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");
    assert!(status.success(), "agent exit: {status}");
    assert!(!std::path::Path::new(&socket).exists(), "the socket goes with the agent");

    // No agent: one sentence that says what to do, exit 1.
    let out = agent_cmd(&lab, &agent, &["list", "-i", "eth0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("lvs-agent: no agent is running on eth0 (no socket at {socket}); start one with `lvs-agent run`")
    );
    let out = agent_cmd(&lab, &agent, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("lvs-agent: no agent is running (no socket in {}); start one with `lvs-agent run`", dir.0)
    );
    let _ = std::fs::remove_file(floor);
}
