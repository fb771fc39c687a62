//! A VRRP bed: two routers (`a`, `b`) and a third host (`c`) on one bridge, in namespaces
//! `lvs-vTAG-*`, with keepalived and lvs-agent as children of the test.
//!
//! ```text
//!   lvs-vTAG-a  eth0 10.88.0.1/24 ─┐
//!   lvs-vTAG-b  eth0 10.88.0.2/24 ─┼─ br0 (lvs-vTAG-br)
//!   lvs-vTAG-c  eth0 10.88.0.3/24 ─┘
//! ```

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    netns::{Netns, remove_stale},
    process::{Proc, agent_bin},
};

pub const VIP: &str = "10.88.0.100";
pub const VIP6: &str = "fd00:88::100";
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Bed {
    pub a: Netns,
    pub b: Netns,
    /// A third host on the segment (clients, probes).
    pub c: Netns,
    pub br: Netns,
    pub ports: [String; 3],
    pub dir: PathBuf,
}

impl Bed {
    pub fn build(tag: &str) -> Result<Self> {
        let prefix = format!("lvs-v{tag}-");
        remove_stale(&prefix);
        let dir = std::env::temp_dir().join(format!("lvs-v{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let br = Netns::create(&format!("{prefix}br"))?;
        br.ip(&["link", "add", "br0", "type", "bridge"])?;
        br.ip(&["link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for (n, side) in ["a", "b", "c"].iter().enumerate() {
            let ns = Netns::create(&format!("{prefix}{side}"))?;
            let port = format!("v{tag}{side}");
            br.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
            br.ip(&["link", "set", &port, "master", "br0", "up"])?;
            // DAD stays on, as on a real host: both daemons add IPv6 VIPs with nodad.
            ns.ip(&["addr", "add", &format!("10.88.0.{}/24", n + 1), "dev", "eth0"])?;
            ns.ip(&["addr", "add", &format!("fd00:88::{}/64", n + 1), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            hosts.push(ns);
            ports.push(port);
        }
        let c = hosts.pop().context("c")?;
        let b = hosts.pop().context("b")?;
        let a = hosts.pop().context("a")?;
        let ports = [ports[0].clone(), ports[1].clone(), ports[2].clone()];
        // Wait (bounded) for usable link-local addresses, which IPv6 VRRP sends from: a
        // tentative source makes sendmsg fail with EINVAL.
        for ns in [&a, &b, &c] {
            let deadline = Instant::now() + WAIT;
            while !addrs(ns)?.contains("fe80:") || addrs(ns)?.contains("tentative") {
                if Instant::now() > deadline {
                    bail!("{}: no link-local address", ns.name);
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self { a, b, c, br, ports, dir })
    }

    /// Cuts (or restores) the segment between a and b without touching their links: isolated
    /// bridge ports do not forward to each other.
    pub fn isolate(&self, on: bool) -> Result<()> {
        for p in &self.ports[..2] {
            self.br.run("bridge", &["link", "set", "dev", p, "isolated", if on { "on" } else { "off" }])?;
        }
        Ok(())
    }

    pub fn keepalived(&self, ns: &Netns, conf: &str) -> Result<Keepalived> {
        let n = &ns.name;
        let path = self.dir.join(format!("{n}.conf"));
        fs::write(&path, conf)?;
        let pid = |k: &str| self.dir.join(format!("{n}-{k}.pid"));
        let (main, vrrp, checkers) = (pid("main"), pid("vrrp"), pid("checkers"));
        let mut cmd = ns.cmd("keepalived");
        cmd.args(["-n", "-l", "-D", "-P", "-f"]).arg(&path).arg("-p").arg(&main).arg("-r").arg(&vrrp);
        cmd.arg("-c").arg(&checkers);
        let proc = Proc::spawn(&format!("keepalived@{n}"), &mut cmd)?;
        Ok(Keepalived { proc, vrrp_pid: vrrp, ns: ns.name.clone() })
    }

    /// `lvs-agent run` on `ns`'s eth0 with `conf`, without `/metrics`.
    pub fn agent(&self, ns: &Netns, conf: &str) -> Result<Proc> {
        self.agent_with(ns, conf, &["--metrics-address", "none"])
    }

    /// `lvs-agent run` on `ns`'s eth0 with `conf` and `extra` arguments.
    pub fn agent_with(&self, ns: &Netns, conf: &str, extra: &[&str]) -> Result<Proc> {
        let path = self.dir.join(format!("{}-agent.conf", ns.name));
        fs::write(&path, conf)?;
        let mut cmd = ns.cmd(agent_bin().to_str().context("agent path")?);
        cmd.args(["run", "-f"]).arg(&path).args(["-i", "eth0", "--resolve-wait", "0"]).args(extra);
        Proc::spawn(&format!("lvs-agent@{}", ns.name), &mut cmd)
    }
}

pub fn addrs(ns: &Netns) -> Result<String> {
    Ok(String::from_utf8_lossy(&ns.ip(&["-o", "addr", "show", "dev", "eth0"])?.stdout).into_owned())
}

pub fn owns(ns: &Netns, vip: &str) -> bool {
    addrs(ns).is_ok_and(|a| a.contains(&format!(" {vip}/")))
}

/// Waits (bounded) until `ns` holds the VIP or not.
pub fn wait_owns(ns: &Netns, vip: &str, want: bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while owns(ns, vip) != want {
        if Instant::now() > deadline {
            bail!("{}: holding {vip} is not {want} after {WAIT:?}", ns.name);
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

pub struct Keepalived {
    pub proc: Proc,
    pub vrrp_pid: PathBuf,
    pub ns: String,
}

impl Keepalived {
    /// A crash: SIGKILL to the VRRP child and the parent (SIGKILL of the parent alone is a
    /// graceful stop: the child gets SIGTERM). The VIP a killed keepalived leaves behind is
    /// removed, as it would be gone with a dead host.
    pub fn crash(self, vip: &str) -> Result<()> {
        let child: i32 = fs::read_to_string(&self.vrrp_pid)?.trim().parse()?;
        // SAFETY: signalling processes this test started.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::kill(self.proc.pid() as i32, libc::SIGKILL);
        }
        let len = if vip.contains(':') { 128 } else { 32 };
        let _ =
            Command::new("ip").args(["-n", &self.ns, "addr", "del", &format!("{vip}/{len}"), "dev", "eth0"]).output();
        drop(self.proc);
        // A restarted keepalived that finds a pid file whose process still exists (the killed
        // child stays a zombie until init reaps it) exits at once; a crashed host's /run is
        // empty anyway.
        for f in ["main", "vrrp", "checkers"] {
            let _ = fs::remove_file(self.vrrp_pid.with_file_name(format!("{}-{f}.pid", self.ns)));
        }
        Ok(())
    }
}

/// Samples both namespaces' addresses until stopped (bounded: at most 2 minutes). The VIP held
/// by both in two consecutive samples (a sample is two `ip` runs, about 5 ms) is a split brain.
/// A single sample showing both can be the protocol's own hand-over on preemption (RFC 5798
/// §6.4.2: the new master adds the VIP and sends its advert; the old master gives the VIP up
/// when that advert arrives), caught between the two reads; those are counted apart.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(usize, usize, usize)>,
}

impl Sampler {
    pub fn start(a: &Netns, b: &Netns, vip: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b, vip, flag) = (a.name.clone(), b.name.clone(), vip.to_string(), stop.clone());
        let thread = thread::spawn(move || {
            let held = |ns: &str| {
                Command::new("ip")
                    .args(["-n", ns, "-o", "addr", "show", "dev", "eth0"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")))
            };
            let (mut samples, mut single, mut split) = (0, 0, 0);
            let mut last_both = false;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let both = held(&a) && held(&b);
                samples += 1;
                if both && last_both {
                    split += 1;
                } else if both {
                    single += 1;
                }
                last_both = both;
            }
            (samples, single, split)
        });
        Self { stop, thread }
    }

    pub fn finish(self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

pub fn assert_never_both(s: Sampler) {
    let (samples, single, split) = s.finish();
    eprintln!("ownership samples: {samples}, single-sample overlaps (hand-over): {single}, split brain: {split}");
    assert!(samples > 50, "too few samples ({samples})");
    assert_eq!(split, 0, "the VIP was held by both for two consecutive samples {split} times");
}

pub struct Inst<'a> {
    pub version: u8,
    pub state: &'a str,
    pub priority: u8,
    pub advert_int: &'a str,
    pub extra: &'a str,
    pub vip: &'a str,
    pub vrid: u8,
}

pub fn instance(i: &Inst) -> String {
    format!(
        "vrrp_instance VI_1 {{\n    version {}\n    state {}\n    interface eth0\n    virtual_router_id {}\n    priority {}\n    advert_int {}\n{}    virtual_ipaddress {{\n        {}\n    }}\n}}\n",
        i.version, i.state, i.vrid, i.priority, i.advert_int, i.extra, i.vip
    )
}

/// The agent's config: the instance plus a virtual server on the VIP (forwarded only while
/// master, which `status` shows).
pub fn agent_conf(i: &Inst) -> String {
    format!(
        "{}virtual_server {} 80 {{\n    lb_algo mh\n    lb_kind DR\n    protocol TCP\n    real_server {} 80 {{\n        weight 1\n    }}\n}}\n",
        instance(i),
        i.vip,
        if i.vip.contains(':') { "fd00:88::11" } else { "10.88.0.11" }
    )
}

pub fn keepalived_conf(i: &Inst) -> String {
    format!("global_defs {{\n    router_id lvs-test\n}}\n{}", instance(i))
}

/// `lvs-agent status` in `ns`.
pub fn status(ns: &Netns) -> String {
    let out = ns.cmd(agent_bin().to_str().expect("path")).args(["status", "-i", "eth0"]).output().expect("status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
