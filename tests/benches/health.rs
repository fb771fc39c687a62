//! `cargo xtask bench` (health part): 10,000 real servers, each with a TCP_CHECK every
//! `delay_loop 1`, run by the agent's checker runtime (`lvs_agent::check::Checks`, on a
//! current-thread tokio runtime as `lvs-agent run` has it). Reported: how late checks start
//! against their schedule (p50, p99, max), the checker thread's CPU, and the memory the
//! checkers add to the process.
//!
//! The real servers are loopback addresses 127.1.x.y: one listener on 0.0.0.0 accepts them all
//! (from its own thread, whose CPU is not counted), so the figures are the checker's own cost.
//! One real server in 100 is checked on a second port that opens and closes every 2 s (retry 0),
//! so decisions keep coming: as root, each is applied to the XDP program's maps (loaded, not
//! attached) as `lvs-agent run` applies it, and the time from decision to maps is reported.
//! The target is p99 lateness under 50 ms on a 2-core machine.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

struct Opts {
    servers: usize,
    seconds: u64,
}

fn parse_args() -> Opts {
    let mut o = Opts { servers: 10_000, seconds: 20 };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--servers" => o.servers = v.parse().expect("--servers N"),
            "--seconds" => o.seconds = v.parse().expect("--seconds N"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// `servers` real servers in services of 10, every one with a TCP_CHECK to `port`, but one in
/// 100 to `flapping` with retry 0.
fn config(servers: usize, port: u16, flapping: u16) -> String {
    let mut c = String::with_capacity(servers * 120);
    for (s, chunk) in (0..servers).collect::<Vec<_>>().chunks(10).enumerate() {
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + s as u32);
        c.push_str(&format!("virtual_server {vip} {port} {{\n  lb_algo rr\n  lb_kind DR\n  delay_loop 1\n"));
        for &i in chunk {
            let rs = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + i as u32);
            let extra =
                if i % 100 == 50 { format!("      connect_port {flapping}\n      retry 0\n") } else { String::new() };
            c.push_str(&format!(
                "  real_server {rs} {port} {{\n    TCP_CHECK {{\n      connect_timeout 1\n{extra}    }}\n  }}\n"
            ));
        }
        c.push_str("}\n");
    }
    c
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; RUSAGE_THREAD is Linux's per-thread usage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The process's resident memory in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = parse_args();
    let listener = TcpListener::bind("0.0.0.0:0").expect("listening on loopback");
    let port = listener.local_addr().unwrap().port();
    // std listens with a backlog of 128; 10,000 connections a second need more, or SYNs are
    // dropped and those checks fail on their timeout.
    // SAFETY: a listening socket's fd; listen again only changes the backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    // Accepts and closes every check's connection, bounded by the benchmark's length.
    let limit = Duration::from_secs(o.seconds + 30);
    std::thread::spawn(move || {
        let start = Instant::now();
        for s in listener.incoming() {
            drop(s);
            if start.elapsed() > limit {
                break;
            }
        }
    });
    // The flapping port: open 2 s, closed 2 s, for the benchmark's length.
    let flapping = {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        p
    };
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(l) = TcpListener::bind(("0.0.0.0", flapping)) {
                l.set_nonblocking(true).unwrap();
                let open = Instant::now();
                while open.elapsed() < Duration::from_secs(2) {
                    while l.accept().is_ok() {}
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let text = config(o.servers, port, flapping);
    let loaded = lvs_agent::config::parse_str(&text, Path::new("bench.conf")).expect("the benchmark config parses");
    let (plan, _) = lvs_agent::desired::plan(&loaded.config).expect("the benchmark config plans");
    // As root: the XDP program's maps, to apply decisions to as the agent does.
    // SAFETY: geteuid has no preconditions.
    let mut maps = (unsafe { libc::geteuid() } == 0)
        .then(|| lvs_agent::dataplane::Dataplane::load(lvs_agent::dataplane::LoadOptions::default()).ok())
        .flatten();
    let mut rec = lvs_agent::reconcile::Reconciler::new([2, 0, 0, 0, 0, 2]);
    let macs: std::collections::HashMap<std::net::IpAddr, [u8; 6]> =
        plan.real_server_addrs().into_iter().map(|a| (a, [2, 0, 0, 0, 0, 3])).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rss_before = rss_kib();
    let (lateness, checks, failed, cpu, wall, rss_after, applied, full) = rt.block_on(async {
        let mut checks = lvs_agent::check::Checks::start(&loaded.config, &plan);
        if let Some(dp) = maps.as_mut() {
            rec.apply(&checks.effective(&plan), &|a| macs.get(&a).copied(), dp.maps()).expect("installing the plan");
        }
        let mut applied = Vec::new();
        // The first round is spread over delay_loop (keepalived's jitter); measure after it.
        let warm = Instant::now() + Duration::from_secs(2);
        let end = warm + Duration::from_secs(o.seconds);
        let mut lateness = Vec::with_capacity(o.servers * o.seconds as usize);
        let (mut failed, mut cpu0, mut t0) = (0u64, None, None);
        while let Ok(Some(r)) = tokio::time::timeout_at(tokio::time::Instant::from_std(end), checks.next()).await {
            if Instant::now() >= warm {
                if cpu0.is_none() {
                    cpu0 = Some(thread_cpu());
                    t0 = Some(Instant::now());
                }
                lateness.push(r.lateness);
                failed += u64::from(r.failed());
            }
            if checks.handle(r)
                && let Some(dp) = maps.as_mut()
            {
                applied.push(lvs_agent::check::apply(&mut checks, &plan, &mut rec, &macs, dp.maps()));
            }
        }
        let cpu = thread_cpu() - cpu0.unwrap_or_default();
        let wall = t0.map(|t| t.elapsed()).unwrap_or_default();
        let rss = rss_kib();
        // For comparison: the whole plan re-applied, as a reload does.
        let full = maps.as_mut().map(|dp| {
            let t = Instant::now();
            rec.apply(&checks.effective(&plan), &|a| macs.get(&a).copied(), dp.maps()).expect("re-applying");
            t.elapsed()
        });
        checks.stop().await;
        let n = lateness.len();
        (lateness, n, failed, cpu, wall, rss, applied, full)
    });
    let mut sorted = lateness;
    sorted.sort();
    println!("\nHealth checks: {} real servers, TCP_CHECK, delay_loop 1 s, {} s measured", o.servers, o.seconds);
    println!(
        "  checks run:      {checks} ({:.0}/s; {failed} failed: the flapping servers' while their port is closed)",
        checks as f64 / wall.as_secs_f64().max(f64::EPSILON)
    );
    println!(
        "  lateness:        p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: p99 < 50 ms)",
        percentile(&sorted, 0.5).as_secs_f64() * 1e3,
        percentile(&sorted, 0.99).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  checker CPU:     {:.1}% of one core ({:.2} s over {:.2} s)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON),
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  memory:          {} KiB resident added by the checkers and the reconciler ({} KiB in all)",
        rss_after.saturating_sub(rss_before),
        rss_after
    );
    let mut applied = applied;
    applied.sort();
    match full {
        Some(full) => println!(
            "  decision to maps: {} decisions, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (target: < 10 ms); \
             re-applying all {} services takes {:.1} ms",
            applied.len(),
            percentile(&applied, 0.5).as_secs_f64() * 1e3,
            percentile(&applied, 0.99).as_secs_f64() * 1e3,
            applied.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            plan.services.len(),
            full.as_secs_f64() * 1e3
        ),
        None => println!("  decision to maps: not measured (needs root to load the XDP program's maps)"),
    }
}
