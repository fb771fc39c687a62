//! Health checks end to end: the agent checks real servers in namespaces (nginx over HTTP and
//! TLS, TCP, a UDP responder, dnsmasq, an SMTP responder, ping, a MISC_CHECK script), failures
//! are injected (server stopped, answers dropped silently, slow trickling answer, wrong status,
//! wrong digest, flapping), and each test asserts when the agent removes and restores the
//! server against what the config implies, and that traffic through the VIP stops reaching it.
//!
//! Timing bounds. With `delay_loop` D, `retry` R, `delay_before_retry` B and a failing check
//! taking F (about 0 when refused, `connect_timeout` when it times out), a failure injected at
//! t=0 is first seen by the check after at most D, and the server is removed after R more
//! checks B apart: removal within `D + R*B + (R+1)*F`, and never before `R*B + (R+1)*F` (the
//! retries must happen: a single failed check does not take a healthy server out).
//! Restoration: the next check after the repair, within D + the check's time. TOLERANCE covers
//! the debug-build agent on two shared cores, tokio timers' millisecond rounding and the log
//! line's trip through a pipe to the test; measured slack here is tens of milliseconds.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lvs_tests::{
    http::{self, Tally},
    privilege::can_run,
    process::{Proc, agent_bin},
    tcp_server::TcpServer,
    topology::{DrLab, HEALTH_BODY, VIP, VIP6},
    udp::UdpResponder,
};

const TOLERANCE: Duration = Duration::from_millis(500);

/// md5 of HEALTH_BODY ("healthy\n").
const HEALTH_MD5: &str = "3b1fb749c971d7a2c6a517b37f735df2";

#[derive(Clone, Copy)]
struct Timing {
    delay_loop: f64,
    retry: u32,
    delay_before_retry: f64,
    connect_timeout: f64,
}

impl Timing {
    /// The timing keywords of a checker block.
    fn keywords(self) -> String {
        format!(
            "        delay_loop {}\n        retry {}\n        delay_before_retry {}\n        connect_timeout {}\n        warmup 0\n",
            self.delay_loop, self.retry, self.delay_before_retry, self.connect_timeout
        )
    }

    /// (earliest, latest) removal after a failure whose failing checks take `check`.
    fn removal(self, check: f64) -> (Duration, Duration) {
        let least = f64::from(self.retry) * self.delay_before_retry + f64::from(self.retry + 1) * check;
        (Duration::from_secs_f64(least), Duration::from_secs_f64(self.delay_loop + least) + TOLERANCE)
    }

    /// Latest restoration after a repair.
    fn restoration(self) -> Duration {
        Duration::from_secs_f64(self.delay_loop) + TOLERANCE
    }
}

/// A keepalived.conf: one rr service on VIP:80, each real server with the given checker blocks.
fn conf(lab: &DrLab, checkers: &[String], extra_vs: &str) -> String {
    let mut c = format!("virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n{extra_vs}");
    for (rs, chk) in lab.real_servers.iter().zip(checkers) {
        c.push_str(&format!("    real_server {} 80 {{\n        weight 1\n{chk}    }}\n", rs.ip));
    }
    c.push_str("}\n");
    c
}

/// Waits for the agent's line saying `needle` and returns the time since `since`. A decision's
/// line carries the time from decision to maps (`applied_in_us`): it must be under 10 ms.
fn wait(proc: &mut Proc, needle: &str, since: Instant, limit: Duration) -> Duration {
    let line = proc.wait_for_line(needle, limit).unwrap_or_else(|e| panic!("{e}"));
    let took = since.elapsed();
    if let Some(us) = line.split("applied_in_us=").nth(1) {
        let us: u64 = us.split_whitespace().next().and_then(|v| v.parse().ok()).expect("applied_in_us=N");
        assert!(us < 10_000, "decision to maps took {us} µs: {line}");
    }
    took
}

fn assert_within(what: &str, took: Duration, (least, most): (Duration, Duration)) {
    eprintln!("{what}: {took:?} (allowed {least:?} to {most:?})");
    assert!(took >= least && took <= most, "{what} took {took:?}, outside {least:?}..={most:?}");
}

/// 60 GETs through the VIP: who answered.
fn traffic(lab: &DrLab) -> Tally {
    http::get_many(&lab.client.ns, SocketAddr::from((VIP, 80)), 60, Duration::from_secs(60)).expect("client")
}

fn assert_traffic_avoids(lab: &DrLab, failed: &str) {
    let t = traffic(lab);
    assert_eq!(t.failures, 0, "{:?}", t.errors);
    assert_eq!(t.by_server.get(failed), None, "{failed} still gets traffic: {:?}", t.by_server);
    assert_eq!(t.by_server.len(), 2, "the two others share it: {:?}", t.by_server);
}

fn assert_traffic_reaches_all(lab: &DrLab) {
    let t = traffic(lab);
    assert_eq!((t.failures, t.by_server.len()), (0, 3), "{:?} {:?}", t.by_server, t.errors);
}

/// Traffic through the VIP reaches exactly `names`.
fn only(lab: &DrLab, names: &[&str]) {
    let t = traffic(lab);
    assert_eq!(t.failures, 0, "{:?}", t.errors);
    let got: Vec<&str> = t.by_server.keys().map(String::as_str).collect();
    assert_eq!(got, names, "{:?}", t.by_server);
}

/// `/metrics` as curl in the director's namespace gets it (Prometheus text).
fn metrics(lab: &DrLab) -> String {
    let out = lab.director.ns.run("curl", &["-sf", "http://127.0.0.1:9469/metrics"]).expect("curl /metrics");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `promtool check metrics` finds nothing to say about `text`.
fn promtool_accepts(lab: &DrLab, text: &str) {
    let (ok, said) = lvs_tests::promtool::check_metrics(&lab.director.ns, text);
    assert!(ok && said.trim().is_empty(), "promtool check metrics: {said}");
}

fn status(lab: &DrLab, agent: &std::path::Path) -> String {
    let out = lab.director.ns.run(agent.to_str().unwrap(), &["status"]).expect("lvs-agent status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http_get_status_digest_stopped_server_and_flapping() {
    if !can_run("http_get_status_digest_stopped_server_and_flapping") {
        return;
    }
    let agent = agent_bin();
    let mut lab = DrLab::http_bed("hhttp", 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let t = Timing { delay_loop: 0.5, retry: 1, delay_before_retry: 0.3, connect_timeout: 1.0 };
    let block = format!(
        "        HTTP_GET {{\n            url {{\n                path /health/ok\n                digest {HEALTH_MD5}\n                status_code 200\n                regex \"^healthy\"\n            }}\n{}        }}\n",
        t.keywords()
    );
    let mut proc = lab.start_agent(&agent, &conf(&lab, &[block.clone(), block.clone(), block], ""), &["-D"]).unwrap();
    let names: Vec<String> = lab.real_servers.iter().map(|r| r.name.clone()).collect();
    let ips: Vec<String> = lab.real_servers.iter().map(|r| r.ip.to_string()).collect();
    let addr = |i: usize| format!("{}:80", ips[i]);
    assert_traffic_reaches_all(&lab);

    // Wrong status: rs1's health file is gone (404).
    let health = lab.health_file(0);
    let t0 = Instant::now();
    std::fs::remove_file(&health).unwrap();
    let took = wait(&mut proc, &format!("{} is down", addr(0)), t0, Duration::from_secs(10));
    assert_within("wrong status: removal", took, t.removal(0.0));
    assert_traffic_avoids(&lab, &names[0]);
    let st = status(&lab, &agent);
    assert!(st.contains("down: HTTP_GET status (removed)"), "{st}");
    let m = metrics(&lab);
    let rs1 = format!(r#"server="{}""#, addr(0));
    let has =
        |prefix: &str, tail: &str| m.lines().any(|l| l.starts_with(prefix) && l.contains(&rs1) && l.ends_with(tail));
    assert!(has("lvs_real_server_healthy{", " 0"), "{m}");
    assert!(has("lvs_check_up{", r#"reason="status"} 0"#), "{m}");
    // Two failed checks decided; a third may have run since (delay_loop later).
    assert!(
        has("lvs_check_failures_total{", r#"reason="status"} 2"#)
            || has("lvs_check_failures_total{", r#"reason="status"} 3"#),
        "{m}"
    );
    assert!(m.lines().any(|l| l.starts_with("lvs_check_duration_seconds{") && l.contains(&rs1)), "{m}");
    promtool_accepts(&lab, &m);
    let t0 = Instant::now();
    std::fs::write(&health, HEALTH_BODY).unwrap();
    let took = wait(&mut proc, &format!("{} is up", addr(0)), t0, Duration::from_secs(10));
    assert_within("wrong status: restoration", took, (Duration::ZERO, t.restoration()));
    assert_traffic_reaches_all(&lab);

    // Wrong digest: rs2 answers 200 with another body.
    let health = lab.health_file(1);
    let t0 = Instant::now();
    std::fs::write(&health, "sick\n").unwrap();
    let line = proc.wait_for_line(&format!("{}: HTTP_GET down", addr(1)), Duration::from_secs(10)).unwrap();
    assert!(line.contains("digest"), "{line}");
    let took = wait(&mut proc, &format!("{} is down", addr(1)), t0, Duration::from_secs(10));
    assert_within("wrong digest: removal", took, t.removal(0.0));
    assert_traffic_avoids(&lab, &names[1]);
    let t0 = Instant::now();
    std::fs::write(&health, HEALTH_BODY).unwrap();
    let took = wait(&mut proc, &format!("{} is up", addr(1)), t0, Duration::from_secs(10));
    assert_within("wrong digest: restoration", took, (Duration::ZERO, t.restoration()));

    // Server stopped, three times (flapping): each time out and back in.
    for round in 1..=3 {
        let t0 = Instant::now();
        lab.stop_http_on(2).unwrap();
        let took = wait(&mut proc, &format!("{} is down", addr(2)), t0, Duration::from_secs(10));
        assert_within(&format!("stopped (round {round}): removal"), took, t.removal(0.0));
        assert_traffic_avoids(&lab, &names[2]);
        lab.start_http_on(2).unwrap();
        let t0 = Instant::now();
        let took = wait(&mut proc, &format!("{} is up", addr(2)), t0, Duration::from_secs(10));
        assert_within(&format!("stopped (round {round}): restoration"), took, (Duration::ZERO, t.restoration()));
        assert_traffic_reaches_all(&lab);
    }

    // A blip shorter than the retries: one failed check, then healthy again. keepalived's
    // retry keeps the server in; so must we.
    let health = lab.health_file(0);
    std::fs::remove_file(&health).unwrap();
    proc.wait_for_line(&format!("{}: HTTP_GET failed", addr(0)), Duration::from_secs(10)).unwrap();
    std::fs::write(&health, HEALTH_BODY).unwrap();
    let window = Duration::from_secs_f64(t.delay_before_retry + 2.0 * t.delay_loop);
    assert!(
        proc.wait_for_line(&format!("{} is down", addr(0)), window).is_err(),
        "a single failed check took a healthy server out"
    );
    assert_traffic_reaches_all(&lab);

    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn silent_drops_and_trickled_answers_fail_on_the_timeout() {
    if !can_run("silent_drops_and_trickled_answers_fail_on_the_timeout") {
        return;
    }
    let agent = agent_bin();
    let lab = DrLab::http_bed("htime", 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let t = Timing { delay_loop: 0.5, retry: 1, delay_before_retry: 0.3, connect_timeout: 0.6 };
    let tcp = format!("        TCP_CHECK {{\n            log_all_failures\n{}        }}\n", t.keywords());
    let trickle = Arc::new(AtomicBool::new(false));
    let rs2 = &lab.real_servers[1];
    let _slow = TcpServer::http(&rs2.ns, SocketAddr::from((rs2.ip, 8080)), trickle.clone(), Duration::from_millis(100))
        .expect("the trickling server");
    let http = format!(
        "        HTTP_GET {{\n            url {{\n                path /\n                digest {HEALTH_MD5}\n            }}\n            connect_port 8080\n{}        }}\n",
        t.keywords()
    );
    let mut proc = lab.start_agent(&agent, &conf(&lab, &[tcp.clone(), http, tcp], ""), &[]).unwrap();
    let names: Vec<String> = lab.real_servers.iter().map(|r| r.name.clone()).collect();
    let addr = |i: usize| format!("{}:80", lab.real_servers[i].ip);
    assert_traffic_reaches_all(&lab);

    // rs1 silently drops what it would send the director (a blackhole route): the director's
    // SYNs get no answer, each check waits connect_timeout. Clients are not affected (their
    // answers go straight to them), so only the health check can take rs1 out.
    let rs1 = &lab.real_servers[0];
    let t0 = Instant::now();
    rs1.ns.ip(&["route", "add", "blackhole", &lab.director.ip.to_string()]).unwrap();
    // log_all_failures: each timed-out check is a warning, the retry's too.
    for _ in 0..2 {
        let line = proc.wait_for_line(&format!("{}: TCP_CHECK failed", addr(0)), Duration::from_secs(10)).unwrap();
        assert!(line.contains("WARN") && (line.contains("timed out") || line.contains("in time")), "{line}");
    }
    let took = wait(&mut proc, &format!("{} is down", addr(0)), t0, Duration::from_secs(10));
    assert_within("dropped: removal", took, t.removal(t.connect_timeout));
    assert_traffic_avoids(&lab, &names[0]);
    let t0 = Instant::now();
    rs1.ns.ip(&["route", "del", "blackhole", &lab.director.ip.to_string()]).unwrap();
    let took = wait(&mut proc, &format!("{} is up", addr(0)), t0, Duration::from_secs(10));
    assert_within("dropped: restoration", took, (Duration::ZERO, t.restoration()));
    assert_traffic_reaches_all(&lab);

    // rs2's health server accepts and then trickles its answer (about 5 s in full): every
    // check ends at connect_timeout, the whole-check deadline.
    let t0 = Instant::now();
    trickle.store(true, Ordering::Relaxed);
    let took = wait(&mut proc, &format!("{} is down", addr(1)), t0, Duration::from_secs(10));
    assert_within("trickle: removal", took, t.removal(t.connect_timeout));
    assert_traffic_avoids(&lab, &names[1]);
    let t0 = Instant::now();
    trickle.store(false, Ordering::Relaxed);
    // The server is busy with the last trickled answer for up to its full length.
    let took = wait(&mut proc, &format!("{} is up", addr(1)), t0, Duration::from_secs(15));
    // The server may still be trickling the last (abandoned) answer: it serves one connection
    // at a time and notices the checker left at its next write, 100 ms at most.
    assert_within("trickle: restoration", took, (Duration::ZERO, t.restoration() + Duration::from_millis(100)));

    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn ssl_dns_smtp_udp_ping_and_misc_checkers() {
    if !can_run("ssl_dns_smtp_udp_ping_and_misc_checkers") {
        return;
    }
    let agent = agent_bin();
    let floor = lvs_tests::topology::write_object("hproto", lvs_agent::dataplane::objects::FLOOR).unwrap();
    let mut lab = DrLab::build("hproto", 3, &floor).expect("building the test bed");
    let _ = std::fs::remove_file(&floor);
    lab.prepare_real_servers(&agent).unwrap();
    lab.enable_tls().unwrap();
    lab.start_http().unwrap();
    let t = Timing { delay_loop: 0.5, retry: 1, delay_before_retry: 0.3, connect_timeout: 1.0 };
    let k = t.keywords();
    let (rs2, rs3) = (&lab.real_servers[1], &lab.real_servers[2]);

    // rs2: dnsmasq answering A health.test, and an SMTP responder.
    let dns_dir = lab.dir.join("dnsmasq");
    std::fs::create_dir_all(&dns_dir).unwrap();
    let dnsmasq = |lab: &DrLab| {
        let rs2 = &lab.real_servers[1];
        let mut cmd = rs2.ns.cmd("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={}", rs2.ip),
            "--address=/health.test/10.77.0.99",
            &format!("--pid-file={}", dns_dir.join("pid").display()),
            "--log-facility=-",
            "--user=root",
        ]);
        Proc::spawn("dnsmasq@rs2", &mut cmd).expect("starting dnsmasq")
    };
    let mut dns = Some(dnsmasq(&lab));
    let mut smtp = Some(TcpServer::smtp(&rs2.ns, SocketAddr::from((rs2.ip, 25))).unwrap());
    // rs3: a UDP responder (answers with its name, "rs3" = 727333) and a MISC_CHECK script
    // whose exit code is read from a file.
    let mut udp = Some(UdpResponder::start(&rs3.ns, SocketAddr::from((rs3.ip, 9000)), "rs3").unwrap());
    let code = lab.dir.join("misc-code");
    std::fs::write(&code, "0").unwrap();
    let script = lab.dir.join("misc-check");
    std::fs::write(&script, format!("#!/bin/sh\necho \"uid $(id -u)\"\nexit $(cat {})\n", code.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let blocks = [
        format!(
            "        SSL_GET {{\n            url {{\n                path /health/ok\n                digest {HEALTH_MD5}\n            }}\n            connect_port 443\n            enable_sni\n            sni_name lvs-test.example\n{k}        }}\n        \
             TCP_CHECK {{\n            connect_ip {}\n            connect_port 80\n            bindto {}\n            \
             bind_port 40123\n{k}        }}\n",
            lab.real_servers[0].ip, lab.director.ip
        ),
        format!(
            "        DNS_CHECK {{\n            type A\n            name health.test\n            connect_port 53\n            bind_if eth0\n{k}        }}\n        SMTP_CHECK {{\n            helo_name lvs-test\n{k}        }}\n"
        ),
        format!(
            "        UDP_CHECK {{\n            connect_port 9000\n            payload 50494e47\n            require_reply 7273XX\n            min_reply_length 3\n{k}        }}\n        PING_CHECK {{\n{k}        }}\n        MISC_CHECK {{\n            misc_path \"{} --ignored-arg\"\n            misc_timeout 2\n            misc_dynamic\n            user nobody\n            delay_loop {}\n            warmup 0\n        }}\n",
            script.display(),
            t.delay_loop
        ),
    ];
    // alpha: every server starts down and comes up on its checkers' first successes, which
    // shows each checker succeeding against its real peer.
    let mut proc = lab.start_agent(&agent, &conf(&lab, &blocks, "    alpha\n"), &["-D"]).unwrap();
    let addr = |i: usize| format!("{}:80", lab.real_servers[i].ip);
    let mut up = std::collections::BTreeSet::new();
    while up.len() < 3 {
        let line = proc.wait_for_line(" is up: ", Duration::from_secs(10)).unwrap();
        up.extend((0..3).filter(|&i| line.contains(&format!("{} is up", addr(i)))));
    }
    assert_traffic_reaches_all(&lab);
    let names: Vec<String> = lab.real_servers.iter().map(|r| r.name.clone()).collect();
    // MISC_CHECK runs as its `user` (nobody), its output in the log.
    let nobody = String::from_utf8(lab.director.ns.run("id", &["-u", "nobody"]).unwrap().stdout).unwrap();
    proc.wait_for_line(&format!("MISC_CHECK: uid {}", nobody.trim()), Duration::from_secs(5)).unwrap();

    // SSL_GET: the health file is gone; with a digest any status passes (keepalived's
    // default), so the 404 page fails on its digest.
    let health = lab.health_file(0);
    let t0 = Instant::now();
    std::fs::remove_file(&health).unwrap();
    let took = wait(&mut proc, &format!("{} is down", addr(0)), t0, Duration::from_secs(10));
    assert_within("SSL_GET 404 page: removal", took, t.removal(0.0));
    assert_traffic_avoids(&lab, &names[0]);
    let t0 = Instant::now();
    std::fs::write(&health, HEALTH_BODY).unwrap();
    let took = wait(&mut proc, &format!("{} is up", addr(0)), t0, Duration::from_secs(10));
    assert_within("SSL_GET: restoration", took, (Duration::ZERO, t.restoration()));

    // DNS_CHECK: dnsmasq stopped (port unreachable).
    let t0 = Instant::now();
    dns.take().unwrap().stop(libc::SIGTERM, Duration::from_secs(5)).unwrap();
    let took = wait(&mut proc, &format!("{} is down", addr(1)), t0, Duration::from_secs(10));
    assert_within("DNS_CHECK: removal", took, t.removal(0.0));
    assert_traffic_avoids(&lab, &names[1]);
    dns = Some(dnsmasq(&lab));
    let t0 = Instant::now();
    let took = wait(&mut proc, &format!("{} is up", addr(1)), t0, Duration::from_secs(10));
    assert_within("DNS_CHECK: restoration", took, (Duration::ZERO, t.restoration()));

    // SMTP_CHECK: responder stopped (refused).
    let t0 = Instant::now();
    drop(smtp.take());
    let took = wait(&mut proc, &format!("{} is down", addr(1)), t0, Duration::from_secs(10));
    assert_within("SMTP_CHECK: removal", took, t.removal(0.0));
    smtp = Some(TcpServer::smtp(&rs2.ns, SocketAddr::from((rs2.ip, 25))).unwrap());
    let t0 = Instant::now();
    let took = wait(&mut proc, &format!("{} is up", addr(1)), t0, Duration::from_secs(10));
    assert_within("SMTP_CHECK: restoration", took, (Duration::ZERO, t.restoration()));

    // UDP_CHECK: responder stopped (ICMP port unreachable).
    let t0 = Instant::now();
    udp.take().unwrap().stop();
    let took = wait(&mut proc, &format!("{} is down", addr(2)), t0, Duration::from_secs(10));
    assert_within("UDP_CHECK: removal", took, t.removal(0.0));
    assert_traffic_avoids(&lab, &names[2]);
    udp = Some(UdpResponder::start(&rs3.ns, SocketAddr::from((rs3.ip, 9000)), "rs3").unwrap());
    let t0 = Instant::now();
    let took = wait(&mut proc, &format!("{} is up", addr(2)), t0, Duration::from_secs(10));
    assert_within("UDP_CHECK: restoration", took, (Duration::ZERO, t.restoration()));

    // PING_CHECK: echo replies to the director dropped (blackhole route on rs3).
    let t0 = Instant::now();
    rs3.ns.ip(&["route", "add", "blackhole", &lab.director.ip.to_string()]).unwrap();
    let took = wait(&mut proc, &format!("{} is down", addr(2)), t0, Duration::from_secs(10));
    // UDP_CHECK (no reply either) may see it too; the first checker to give up decides.
    assert_within("PING_CHECK: removal", took, t.removal(t.connect_timeout));
    let t0 = Instant::now();
    rs3.ns.ip(&["route", "del", "blackhole", &lab.director.ip.to_string()]).unwrap();
    let took = wait(&mut proc, &format!("{} is up", addr(2)), t0, Duration::from_secs(10));
    // UDP_CHECK went down too, its last failing check ending up to connect_timeout after the
    // repair; both must be back.
    let most = t.restoration() + Duration::from_secs_f64(t.connect_timeout);
    assert_within("PING_CHECK: restoration", took, (Duration::ZERO, most));

    // MISC_CHECK misc_dynamic: exit 7 sets weight 5; exit 1 takes the server out (retry 0,
    // MISC_CHECK's default: the first failure decides).
    std::fs::write(&code, "7").unwrap();
    proc.wait_for_line(&format!("{}: weight 5 (misc_dynamic)", addr(2)), Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    std::fs::write(&code, "1").unwrap();
    let took = wait(&mut proc, &format!("{} is down", addr(2)), t0, Duration::from_secs(10));
    assert_within(
        "MISC_CHECK exit 1: removal",
        took,
        (Duration::ZERO, Duration::from_secs_f64(t.delay_loop) + TOLERANCE),
    );
    assert_traffic_avoids(&lab, &names[2]);
    std::fs::write(&code, "0").unwrap();
    let t0 = Instant::now();
    let took = wait(&mut proc, &format!("{} is up", addr(2)), t0, Duration::from_secs(10));
    assert_within("MISC_CHECK: restoration", took, (Duration::ZERO, t.restoration()));
    assert_traffic_reaches_all(&lab);

    drop((dns, smtp, udp));
    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn a_missing_script_is_a_config_test_error() {
    let dir = std::env::temp_dir().join(format!("lvs-hcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        "virtual_server 10.0.0.1 80 {\n  lb_kind DR\n  lb_algo rr\n  real_server 10.0.0.2 80 {\n    MISC_CHECK {\n      misc_path \"/nonexistent/check --flag\"\n    }\n  }\n}\n",
    )
    .unwrap();
    let out = std::process::Command::new(agent_bin()).args(["-t", "-f", conf.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("keepalived.conf:5:") && err.contains("/nonexistent/check not found"), "{err}");
}

#[test]
fn inhibit_on_failure_quorum_sorry_server_scripts_omega_and_reload() {
    if !can_run("inhibit_on_failure_quorum_sorry_server_scripts_omega_and_reload") {
        return;
    }
    let agent = agent_bin();
    let mut lab = DrLab::http_bed("hpool", 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let t = Timing { delay_loop: 0.5, retry: 1, delay_before_retry: 0.3, connect_timeout: 1.0 };
    // Scripts print a note, which the agent logs.
    let note = lab.dir.join("note.sh");
    std::fs::write(&note, "#!/bin/sh\necho \"note $1\"\n").unwrap();
    std::fs::set_permissions(&note, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let n = note.display();
    let (rs1, rs2, rs3) = (lab.real_servers[0].ip, lab.real_servers[1].ip, lab.real_servers[2].ip);
    let k = t.keywords();
    // rs1 and rs2 serve, rs3 is the sorry server.
    let config = |quorum: u32| {
        format!(
            "virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    quorum {quorum}\n    omega\n\
             \x20   sorry_server {rs3} 80\n    quorum_up \"{n} quorum-up\"\n    quorum_down \"{n} quorum-down\"\n\
             \x20   real_server {rs1} 80 {{\n        weight 1\n        inhibit_on_failure\n\
             \x20       notify_up \"{n} rs1-up\"\n        notify_down \"{n} rs1-down\"\n        TCP_CHECK {{\n{k}        }}\n    }}\n\
             \x20   real_server {rs2} 80 {{\n        weight 1\n        TCP_CHECK {{\n{k}        }}\n    }}\n}}\n"
        )
    };
    let mut proc = lab.start_agent(&agent, &config(1), &[]).unwrap();
    only(&lab, &["rs1", "rs2"]);

    // rs1 fails: inhibit_on_failure keeps it with weight 0, notify_down runs; quorum 1 holds.
    let t0 = Instant::now();
    lab.stop_http_on(0).unwrap();
    let took =
        wait(&mut proc, &format!("{rs1}:80 is down: weight 0 (inhibit_on_failure)"), t0, Duration::from_secs(10));
    assert_within("inhibit: weight 0", took, t.removal(0.0));
    proc.wait_for_line("note rs1-down", Duration::from_secs(5)).unwrap();
    let list = lab.director.ns.run(agent.to_str().unwrap(), &["list", "-n"]).unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let rs1_row = list.lines().find(|l| l.contains(&format!("{rs1}:80"))).unwrap_or_else(|| panic!("{list}"));
    assert_eq!(rs1_row.split_whitespace().nth(3), Some("0"), "weight 0 in `list`: {list}");
    only(&lab, &["rs2"]);

    // A reload raising quorum to 2: rs1's checker keeps its state (still down, no flap), so the
    // live weight 1 is below quorum: quorum_down runs and the sorry server takes the traffic.
    std::fs::write(lab.dir.join("keepalived.conf"), config(2)).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(proc.pid()).unwrap(), libc::SIGHUP) };
    proc.wait_for_line("quorum lost (live weight 1)", Duration::from_secs(10)).unwrap();
    proc.wait_for_line("reloaded /", Duration::from_secs(10)).unwrap();
    proc.wait_for_line("note quorum-down", Duration::from_secs(5)).unwrap();
    only(&lab, &["rs3"]);

    // rs1 is back: notify_up, quorum regained, quorum_up; the sorry server leaves.
    lab.start_http_on(0).unwrap();
    let t0 = Instant::now();
    let took = wait(&mut proc, &format!("{rs1}:80 is up: weight 1"), t0, Duration::from_secs(10));
    assert_within("inhibit: restoration", took, (Duration::ZERO, t.restoration()));
    proc.wait_for_line("quorum gained (live weight 2)", Duration::from_secs(5)).unwrap();
    // The two scripts run concurrently: either may log first.
    let mut notes: Vec<String> = (0..2)
        .map(|_| {
            let line = proc.wait_for_line("note ", Duration::from_secs(5)).unwrap();
            line.split("note ").nth(1).unwrap_or_default().split_whitespace().next().unwrap_or_default().to_string()
        })
        .collect();
    notes.sort();
    assert_eq!(notes, ["quorum-up", "rs1-up"]);
    only(&lab, &["rs1", "rs2"]);

    // omega: quorum_down runs at shutdown.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(proc.pid()).unwrap(), libc::SIGTERM) };
    proc.wait_for_line("note quorum-down", Duration::from_secs(10)).unwrap();
    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn ipv6_tcp_http_and_ping_checks() {
    if !can_run("ipv6_tcp_http_and_ping_checks") {
        return;
    }
    let agent = agent_bin();
    let floor = lvs_tests::topology::write_object("hv6", lvs_agent::dataplane::objects::FLOOR).unwrap();
    let mut lab = DrLab::build("hv6", 3, &floor).expect("building the test bed");
    let _ = std::fs::remove_file(&floor);
    lab.enable_ipv6().unwrap();
    lab.prepare_real_servers_v6(&agent).unwrap();
    lab.start_http().unwrap();
    let t = Timing { delay_loop: 0.5, retry: 1, delay_before_retry: 0.3, connect_timeout: 1.0 };
    // bindto: the director holds VIP6/128 in the segment's /64, and Linux's source address
    // selection (longest match, capped at each address's prefix length) would pick VIP6 for
    // the checks, whose answers the real servers (VIP6 on lo) then keep. keepalived needs the
    // same on such a director.
    let k = format!("{}            bindto {}\n", t.keywords(), lab.director.ip6());
    let mut conf =
        format!("virtual_server {VIP6} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    alpha\n");
    for rs in &lab.real_servers {
        conf.push_str(&format!(
            "    real_server {} 80 {{\n        weight 1\n        TCP_CHECK {{\n{k}        }}\n        PING_CHECK {{\n{k}        }}\n\
             \x20       HTTP_GET {{\n            url {{\n                path /health/ok\n                digest {HEALTH_MD5}\n            }}\n{k}        }}\n    }}\n",
            rs.ip6()
        ));
    }
    conf.push_str("}\n");
    // alpha: each server comes up on its three checkers' first successes over IPv6.
    let mut proc = lab.start_agent(&agent, &conf, &["-D"]).unwrap();
    let addr = |i: usize| format!("[{}]:80", lab.real_servers[i].ip6());
    let mut up = std::collections::BTreeSet::new();
    while up.len() < 3 {
        let line = proc.wait_for_line(" is up: ", Duration::from_secs(10)).unwrap();
        up.extend((0..3).filter(|&i| line.contains(&format!("{} is up", addr(i)))));
    }
    let vip6 = SocketAddr::from((VIP6, 80));
    let all = http::get_many(&lab.client.ns, vip6, 60, Duration::from_secs(60)).unwrap();
    assert_eq!((all.failures, all.by_server.len()), (0, 3), "{:?} {:?}", all.by_server, all.errors);

    let a1 = addr(0);
    let t0 = Instant::now();
    lab.stop_http_on(0).unwrap();
    let took = wait(&mut proc, &format!("{a1} is down"), t0, Duration::from_secs(10));
    assert_within("IPv6 stopped: removal", took, t.removal(0.0));
    let after = http::get_many(&lab.client.ns, vip6, 60, Duration::from_secs(60)).unwrap();
    assert_eq!(after.failures, 0, "{:?}", after.errors);
    assert_eq!(after.by_server.get("rs1"), None, "{:?}", after.by_server);
    lab.start_http_on(0).unwrap();
    let t0 = Instant::now();
    let took = wait(&mut proc, &format!("{a1} is up"), t0, Duration::from_secs(10));
    assert_within("IPv6: restoration", took, (Duration::ZERO, t.restoration()));

    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}
