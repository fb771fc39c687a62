//! Packet counts with tcpdump, inside a namespace.

use std::time::Duration;

use anyhow::Result;

use crate::{netns::Netns, process::Proc};

pub struct Capture {
    proc: Proc,
}

impl Capture {
    /// Starts capturing on `iface` with a BPF `filter`; returns once tcpdump listens.
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> Result<Self> {
        let mut cmd = ns.cmd("tcpdump");
        cmd.args(["-i", iface, "-n", "-p", "-q", "-l", filter]);
        let mut proc = Proc::spawn(&format!("tcpdump@{}", ns.name), &mut cmd)?;
        proc.wait_for_line("listening on", Duration::from_secs(10))?;
        Ok(Self { proc })
    }

    /// Stops and returns how many packets matched.
    pub fn stop(self) -> Result<u64> {
        let (_, out) = self.proc.stop(libc::SIGINT, Duration::from_secs(10))?;
        // -l prints one line per packet on stdout.
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    }
}
