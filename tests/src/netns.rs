//! Named network namespaces (`ip netns`), deleted on drop.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output},
    thread,
};

use anyhow::{Context as _, Result, bail};

/// Runs a command and fails with its stderr when it does.
pub fn sh(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// `ip ARGS…`
pub fn ip(args: &[&str]) -> Result<Output> {
    sh(Command::new("ip").args(args))
}

/// Deletes every namespace whose name starts with `prefix` (leftovers of a crashed run).
pub fn remove_stale(prefix: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for name in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(prefix) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` (must start with `lvs-`) with `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        assert!(name.starts_with("lvs-"), "test namespaces are named lvs-…");
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command run inside the namespace.
    #[must_use]
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `ip -n NS ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `program ARGS…` in the namespace, failing on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        sh(self.cmd(program).args(args))
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens live there).
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let handle = thread::spawn(move || {
            // SAFETY: valid namespace fd; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r.context("setns"),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
