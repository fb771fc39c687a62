//! The shipped systemd unit (dist/lvs-agent.service) is valid and its commands exist, checked
//! by systemd's own verifier against the binary under test.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/lvs-agent.service")).unwrap();
    let agent = lvs_tests::process::agent_bin();
    let dir = std::env::temp_dir().join(format!("lvs-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lvs-agent.service");
    std::fs::write(&path, unit.replace("/usr/sbin/lvs-agent", agent.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", path.to_str().unwrap()]).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("systemd-analyze (Debian package systemd; `cargo xtask setup` installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on warnings (an unknown key, say), naming the file: any line about our
    // unit is a problem. Lines about units the host lacks (keepalived may be absent) are not.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("lvs-agent.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
