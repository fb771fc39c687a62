//! Prometheus `/metrics` end to end: HTTP through the VIP, then the agent's exposition read
//! with curl inside the director's namespace (its loopback is the namespace's own), checked by
//! `promtool check metrics`, and scraped by a real Prometheus server whose query API must give
//! back the connections the client saw.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lvs_tests::{
    http,
    netns::Netns,
    privilege::can_run,
    process::Proc,
    topology::{DrLab, VIP},
};

const METRICS: &str = "127.0.0.1:9469";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// `curl -s` inside `ns`; (HTTP status, Content-Type, body).
fn curl(ns: &Netns, url: &str, extra: &[&str]) -> (String, String, String) {
    let mut args = vec!["-s", "-m", "5", "-w", "\n%{http_code} %{content_type}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = ns.run("curl", &args).unwrap_or_else(|e| panic!("curl {url}: {e}"));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, trailer) = text.rsplit_once('\n').expect("curl's -w trailer");
    let (status, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    (status.to_string(), content_type.to_string(), body.to_string())
}

/// The value of the sample `name{…,server="SERVER"}` in an exposition.
fn sample(text: &str, name: &str, server: &str) -> Option<u64> {
    let needle = format!(r#"server="{server}"}}"#);
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One instant query's value from Prometheus's HTTP API, if the series exists.
fn query(ns: &Netns, expr: &str) -> Option<u64> {
    let out = ns
        .run(
            "curl",
            &[
                "-sf",
                "-m",
                "2",
                "-G",
                "--data-urlencode",
                &format!("query={expr}"),
                &format!("http://{PROMETHEUS}/api/v1/query"),
            ],
        )
        .ok()?;
    let json = String::from_utf8_lossy(&out.stdout);
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{…},"value":[T,"N"]}]}}
    assert!(json.contains(r#""status":"success""#), "query {expr}: {json}");
    let results = json.matches(r#""value":["#).count();
    assert!(results <= 1, "query {expr} matched {results} series: {json}");
    let value = json.split(r#""value":["#).nth(1)?;
    value.split(',').nth(1)?.split('"').nth(1)?.parse().ok()
}

#[test]
fn metrics_count_what_the_client_saw_and_prometheus_scrapes_them() {
    if !can_run("metrics_count_what_the_client_saw_and_prometheus_scrapes_them") {
        return;
    }
    let tag = "metrics";
    let agent = lvs_tests::process::agent_bin();
    let lab = DrLab::http_bed(tag, 3, lvs_agent::dataplane::objects::FLOOR).expect("building the test bed");
    let weights = [1u32, 2, 3];
    let conf = lab.keepalived_conf("wrr", 80, "TCP", &weights);
    let proc = lab.start_agent(&agent, &conf, &["--metrics-address", METRICS]).expect("starting lvs-agent");

    const CONNECTIONS: u64 = 600;
    let tally = http::get_many(&lab.client.ns, SocketAddr::from((VIP, 80)), CONNECTIONS, Duration::from_secs(60))
        .expect("client");
    assert_eq!(tally.failures, 0, "failed connections: {:?}", tally.errors);
    assert_eq!(tally.answered(), CONNECTIONS);
    let seen = |name: &str| tally.by_server.get(name).copied().unwrap_or(0);
    let ns = &lab.director.ns;

    // The exposition as curl gets it (no Accept header): Prometheus text 0.0.4.
    let (status, content_type, text) = curl(ns, &format!("http://{METRICS}/metrics"), &[]);
    assert_eq!(status, "200", "{text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    for (rs, w) in lab.real_servers.iter().zip(weights) {
        let server = format!("{}:80", rs.ip);
        // Every connection the client made, counted on the real server that answered it.
        assert_eq!(
            sample(&text, "lvs_real_server_connections_total", &server),
            Some(seen(&rs.name)),
            "{server}:\n{text}"
        );
        assert_eq!(sample(&text, "lvs_real_server_weight", &server), Some(u64::from(w)), "{text}");
        assert_eq!(sample(&text, "lvs_real_server_up", &server), Some(1), "{text}");
        assert!(sample(&text, "lvs_real_server_packets_total", &server).unwrap_or(0) >= 3 * seen(&rs.name));
    }
    let service = format!(r#"{{protocol="TCP",address="{VIP}:80",scheduler="wrr"}}"#);
    assert!(text.contains(&format!("lvs_service_connections_total{service} {CONNECTIONS}\n")), "{text}");
    assert!(text.contains(&format!("lvs_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))), "{text}");
    let (ok, said) = lvs_tests::promtool::check_metrics(ns, &text);
    assert!(ok && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
    // Negative control: promtool does reject a broken exposition.
    let (ok, _) = lvs_tests::promtool::check_metrics(
        ns,
        &text.replace("# TYPE lvs_real_server_up gauge", "# TYPE lvs_real_server_up counter"),
    );
    assert!(!ok, "promtool accepted a gauge declared as a counter");

    // OpenMetrics when asked for, as Prometheus asks; the same samples.
    let (status, content_type, om) =
        curl(ns, &format!("http://{METRICS}/metrics"), &["-H", "Accept: application/openmetrics-text; version=1.0.0"]);
    assert_eq!(status, "200");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let samples = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("lvs_start_time"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(samples(&om), samples(&text));
    let (status, _, _) = curl(ns, &format!("http://{METRICS}/"), &[]);
    assert_eq!(status, "404");

    // A real Prometheus server in the director's namespace, scraping every second.
    let config = lab.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: lvs\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .expect("writing prometheus.yml");
    let mut cmd = ns.cmd("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", lab.dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={PROMETHEUS}"));
    let mut prometheus = Proc::spawn("prometheus", &mut cmd).expect("starting prometheus");
    prometheus.wait_for_line("Server is ready to receive web requests", Duration::from_secs(30)).expect("prometheus");
    let (status, _, ready) = curl(ns, &format!("http://{PROMETHEUS}/-/ready"), &[]);
    assert_eq!(status, "200", "/-/ready: {ready}");

    // Poll the query API until every real server's series is there (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let values: Vec<Option<u64>> = lab
            .real_servers
            .iter()
            .map(|rs| query(ns, &format!(r#"lvs_real_server_connections_total{{server="{}:80"}}"#, rs.ip)))
            .collect();
        if values.iter().all(Option::is_some) {
            break values;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no lvs_real_server_connections_total after 20 s: {values:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (rs, value) in lab.real_servers.iter().zip(&scraped) {
        assert_eq!(*value, Some(seen(&rs.name)), "{} as Prometheus scraped it", rs.name);
    }
    assert_eq!(query(ns, r#"up{job="lvs"}"#), Some(1), "the scrape target is up");
    assert_eq!(query(ns, r#"lvs_build_info"#), Some(1));

    drop(prometheus);
    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).expect("stopping the agent");
    assert!(status.success(), "agent exit: {status}");
}

#[test]
fn a_metrics_address_in_use_stops_start_up_with_one_sentence() {
    if !can_run("a_metrics_address_in_use_stops_start_up_with_one_sentence") {
        return;
    }
    let ns = Netns::create("lvs-metrics-busy").expect("namespace");
    let conf = std::env::temp_dir().join("lvs-metrics-busy.conf");
    std::fs::write(
        &conf,
        "virtual_server 10.1.0.100 80 {\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    real_server 10.1.0.11 80 {\n        weight 1\n    }\n}\n",
    )
    .expect("writing the config");
    // Something else holds the port in that namespace.
    let holder = ns.within(|| std::net::TcpListener::bind(METRICS)).expect("setns").expect("binding the port first");
    let out = ns
        .cmd(lvs_tests::process::agent_bin().to_str().expect("path"))
        .args(["run", "-f", conf.to_str().expect("path"), "-i", "lo", "--resolve-wait", "0"])
        .args(["--metrics-address", METRICS])
        .stdin(Stdio::null())
        .output()
        .expect("running the agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent started: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lvs-agent: cannot listen for Prometheus scrapes") && last.contains(METRICS),
        "stderr: {stderr}"
    );
    // And nothing was attached to the interface.
    let link = ns.ip(&["link", "show", "lo"]).expect("ip link");
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"), "an XDP program stayed attached");
    drop(holder);
    let _ = std::fs::remove_file(conf);

    // An address that is not one is refused by the command line.
    let out = Command::new(lvs_tests::process::agent_bin())
        .args(["run", "-i", "lo", "--metrics-address", "localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("running the agent");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not ADDR:PORT"), "{out:?}");
}
