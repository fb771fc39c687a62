//! The control plane at scale: 10,000 virtual services x 10 real servers (wrr, weights 1-10,
//! so each ring holds 55 slots), real servers drawn from a pool of 1,000 addresses in
//! 10.99.0.0/16 (so the agent tracks 1,000 neighbour entries, not 100,000).
//!
//! In process: `Reconciler::apply` of the whole plan into a freshly loaded data plane (first
//! apply), then of the same plan with 1% of the services' weights changed (a reload), each
//! timed with a breakdown per map operation (a `MapWriter` that times what it forwards to the
//! real maps), and the bench's resident set before and after.
//!
//! The agent itself: the same services written as a keepalived.conf, `lvs-agent run` in a
//! namespace of its own on a veth whose neighbour table holds the 1,000 real servers as
//! permanent entries (so every MAC is known, as on a director whose real servers answer ARP),
//! time from exec to its "forwarding" line, then from SIGHUP with the 1%-changed config to its
//! "reloaded" line, and its VmRSS / VmHWM from /proc/PID/status.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lvs_agent::{
    dataplane::{Dataplane, LoadOptions},
    desired::{Plan, PlannedDest, PlannedService, RingKind, ServiceKey},
    reconcile::{MapWriter, Reconciler},
};
use lvs_common::maps::{Dest, IPPROTO_TCP, Service};
use lvs_tests::{
    netns::{self, Netns},
    process::Proc,
};

pub const SERVICES: usize = 10_000;
pub const REALS_PER_SERVICE: usize = 10;
pub const POOL: usize = 1_000;
/// One service in `CHANGED_EVERY` has its weights changed by the "reload".
const CHANGED_EVERY: usize = 100;
const NS: &str = "lvs-bench-ctl";
const IFACE: &str = "c0";
pub const TARGET_SECS: f64 = 1.0;
pub const TARGET_MIB: f64 = 64.0;

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 98, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn pool(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn pool_mac(a: Ipv4Addr) -> [u8; 6] {
    let o = a.octets();
    [2, 0x99, 0, o[2], o[3], 1]
}

/// Service `i`'s real servers (address, weight); `reloaded` rotates the weights of 1% of them.
fn reals(i: usize, reloaded: bool) -> Vec<(Ipv4Addr, u32)> {
    let shift = usize::from(reloaded && i.is_multiple_of(CHANGED_EVERY));
    (0..REALS_PER_SERVICE).map(|j| (pool((i * REALS_PER_SERVICE + j) % POOL), ((j + shift) % 10 + 1) as u32)).collect()
}

pub fn plan(reloaded: bool) -> Plan {
    Plan {
        services: (0..SERVICES)
            .map(|i| PlannedService {
                key: ServiceKey::new(vip(i).into(), 80, IPPROTO_TCP),
                kind: RingKind::Wrr,
                dests: reals(i, reloaded)
                    .into_iter()
                    .map(|(a, w)| PlannedDest { addr: a.into(), port: 80, weight: w })
                    .collect(),
                persistence: None,
                sorry: None,
            })
            .collect(),
        ipvs: Vec::new(),
    }
}

pub fn keepalived_conf(reloaded: bool) -> String {
    let mut s = String::with_capacity(SERVICES * 400);
    for i in 0..SERVICES {
        let _ = writeln!(s, "virtual_server {} 80 {{\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP", vip(i));
        for (a, w) in reals(i, reloaded) {
            let _ = writeln!(s, "  real_server {a} 80 {{\n    weight {w}\n  }}");
        }
        s.push_str("}\n");
    }
    s
}

/// kB of a `/proc/PID/status` field (VmRSS, VmHWM).
pub fn status_kib(pid: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in /proc/{pid}/status"))?;
    line.split_whitespace().nth(1).context("value")?.parse().context("kB")
}

/// Forwards to the real maps and adds up calls and time per operation.
struct Timed<'a, W> {
    inner: &'a mut W,
    ops: BTreeMap<&'static str, (u64, Duration)>,
}

impl<W: MapWriter> Timed<'_, W> {
    fn time<T>(&mut self, name: &'static str, calls: u64, f: impl FnOnce(&mut W) -> T) -> T {
        let start = Instant::now();
        let r = f(self.inner);
        let e = self.ops.entry(name).or_default();
        e.0 += calls;
        e.1 += start.elapsed();
        r
    }
}

impl<W: MapWriter> MapWriter for Timed<'_, W> {
    type Error = W::Error;
    fn set_filter_word(&mut self, word: u32, bits: u64) -> Result<(), W::Error> {
        self.time("set_filter_word", 1, |m| m.set_filter_word(word, bits))
    }
    fn set_service(&mut self, key: ServiceKey, service: Service) -> Result<(), W::Error> {
        self.time("set_service", 1, |m| m.set_service(key, service))
    }
    fn remove_service(&mut self, key: ServiceKey) -> Result<(), W::Error> {
        self.time("remove_service", 1, |m| m.remove_service(key))
    }
    fn set_dest(&mut self, slot: u32, dest: Dest) -> Result<(), W::Error> {
        self.time("set_dest", 1, |m| m.set_dest(slot, dest))
    }
    fn write_ring(&mut self, offset: u32, slots: &[u32]) -> Result<(), W::Error> {
        self.time("write_ring (per slot)", slots.len() as u64, |m| m.write_ring(offset, slots))
    }
    fn reset_dest_stats(&mut self, slot: u32) -> Result<(), W::Error> {
        self.time("reset_dest_stats", 1, |m| m.reset_dest_stats(slot))
    }
    fn reset_service_index(&mut self, index: u32) -> Result<(), W::Error> {
        self.time("reset_service_index", 1, |m| m.reset_service_index(index))
    }
}

pub struct Apply {
    pub secs: f64,
    /// Per operation: calls and seconds.
    pub ops: BTreeMap<&'static str, (u64, f64)>,
}

pub struct InProcess {
    pub first: Apply,
    pub reload: Apply,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

fn timed_apply(rec: &mut Reconciler, dp: &mut Dataplane, plan: &Plan) -> Result<Apply> {
    let mac_of = |a: IpAddr| match a {
        IpAddr::V4(a) => Some(pool_mac(a)),
        IpAddr::V6(_) => None,
    };
    let mut timed = Timed { inner: dp.maps(), ops: BTreeMap::new() };
    let start = Instant::now();
    rec.apply(plan, &mac_of, &mut timed).context("applying the plan")?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Apply { secs, ops: timed.ops.into_iter().map(|(k, (n, d))| (k, (n, d.as_secs_f64()))).collect() })
}

pub fn in_process() -> Result<InProcess> {
    let (first_plan, reload_plan) = (plan(false), plan(true));
    let mut dp = Dataplane::load(LoadOptions::default()).context("loading lvs")?;
    let mut rec = Reconciler::new(super::MAC);
    let rss_before_kib = status_kib("self", "VmRSS:")?;
    let first = timed_apply(&mut rec, &mut dp, &first_plan)?;
    let reload = timed_apply(&mut rec, &mut dp, &reload_plan)?;
    let rss_after_kib = status_kib("self", "VmRSS:")?;
    let installed = rec.services().count();
    if installed != SERVICES {
        bail!("{installed} services installed, not {SERVICES}");
    }
    Ok(InProcess { first, reload, rss_before_kib, rss_after_kib })
}

pub struct Agent {
    pub start_secs: f64,
    pub reload_secs: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub conf_bytes: usize,
    /// `lvs-agent -t` on the same file: seconds and peak resident set (parse and plan only).
    pub check_secs: f64,
    pub check_hwm_kib: u64,
}

/// Runs `lvs-agent -t -f conf`: its wall time and peak RSS (wait4's ru_maxrss, kB).
fn config_test(bin: &std::path::Path, conf: &std::path::Path) -> Result<(f64, u64)> {
    let start = Instant::now();
    let child = std::process::Command::new(bin)
        .args(["-t", "-f"])
        .arg(conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: waiting for our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if pid <= 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("lvs-agent -t failed (status {status})");
    }
    Ok((start.elapsed().as_secs_f64(), usage.ru_maxrss as u64))
}

/// `lvs-agent run` on the generated config in namespace `lvs-bench-ctl`.
pub fn agent() -> Result<Agent> {
    netns::remove_stale("lvs-bench-");
    let ns = Netns::create(NS)?;
    ns.ip(&["link", "add", IFACE, "type", "veth", "peer", "name", "c1"])?;
    ns.ip(&["link", "set", IFACE, "up"])?;
    ns.ip(&["link", "set", "c1", "up"])?;
    ns.ip(&["addr", "add", "10.99.255.254/16", "dev", IFACE])?;
    let mut batch = String::new();
    for k in 0..POOL {
        let a = pool(k);
        let m = pool_mac(a);
        let _ = writeln!(
            batch,
            "neigh replace {a} lladdr {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} dev {IFACE} nud permanent",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
    }
    let dir = std::env::temp_dir().join(format!("lvs-bench-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let batch_file = dir.join("neigh.batch");
        std::fs::write(&batch_file, batch)?;
        ns.ip(&["-batch", batch_file.to_str().context("path")?])?;
        let conf = dir.join("keepalived.conf");
        let text = keepalived_conf(false);
        std::fs::write(&conf, &text)?;
        let bin = lvs_tests::process::agent_bin();
        let (check_secs, check_hwm_kib) = config_test(&bin, &conf)?;
        let mut cmd = ns.cmd(bin.to_str().context("agent path")?);
        cmd.args(["run", "-f", conf.to_str().context("path")?, "-i", IFACE, "--resolve-wait", "0"]);
        cmd.args(["--metrics-address", "none"]);
        let start = Instant::now();
        let mut p = Proc::spawn("lvs-agent", &mut cmd)?;
        p.wait_for_line("forwarding", Duration::from_secs(120))?;
        let start_secs = start.elapsed().as_secs_f64();
        std::fs::write(&conf, keepalived_conf(true))?;
        let pid = p.pid().to_string();
        let reload_start = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(p.pid() as i32, libc::SIGHUP) };
        p.wait_for_line("reloaded", Duration::from_secs(120))?;
        let reload_secs = reload_start.elapsed().as_secs_f64();
        let rss_kib = status_kib(&pid, "VmRSS:")?;
        let hwm_kib = status_kib(&pid, "VmHWM:")?;
        let (status, _) = p.stop(libc::SIGTERM, Duration::from_secs(30))?;
        if !status.success() {
            bail!("lvs-agent exited with {status}");
        }
        Ok(Agent { start_secs, reload_secs, rss_kib, hwm_kib, conf_bytes: text.len(), check_secs, check_hwm_kib })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_apply(name: &str, a: &Apply) {
    println!("{name:<46} {:>8.3} s  {}", a.secs, met(a.secs < TARGET_SECS));
    for (op, (calls, secs)) in &a.ops {
        println!(
            "    {op:<34} {calls:>9} calls {:>8.3} s {:>7.2} us/call {:>5.1}%",
            secs,
            secs * 1e6 / (*calls).max(1) as f64,
            secs / a.secs * 100.0
        );
    }
    let in_maps: f64 = a.ops.values().map(|v| v.1).sum();
    println!("    {:<34} {:>15} {:>8.3} s", "reconciler itself (not map writes)", "", a.secs - in_maps);
}

/// Measures and prints; returns (name, value, target, unit) lines for the summary.
pub fn report() -> Vec<(String, f64, f64, &'static str)> {
    let mut targets = Vec::new();
    println!(
        "\nControl plane: {SERVICES} virtual services x {REALS_PER_SERVICE} real servers (wrr, weights 1-10: 55 ring \
         slots per service), real servers drawn from a pool of {POOL} addresses in 10.99.0.0/16 (so the agent tracks \
         {POOL} neighbour entries); reload: weights changed in 1 service in {CHANGED_EVERY}"
    );
    match in_process() {
        Ok(r) => {
            println!("In process (Reconciler::apply into the loaded maps; all MACs known):");
            print_apply("first apply, from empty", &r.first);
            print_apply("second apply, 1% of services changed", &r.reload);
            let mib = |k: u64| k as f64 / 1024.0;
            println!(
                "bench VmRSS: {:.1} MiB before, {:.1} MiB after: +{:.1} MiB for the reconciler's state (the bench \
                 process also holds the harness and the loaded objects)",
                mib(r.rss_before_kib),
                mib(r.rss_after_kib),
                mib(r.rss_after_kib.saturating_sub(r.rss_before_kib))
            );
            targets.push(("in process: first apply".to_string(), r.first.secs, TARGET_SECS, "s"));
            targets.push(("in process: 1% reload apply".to_string(), r.reload.secs, TARGET_SECS, "s"));
        }
        Err(e) => println!("In process: not measured: {e:#}"),
    }
    match agent() {
        Ok(a) => {
            println!(
                "lvs-agent run ({:.1} MB keepalived.conf, namespace {NS}, the {POOL} real servers as permanent \
                 neighbours):",
                a.conf_bytes as f64 / 1e6
            );
            println!(
                "{:<46} {:>8.3} s  (includes parse, plan, program load, flow table, neighbours)",
                "start to \"forwarding\"", a.start_secs
            );
            println!(
                "{:<46} {:>8.3} s  {}",
                "SIGHUP to \"reloaded\" (1% changed)",
                a.reload_secs,
                met(a.reload_secs < TARGET_SECS)
            );
            let (rss, hwm) = (a.rss_kib as f64 / 1024.0, a.hwm_kib as f64 / 1024.0);
            println!("{:<46} {rss:>8.1} MiB  {}", "agent VmRSS after the reload", met(rss < TARGET_MIB));
            // The target is the resident memory of the running agent; the parse's transient
            // peak is reported beside it.
            println!("{:<46} {hwm:>8.1} MiB  (transient: the parse of the 5.5 MB file)", "agent VmHWM (peak)");
            println!(
                "{:<46} {:>8.3} s, peak RSS {:.1} MiB (the config front end alone)",
                "lvs-agent -t on the same file",
                a.check_secs,
                a.check_hwm_kib as f64 / 1024.0
            );
            targets.push(("agent: SIGHUP to reloaded".to_string(), a.reload_secs, TARGET_SECS, "s"));
            targets.push(("agent: VmRSS".to_string(), rss, TARGET_MIB, "MiB"));
        }
        Err(e) => println!("lvs-agent run: not measured: {e:#}"),
    }
    targets
}
