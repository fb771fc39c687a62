//! keepalived's own sample configurations (doc/samples, shipped by Debian's keepalived package
//! under /usr/share/doc/keepalived/samples) as the parser's acceptance corpus: every one of
//! them parses without an error, and what they declare arrives in the typed config.
//!
//! The samples are read where Debian installs them, not copied into this repository.

use std::path::Path;

use lvs_agent::config;

const SAMPLES: &str = "/usr/share/doc/keepalived/samples";

#[test]
fn every_keepalived_sample_parses() {
    let dir = Path::new(SAMPLES);
    if !dir.is_dir() {
        // `cargo xtask setup` installs keepalived; under CI its absence is a failure.
        assert!(std::env::var_os("CI").is_none(), "{SAMPLES} is missing: install Debian's keepalived package");
        eprintln!("SKIPPED every_keepalived_sample_parses: {SAMPLES} is missing (apt install keepalived)");
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("keepalived.conf")))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "Debian's keepalived ships some 25 samples; found {}", files.len());
    let (mut vrrp, mut lvs) = (0, 0);
    for path in &files {
        let loaded = match config::load(path) {
            Ok(l) => l,
            Err(e) => panic!("{} does not parse:\n{e}", path.display()),
        };
        vrrp += loaded.config.vrrp_instances.len();
        let servers = loaded.config.virtual_servers.len() + loaded.config.other_virtual_servers.len();
        lvs += servers;
        // Each sample is about VRRP or LVS (or both) and must show it.
        assert!(
            !loaded.config.vrrp_instances.is_empty() || servers > 0,
            "{}: neither vrrp_instance nor virtual_server came through",
            path.display()
        );
    }
    eprintln!("{} samples: {vrrp} vrrp_instance blocks, {lvs} virtual_server blocks", files.len());
}
