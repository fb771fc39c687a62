//! The agent's failures, as an operator meets them: one clear sentence naming the file:line,
//! the interface or the privilege at fault, a non-zero exit, and nothing attached.

use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};

use lvs_tests::{netns::Netns, privilege::can_run};

const GOOD: &str = "virtual_server 10.9.0.100 80 {\n  lb_algo rr\n  lb_kind DR\n  real_server 10.9.0.11 80 {\n  }\n}\n";

struct Run {
    code: Option<i32>,
    stderr: String,
}

/// Runs `lvs-agent run` in namespace `ns` (so nothing can touch the host's interfaces),
/// optionally as user nobody.
fn agent_run(ns: &Netns, conf: &str, iface: &str, as_nobody: bool) -> Run {
    let path = std::env::temp_dir().join(format!("{}.conf", ns.name));
    std::fs::write(&path, conf).unwrap();
    let netns = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let mut cmd = std::process::Command::new(lvs_tests::process::agent_bin());
    cmd.args(["run", "-f", path.to_str().unwrap(), "-i", iface, "--resolve-wait", "0"]);
    // SAFETY: only async-signal-safe calls between fork and exec; the fd outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if as_nobody && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_file(path);
    Run { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn attached(ns: &Netns) -> bool {
    let out = ns.ip(&["link", "show"]).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn a_config_error_names_file_line_and_attaches_nothing() {
    if !can_run("a_config_error_names_file_line_and_attaches_nothing") {
        return;
    }
    let ns = Netns::create("lvs-cli-conf").unwrap();
    let bad = GOOD
        .replace("lb_algo rr", "lb_algo rr\n  lb_kind DIRECT")
        .replace("real_server 10.9.0.11 80", "real_server 10.9.0.11 8x0");
    let r = agent_run(&ns, &bad, "lo", false);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.trim().lines().collect();
    assert_eq!(
        lines,
        [
            "lvs-agent: /tmp/lvs-cli-conf.conf:3:11: invalid lb_kind `DIRECT`: expected DR, NAT or TUN",
            "/tmp/lvs-cli-conf.conf:5:25: invalid port `8x0`: expected an integer 0-65535",
        ],
        "every problem, once each, at file:line:column"
    );
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("backtrace"), "{}", r.stderr);
    assert!(!attached(&ns));
}

#[test]
fn a_missing_interface_is_one_sentence() {
    if !can_run("a_missing_interface_is_one_sentence") {
        return;
    }
    let ns = Netns::create("lvs-cli-iface").unwrap();
    let r = agent_run(&ns, GOOD, "nope0", false);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stderr.trim(), "lvs-agent: interface `nope0` not found");
}

#[test]
fn missing_privilege_is_one_sentence() {
    if !can_run("missing_privilege_is_one_sentence") {
        return;
    }
    let ns = Netns::create("lvs-cli-priv").unwrap();
    let r = agent_run(&ns, GOOD, "lo", true);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let last = r.stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("lvs-agent: loading the XDP program needs root"), "{}", r.stderr);
    assert!(!attached(&ns));
    // It ran in the host's mount namespace, where /sys/fs/bpf is a bpffs: the failed start
    // takes back the pin directory it made.
    let pins = std::path::Path::new("/sys/fs/bpf/lvs-xdp/netns/lvs-cli-priv");
    assert!(!pins.exists(), "{} left behind", pins.display());
}

#[test]
fn the_agent_detaches_on_sigterm() {
    if !can_run("the_agent_detaches_on_sigterm") {
        return;
    }
    let ns = Netns::create("lvs-cli-term").unwrap();
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]).unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["link", "set", "eth1", "up"]).unwrap();
    let path = std::env::temp_dir().join("lvs-cli-term.conf");
    std::fs::write(&path, GOOD).unwrap();
    let mut cmd = ns.cmd(lvs_tests::process::agent_bin().to_str().unwrap());
    cmd.args(["run", "-f", path.to_str().unwrap(), "-i", "eth0", "--resolve-wait", "0"]);
    let mut proc = lvs_tests::process::Proc::spawn("lvs-agent", &mut cmd).unwrap();
    proc.wait_for_line("forwarding", std::time::Duration::from_secs(20)).unwrap();
    assert!(attached(&ns), "attached while running");
    let (status, _) = proc.stop(libc::SIGTERM, std::time::Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    assert!(!attached(&ns), "detached after SIGTERM");
    let _ = std::fs::remove_file(path);
}
