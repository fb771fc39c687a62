//! `cargo xtask bench --vrrp-only`: VRRP failover time in namespaces, lvs-agent next to
//! keepalived measured by the same harness in the same run (`lvs_tests::vrrp::Bed`: master on
//! `a`, backup on `b`, a client on `c`).
//!
//! Per run, two figures:
//! - on the wire (tcpdump on the bridge): the backup's first advert after the master's last
//!   one (crash) or after its priority-0 advert (graceful stop). This is what the RFC timers
//!   govern: Master_Down_Interval for a crash, Skew_Time for a graceful stop;
//! - at the client: an ICMP echo to the VIP every 10 ms; the outage is the time between the last
//!   probe answered before the failover and the first answered after (it also depends on when
//!   the crash fell between two adverts, so it is reported, not judged).
//!
//! A crash is the master's processes SIGKILLed and its link set down (a host that is gone); a
//! graceful stop is SIGTERM. Targets: crashes within 5% of Master_Down_Interval, a graceful
//! stop at most Skew_Time + 50 ms; medians of `--runs` (5).

use std::{
    fs,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lvs_tests::{
    process::Proc,
    vrrp::{Bed, Inst, VIP, WAIT, agent_conf, keepalived_conf, wait_owns},
};

#[derive(Clone, Copy, PartialEq)]
enum Daemon {
    Agent,
    Keepalived,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Self::Agent => "lvs-agent",
            Self::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    version: u8,
    advert_int: &'static str,
    crash: bool,
    /// The RFC figure: Master_Down_Interval (crash) or Skew_Time (graceful), backup priority
    /// 100.
    rfc: Duration,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "master crash, VRRPv2, advert_int 1",
        version: 2,
        advert_int: "1",
        crash: true,
        rfc: Duration::from_nanos(3_609_375_000),
    },
    Scenario {
        name: "graceful stop, VRRPv2, advert_int 1",
        version: 2,
        advert_int: "1",
        crash: false,
        rfc: Duration::from_nanos(609_375_000),
    },
    Scenario {
        name: "master crash, VRRPv3, advert_int 0.1",
        version: 3,
        advert_int: "0.1",
        crash: true,
        rfc: Duration::from_nanos(360_937_500),
    },
];

/// A running VRRP daemon of either kind.
struct Running {
    proc: Proc,
    /// keepalived's VRRP child (a crash kills it too).
    vrrp_pid: Option<std::path::PathBuf>,
}

fn start(bed: &Bed, ns: &lvs_tests::netns::Netns, daemon: Daemon, i: &Inst) -> Running {
    match daemon {
        Daemon::Agent => {
            let proc = bed.agent(ns, &agent_conf(i)).expect("agent");
            Running { proc, vrrp_pid: None }
        }
        Daemon::Keepalived => {
            let k = bed.keepalived(ns, &keepalived_conf(i)).expect("keepalived");
            Running { proc: k.proc, vrrp_pid: Some(k.vrrp_pid) }
        }
    }
}

fn master_line(d: Daemon) -> &'static str {
    match d {
        Daemon::Agent => "VRRP BACKUP -> MASTER",
        Daemon::Keepalived => "Entering MASTER STATE",
    }
}

fn backup_line(d: Daemon) -> &'static str {
    match d {
        Daemon::Agent => "VRRP INIT -> BACKUP",
        Daemon::Keepalived => "Entering BACKUP STATE",
    }
}

/// ICMP echo to the VIP from `ns` every 10 ms until stopped (at most 60 s); returns each
/// probe's send time and whether it was answered.
fn spawn_prober(
    ns: &str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> thread::JoinHandle<Vec<(Instant, bool)>> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = fs::File::open(&path).expect("namespace");
        // SAFETY: a valid namespace descriptor; only this thread moves.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        // SAFETY: plain socket calls on a descriptor closed at the end.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(fd >= 0);
        let tv = libc::timeval { tv_sec: 0, tv_usec: 1000 };
        // SAFETY: valid pointer and size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        // SAFETY: a zeroed sockaddr_in is valid.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as u16;
        to.sin_addr.s_addr = u32::from(VIP.parse::<std::net::Ipv4Addr>().expect("VIP")).to_be();
        let id: u16 = 0x7a7a;
        let mut probes: Vec<(Instant, bool)> = Vec::new();
        let start = Instant::now();
        let mut next = start;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            if Instant::now() >= next {
                let seq = probes.len() as u16;
                let mut m = [8u8, 0, 0, 0, (id >> 8) as u8, id as u8, (seq >> 8) as u8, seq as u8];
                let sum = !m.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>() as u16;
                m[2..4].copy_from_slice(&sum.to_be_bytes());
                // SAFETY: valid buffers.
                unsafe {
                    libc::sendto(
                        fd,
                        m.as_ptr().cast(),
                        m.len(),
                        0,
                        (&to as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    );
                }
                probes.push((Instant::now(), false));
                next += Duration::from_millis(10);
            }
            let mut buf = [0u8; 256];
            // SAFETY: valid buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 28 {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let icmp = &buf[ihl..n as usize];
                if icmp.len() >= 8 && icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id {
                    let seq = usize::from(u16::from_be_bytes([icmp[6], icmp[7]]));
                    if let Some(p) = probes.get_mut(seq)
                        && !p.1
                    {
                        p.1 = true;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        probes
    })
}

/// Waits (bounded by `WAIT`) until `n` probes have been answered.
fn wait_answers(answered: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + WAIT;
    while answered.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the client is not answered");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The longest time between two answered probes with only unanswered ones between them.
fn outage(probes: &[(Instant, bool)]) -> Option<Duration> {
    let answered: Vec<Instant> = probes.iter().filter(|p| p.1).map(|p| p.0).collect();
    answered.windows(2).map(|w| w[1] - w[0]).max()
}

/// (time, source, priority) of each advert in tcpdump `-tt` lines.
fn adverts(text: &str) -> Vec<(f64, String, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let t: f64 = w.next()?.parse().ok()?;
            let src = l.split(" IP ").nth(1)?.split_whitespace().next()?.to_string();
            let prio = l.split("prio ").nth(1)?.split(',').next()?.trim().parse().ok()?;
            Some((t, src, prio))
        })
        .collect()
}

/// One failover; returns (on the wire, at the client).
fn run_once(bed: &Bed, daemon: Daemon, s: &Scenario) -> (Duration, Option<Duration>) {
    let i = |state, priority| Inst {
        version: s.version,
        state,
        priority,
        advert_int: s.advert_int,
        extra: "",
        vip: VIP,
        vrid: 51,
    };
    // Both start as backup and take over after a Master_Down_Interval (keepalived 2.2.7 does so
    // with `state MASTER` too).
    let mut master = start(bed, &bed.a, daemon, &i("MASTER", 150));
    master.proc.wait_for_line(master_line(daemon), WAIT).expect("master");
    wait_owns(&bed.a, VIP, true).expect("master holds the VIP");
    let mut backup = start(bed, &bed.b, daemon, &i("BACKUP", 100));
    backup.proc.wait_for_line(backup_line(daemon), WAIT).expect("backup");

    // The record: every advert on the bridge, written as it passes.
    let pcap = bed.dir.join("adverts.pcap");
    let mut cap = Proc::spawn(
        "tcpdump",
        bed.br.cmd("tcpdump").args(["-i", "br0", "-n", "--immediate-mode", "-w"]).arg(&pcap).arg("ip proto 112"),
    )
    .expect("tcpdump");
    cap.wait_for_line("listening on", WAIT).expect("tcpdump listens");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let prober = spawn_prober(&bed.c.name, stop.clone(), answered.clone());
    // Before the failover: one advert of the master recorded, and the client answered.
    let mut one = Proc::spawn(
        "tcpdump",
        bed.br.cmd("tcpdump").args([
            "-i",
            "br0",
            "-n",
            "--immediate-mode",
            "-c",
            "1",
            "ip proto 112 and src host 10.88.0.1",
        ]),
    )
    .expect("tcpdump");
    one.wait_for_line("1 packet captured", WAIT).expect("an advert of the master");
    wait_answers(&answered, 5);

    if s.crash {
        // SAFETY: processes this harness started.
        unsafe {
            if let Some(p) = &master.vrrp_pid
                && let Ok(pid) = fs::read_to_string(p).unwrap_or_default().trim().parse::<i32>()
            {
                libc::kill(pid, libc::SIGKILL);
            }
            libc::kill(master.proc.pid() as i32, libc::SIGKILL);
        }
        let _ = bed.a.ip(&["link", "set", "eth0", "down"]);
    } else {
        // SAFETY: our child.
        unsafe { libc::kill(master.proc.pid() as i32, libc::SIGTERM) };
    }
    backup.proc.wait_for_line(master_line(daemon), WAIT).expect("backup takes over");
    wait_owns(&bed.b, VIP, true).expect("backup holds the VIP");
    // The client is answered again (by the new master).
    wait_answers(&answered, answered.load(Ordering::Relaxed) + 5);
    stop.store(true, Ordering::Relaxed);
    let probes = prober.join().expect("prober");
    let _ = cap.stop(libc::SIGINT, WAIT).expect("tcpdump");
    let out =
        std::process::Command::new("tcpdump").args(["-r"]).arg(&pcap).args(["-n", "-tt"]).output().expect("tcpdump -r");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();

    let ads = adverts(&text);
    let (a_ip, b_ip) = ("10.88.0.1", "10.88.0.2");
    let first_b = ads.iter().find(|a| a.1 == b_ip).map(|a| a.0).expect("an advert from the new master");
    let from_a = ads.iter().filter(|a| a.1 == a_ip && a.0 <= first_b);
    let mark = if s.crash {
        from_a.map(|a| a.0).fold(f64::NAN, f64::max)
    } else {
        from_a.filter(|a| a.2 == 0).map(|a| a.0).fold(f64::NAN, f64::max)
    };
    assert!(mark.is_finite(), "no advert of the old master before the new one's:\n{text}");
    let wire = Duration::from_secs_f64(first_b - mark);

    let _ = backup.proc.stop(libc::SIGTERM, WAIT);
    drop(master);
    let _ = bed.a.ip(&["link", "set", "eth0", "up"]);
    for ns in [&bed.a, &bed.b] {
        let _ = ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
    }
    for f in fs::read_dir(&bed.dir).expect("dir").flatten() {
        if f.path().extension().is_some_and(|e| e == "pid") {
            let _ = fs::remove_file(f.path());
        }
    }
    // The link is back before the next run (bounded).
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&bed.a.ip(&["-o", "link", "show", "eth0"]).expect("link").stdout)
        .contains("LOWER_UP")
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    (wire, outage(&probes))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !lvs_tests::privilege::can_run("VRRP failover benchmark") {
        return;
    }
    let mut args = std::env::args().skip(1);
    let mut runs = 5usize;
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N");
        }
    }
    let bed = Bed::build("bn").expect("bed");
    let mut rows = Vec::new();
    let mut ok = true;
    for s in &SCENARIOS {
        let mut row = Vec::new();
        for daemon in [Daemon::Agent, Daemon::Keepalived] {
            let mut wire = Vec::new();
            let mut client = Vec::new();
            for n in 0..runs {
                let (w, c) = run_once(&bed, daemon, s);
                eprintln!(
                    "{} / {}: run {}: wire {}, client outage {}",
                    s.name,
                    daemon.name(),
                    n + 1,
                    ms(w),
                    c.map_or("-".into(), ms)
                );
                wire.push(w);
                client.extend(c);
            }
            let w = median(wire);
            let c = (!client.is_empty()).then(|| median(client));
            row.push((daemon, w, c));
        }
        let agent = row[0].1;
        let pass = if s.crash {
            agent.as_secs_f64() <= s.rfc.as_secs_f64() * 1.05 && agent.as_secs_f64() >= s.rfc.as_secs_f64() * 0.95
        } else {
            agent <= s.rfc + Duration::from_millis(50)
        };
        ok &= pass;
        rows.push((s, row, pass));
    }
    println!(
        "\nVRRP failover, median of {runs} (wire: the new master's first advert after the old master's last, or after its priority-0 advert; client: ICMP every 10 ms)"
    );
    println!(
        "{:<40} {:>10} {:>12} {:>12} {:>16} {:>16}  target",
        "scenario", "RFC", "lvs-agent", "keepalived", "client lvs-agent", "client keepalived"
    );
    for (s, row, pass) in rows {
        let target = if s.crash { "within 5% of Master_Down_Interval" } else { "<= Skew_Time + 50 ms" };
        println!(
            "{:<40} {:>10} {:>12} {:>12} {:>16} {:>16}  {target}: {}",
            s.name,
            ms(s.rfc),
            ms(row[0].1),
            ms(row[1].1),
            row[0].2.map_or("-".into(), ms),
            row[1].2.map_or("-".into(), ms),
            if pass { "met" } else { "NOT met" }
        );
    }
    if !ok {
        std::process::exit(1);
    }
}
