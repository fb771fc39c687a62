//! `lvs-agent config-test` / `-t`: keepalived's exit-code contract, every problem at once.
//! Needs no privilege: nothing is loaded or attached.

use std::process::Command;

fn config_test(args: &[&str], conf: &str) -> (Option<i32>, String) {
    // One directory per call: the tests run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lvs-config-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_lvs-agent")).args(args).args(["-f", path.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "CONF"))
}

const GOOD: &str = "virtual_server 10.0.0.100 80 {\n  lb_algo wlc\n  lb_kind DR\n  real_server 10.0.0.11 80 {\n    weight 2\n    TCP_CHECK {\n      connect_timeout 3\n    }\n  }\n}\n";

#[test]
fn a_good_config_exits_0_with_its_warnings() {
    // A real server on another port than its virtual server's: accepted, with a warning.
    let conf = GOOD.replace("real_server 10.0.0.11 80", "real_server 10.0.0.11 8080");
    for args in [&["config-test"][..], &["-t"]] {
        let (code, err) = config_test(args, &conf);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("warning: CONF:4:3: real_server 10.0.0.11:8080: direct routing keeps"), "{err}");
        // Health checks run: TCP_CHECK is no longer "parsed but not active".
        assert!(!err.contains("TCP_CHECK"), "{err}");
        assert!(err.ends_with("CONF: configuration OK (1 virtual servers, 1 warnings)\n"), "{err}");
    }
}

#[test]
fn every_error_is_printed_and_the_exit_code_is_4() {
    let bad = GOOD.replace("lb_algo wlc", "lb_algo wlc\n  lb_kind NAT").replace("weight 2", "weight -1");
    let (code, err) = config_test(&["-t"], &bad);
    assert_eq!(code, Some(4), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "the syntax error stops before the plan: {err}");
    assert!(errors[0].starts_with("error: CONF:6:12:"), "{err}");

    // Syntactically fine, but not something run accepts: the plan's errors, with locations.
    let (code, err) = config_test(&["config-test"], &GOOD.replace("lb_kind DR", "lb_kind NAT"));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("error: CONF:1:1: virtual_server 10.0.0.100:80: lb_kind NAT"), "{err}");
    assert!(err.ends_with("1 errors; lvs-agent would not start\n"), "{err}");
}

#[test]
fn a_missing_file_exits_4() {
    let out = Command::new(env!("CARGO_BIN_EXE_lvs-agent"))
        .args(["-t", "-f", "/nonexistent/keepalived.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/keepalived.conf"));
}

#[test]
fn vrrp_instances_are_checked_as_run_takes_them() {
    let vrrp = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  virtual_ipaddress {\n    10.0.0.100\n  }\n}\n";
    let (code, err) = config_test(&["-t"], &format!("{GOOD}{vrrp}"));
    assert_eq!(code, Some(0), "{err}");
    // No virtual_router_id: said at the instance.
    let (code, err) = config_test(&["-t"], &format!("{GOOD}{}", vrrp.replace("  virtual_router_id 51\n", "")));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("error: CONF:11:1: vrrp_instance VI_1 has no virtual_router_id"), "{err}");
}
