//! Child processes owned by a test: killed on drop, their output readable line by line, and
//! waits on log lines instead of sleeps.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Pins the calling thread to `cpu`. BPF_PROG_TEST_RUN runs on the calling CPU, and the
/// program's per-CPU state (scheduling cursors, flow cache, counters) is that CPU's: tests and
/// benchmarks that compare runs must stay on one.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
}

/// The `lvs-agent` binary under test: `LVS_AGENT_BIN` (set by `cargo xtask test`), else the
/// workspace's debug build.
#[must_use]
pub fn agent_bin() -> std::path::PathBuf {
    let path = std::env::var_os("LVS_AGENT_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/lvs-agent"),
        std::path::PathBuf::from,
    );
    assert!(path.is_file(), "{} missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// A running child whose stderr lines arrive on a channel (and are echoed, prefixed).
pub struct Proc {
    pub name: String,
    child: Child,
    /// Drains stdout as the child writes it (a pipe left unread blocks the child once full).
    stdout: Option<thread::JoinHandle<String>>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        // A process group of its own, so that dropping it also ends what it started (nginx's
        // workers, keepalived's children, scripts), which would otherwise outlive the test.
        let mut child = std::os::unix::process::CommandExt::process_group(cmd, 0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, lines) = mpsc::channel();
        let tag = name.to_string();
        let echo = std::env::var_os("LVS_TEST_QUIET").is_none();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout = child.stdout.take().map(|mut out: ChildStdout| {
            thread::spawn(move || {
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                text
            })
        });
        Ok(Self { name: name.to_string(), child, stdout, lines, seen: Vec::new() })
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line contains `needle`; fails if the process exits or `limit` passes.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{}: no line with `{needle}` within {limit:?}", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "{}: exited ({status:?}) before printing `{needle}`; it said:\n{}",
                        self.name,
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Whether a stderr line read so far (by `wait_for_line`) contains `needle`.
    #[must_use]
    pub fn said(&self, needle: &str) -> bool {
        self.seen.iter().any(|l| l.contains(needle))
    }

    /// Sends `signal`, waits at most `limit` for the exit, and returns the child's stdout.
    pub fn stop(mut self, signal: i32, limit: Duration) -> Result<(std::process::ExitStatus, String)> {
        let pid = i32::try_from(self.child.id()).context("pid")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not exit within {limit:?} of signal {signal}", self.name);
            }
            thread::sleep(Duration::from_millis(10));
        };
        let out = self.stdout.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        Ok((status, out))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group, the leader's descendants too, even if the leader has already gone
        // (a group keeps its id, which the kernel does not reuse while any member lives).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.wait();
        }
    }
}
