//! The agent's logging options, through `-t` (no privilege needed): the default output is
//! unchanged, `--log-format syslog` prefixes each line with its sd-daemon(3) priority,
//! `--log-format json` writes one object per line, `--log-file` receives the lines too.

use std::process::Command;

// lblc is IPVS's, not XDP's: a plan error under lb_kind DR (NAT would take it, through IPVS).
const BAD: &str = "virtual_server 10.0.0.100 80 {\n  lb_algo lblc\n  lb_kind DR\n  real_server 10.0.0.11 80 {\n    weight 2\n  }\n}\n";

struct Out {
    code: Option<i32>,
    stderr: String,
    file: Option<String>,
}

fn agent(name: &str, args: &[&str], conf: &str, log_file: bool) -> Out {
    let dir = std::env::temp_dir().join(format!("lvs-logging-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let log = dir.join("lvs-agent.log");
    let mut cmd = Command::new(lvs_tests::process::agent_bin());
    cmd.args(args);
    if log_file {
        cmd.args(["--log-file", log.to_str().unwrap()]);
    }
    // Not under journald here, whatever the caller's environment.
    let out = cmd.args(["-t", "-f", path.to_str().unwrap()]).env_remove("JOURNAL_STREAM").output().unwrap();
    let file = std::fs::read_to_string(&log).ok();
    let _ = std::fs::remove_dir_all(&dir);
    let conf_path = path.to_str().unwrap();
    Out {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).replace(conf_path, "CONF"),
        file: file.map(|f| f.replace(conf_path, "CONF")),
    }
}

#[test]
fn without_options_the_output_is_plain() {
    let o = agent("plain", &[], BAD, false);
    assert_eq!(o.code, Some(4), "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stderr);
    assert!(lines[0].starts_with("error: CONF:1:1: virtual_server 10.0.0.100:80: lb_algo lblc"), "{}", o.stderr);
    assert_eq!(lines[1], "CONF: 1 errors; lvs-agent would not start");
}

#[test]
fn syslog_format_prefixes_every_line_with_its_priority() {
    let o = agent("syslog", &["--log-format", "syslog"], BAD, false);
    assert_eq!(o.code, Some(4), "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stderr);
    assert!(lines[0].starts_with("<3>error: CONF:1:1: virtual_server"), "{}", o.stderr);
    assert_eq!(lines[1], "<3>CONF: 1 errors; lvs-agent would not start");

    let good = BAD.replace("lb_algo lblc", "lb_algo wlc");
    let o = agent("syslog-ok", &["--log-format", "syslog"], &good, false);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stderr, "<6>CONF: configuration OK (1 virtual servers, 0 warnings)\n");
}

#[test]
fn json_format_is_one_object_per_line() {
    let o = agent("json", &["--log-format", "json"], BAD, false);
    assert_eq!(o.code, Some(4), "{}", o.stderr);
    let objects: Vec<serde_json::Value> = o.stderr.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{}", o.stderr);
    assert_eq!(objects[0]["level"], "ERROR");
    assert!(objects[0]["message"].as_str().unwrap().starts_with("error: CONF:1:1:"), "{}", o.stderr);
    assert_eq!(objects[1]["message"], "CONF: 1 errors; lvs-agent would not start");
}

#[test]
fn the_log_file_receives_the_lines_with_timestamps() {
    let o = agent("file", &["--log-format", "syslog"], BAD, true);
    assert_eq!(o.code, Some(4), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 2, "{}", o.stderr);
    let file = o.file.expect("the log file was created");
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines.len(), 2, "{file}");
    for l in &lines {
        // 2026-01-02T03:04:05.678901Z ERROR lvs_agent: …, no colours.
        let (stamp, rest) = l.split_once(' ').unwrap();
        assert!(stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{l}");
        assert!(rest.starts_with("ERROR lvs_agent: "), "{l}");
        assert!(!l.contains('\x1b'), "{l}");
    }
    assert!(lines[1].ends_with("CONF: 1 errors; lvs-agent would not start"), "{file}");

    // Appends: a second run adds its lines after the first's.
    let dir = std::env::temp_dir().join(format!("lvs-logging-{}-append", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (conf, log) = (dir.join("k.conf"), dir.join("a.log"));
    std::fs::write(&conf, BAD).unwrap();
    for _ in 0..2 {
        let out = Command::new(lvs_tests::process::agent_bin())
            .args(["--log-file", log.to_str().unwrap(), "-t", "-f", conf.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn an_unwritable_log_file_is_one_sentence() {
    let out = Command::new(lvs_tests::process::agent_bin())
        .args(["--log-file", "/nonexistent/dir/lvs.log", "-t", "-f", "/nonexistent/keepalived.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "lvs-agent: opening the log file /nonexistent/dir/lvs.log: No such file or directory (os error 2)"
    );
}
