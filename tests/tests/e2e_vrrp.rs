//! VRRP interop with the real keepalived (Debian's 2.2.7): lvs-agent on one side, keepalived on
//! the other, both on one bridge in namespaces `lvs-vTAG-*` (`lvs_tests::vrrp::Bed`); VIP
//! 10.88.0.100, fd00:88::100 for IPv6.
//!
//! Each scenario waits for the daemons' own log lines ("Entering MASTER STATE", "VRRP BACKUP ->
//! MASTER"), never sleeps, and samples both namespaces' addresses from convergence on: the VIP
//! is never held by both (see `Sampler`).

use std::{
    fs,
    mem::size_of,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use lvs_tests::{
    netns::Netns,
    privilege::can_run,
    process::{Proc, agent_bin},
    vrrp::{
        Bed, Inst, Sampler, VIP, VIP6, WAIT, agent_conf, assert_never_both, instance, keepalived_conf, owns, status,
        wait_owns,
    },
};

const AUTH: &str = "    authentication {\n        auth_type PASS\n        auth_pass secret12\n    }\n";

/// keepalived master (150), lvs-agent backup (100), VRRPv2 with PASS authentication: the agent
/// takes over when keepalived crashes (Master_Down_Interval, 3.61 s), keepalived preempts back
/// when restarted; the agent's data plane follows (its service appears and leaves).
#[test]
fn v2_auth_keepalived_master_crash_agent_takes_over_and_is_preempted_back() {
    if !can_run("v2_auth_keepalived_master_crash_agent_takes_over_and_is_preempted_back") {
        return;
    }
    let bed = Bed::build("1").expect("bed");
    let k = |state| Inst { version: 2, state, priority: 150, advert_int: "1", extra: AUTH, vip: VIP, vrid: 51 };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k("MASTER"))).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived master");
    let mut agent =
        bed.agent(&bed.b, &agent_conf(&Inst { priority: 100, state: "BACKUP", ..k("BACKUP") })).expect("agent");
    agent.wait_for_line("VRRP INIT -> BACKUP", WAIT).expect("agent backup");
    wait_owns(&bed.a, VIP, true).expect("keepalived holds the VIP");
    // Backup: the VIP's service is not forwarded.
    let st = status(&bed.b);
    assert!(st.contains("VI_1 BACKUP priority 100 VRID 51 VRRPv2 on eth0"), "{st}");
    assert!(!st.contains("TCP  10.88.0.100:80"), "a backup forwards no VRRP service:\n{st}");
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);

    let crashed = Instant::now();
    ka.crash(VIP).expect("crash");
    agent.wait_for_line("VRRP BACKUP -> MASTER", Duration::from_secs(6)).expect("agent takes over");
    let took = crashed.elapsed();
    eprintln!("agent took over {took:?} after keepalived's crash (Master_Down_Interval 3.609 s from its last advert)");
    assert!(took <= Duration::from_millis(3700), "took over after {took:?}");
    wait_owns(&bed.b, VIP, true).expect("agent holds the VIP");
    let st = status(&bed.b);
    assert!(st.contains("VIP 10.88.0.100  VRRP VI_1 MASTER"), "{st}");
    assert!(st.contains("TCP  10.88.0.100:80 mh"), "the master forwards the VIP's service:\n{st}");
    assert!(st.contains("rejected 0"), "{st}");

    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k("BACKUP"))).expect("keepalived again");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived preempts");
    agent.wait_for_line("VRRP MASTER -> BACKUP", WAIT).expect("agent yields");
    wait_owns(&bed.b, VIP, false).expect("agent gave the VIP up");
    wait_owns(&bed.a, VIP, true).expect("keepalived holds the VIP");
    let st = status(&bed.b);
    assert!(!st.contains("TCP  10.88.0.100:80"), "back to backup, no forwarding:\n{st}");
    assert_never_both(sampler);
}

/// lvs-agent master (200), keepalived backup (100), VRRPv3 every 0.1 s (checksum with the IPv4
/// pseudo-header, keepalived's default): a graceful stop of the agent (priority 0) hands over
/// after Skew_Time (61 ms), the restarted agent preempts back.
#[test]
fn v3_agent_master_graceful_stop_hands_over_and_preempts_back() {
    if !can_run("v3_agent_master_graceful_stop_hands_over_and_preempts_back") {
        return;
    }
    let bed = Bed::build("2").expect("bed");
    let i = |priority, state| Inst { version: 3, state, priority, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let mut agent = bed.agent(&bed.a, &agent_conf(&i(200, "MASTER"))).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent master");
    let mut ka = bed.keepalived(&bed.b, &keepalived_conf(&i(100, "BACKUP"))).expect("keepalived");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived backup");
    wait_owns(&bed.a, VIP, true).expect("agent holds the VIP");
    // keepalived stays backup for 10 Master_Down_Intervals: it hears the agent.
    assert!(ka.proc.wait_for_line("Entering MASTER STATE", Duration::from_millis(3600)).is_err());
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);

    let stopped = Instant::now();
    let (status, _) = agent.stop(libc::SIGTERM, WAIT).expect("agent stops");
    assert!(status.success(), "{status}");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived takes over");
    let took = stopped.elapsed();
    eprintln!("keepalived took over {took:?} after the agent's SIGTERM (Skew_Time 61 ms)");
    assert!(!owns(&bed.a, VIP), "the stopped agent removed its VIP");
    wait_owns(&bed.b, VIP, true).expect("keepalived holds the VIP");

    let mut agent = bed.agent(&bed.a, &agent_conf(&i(200, "BACKUP"))).expect("agent again");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent preempts");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived yields");
    wait_owns(&bed.b, VIP, false).expect("keepalived gave the VIP up");
    assert_never_both(sampler);
}

/// Unicast (unicast_src_ip / unicast_peer) VRRPv2 both ways: lvs-agent master crashes (SIGKILL),
/// keepalived takes over; the agent restarted preempts back.
#[test]
fn v2_unicast_agent_crash_and_preempt_back() {
    if !can_run("v2_unicast_agent_crash_and_preempt_back") {
        return;
    }
    let bed = Bed::build("3").expect("bed");
    let uni = |me: u8, peer: u8| {
        format!("    unicast_src_ip 10.88.0.{me}\n    unicast_peer {{\n        10.88.0.{peer}\n    }}\n")
    };
    let (ua, ub) = (uni(1, 2), uni(2, 1));
    let agent_i = Inst { version: 2, state: "BACKUP", priority: 150, advert_int: "1", extra: &ua, vip: VIP, vrid: 51 };
    let ka_i = Inst { priority: 100, extra: &ub, ..agent_i };
    let mut agent = bed.agent(&bed.a, &agent_conf(&agent_i)).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent master");
    let mut ka = bed.keepalived(&bed.b, &keepalived_conf(&ka_i)).expect("keepalived");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived backup");
    wait_owns(&bed.a, VIP, true).expect("agent holds the VIP");
    // keepalived hears the agent: it stays backup for 3 Master_Down_Intervals.
    assert!(ka.proc.wait_for_line("Entering MASTER STATE", Duration::from_millis(11_000)).is_err());
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);

    // A crash: no priority-0 advert; the VIP it leaves is removed as with a dead host.
    let pid = agent.pid() as i32;
    // SAFETY: our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(agent);
    let _ = bed.a.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
    let crashed = Instant::now();
    ka.proc.wait_for_line("Entering MASTER STATE", Duration::from_secs(6)).expect("keepalived takes over");
    eprintln!("keepalived took over {:?} after the agent's crash", crashed.elapsed());
    wait_owns(&bed.b, VIP, true).expect("keepalived holds the VIP");

    let mut agent = bed.agent(&bed.a, &agent_conf(&agent_i)).expect("agent again");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent preempts");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived yields");
    wait_owns(&bed.b, VIP, false).expect("keepalived gave the VIP up");
    assert_never_both(sampler);
}

/// nopreempt: the agent (200, nopreempt) does not take the VIP from keepalived (100), and does
/// take it when keepalived stops.
#[test]
fn nopreempt_agent_waits_for_keepalived_to_leave() {
    if !can_run("nopreempt_agent_waits_for_keepalived_to_leave") {
        return;
    }
    let bed = Bed::build("4").expect("bed");
    let ka_i = Inst { version: 3, state: "MASTER", priority: 100, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&ka_i)).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived master");
    let agent_i = Inst { state: "BACKUP", priority: 200, extra: "    nopreempt\n", ..ka_i };
    let mut agent = bed.agent(&bed.b, &agent_conf(&agent_i)).expect("agent");
    agent.wait_for_line("VRRP INIT -> BACKUP", WAIT).expect("agent backup");
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);
    // Master_Down_Interval is 0.32 s here: ten of them pass without a take-over.
    assert!(agent.wait_for_line("-> MASTER", Duration::from_millis(3200)).is_err(), "nopreempt agent preempted");
    assert!(owns(&bed.a, VIP) && !owns(&bed.b, VIP));

    let (status, _) = ka.proc.stop(libc::SIGTERM, WAIT).expect("keepalived stops");
    assert!(status.success(), "{status}");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent takes over");
    wait_owns(&bed.b, VIP, true).expect("agent holds the VIP");
    assert_never_both(sampler);
}

/// A healed split: with the segment cut both become master (each alone); once healed the lower
/// priority (keepalived, 100) yields to the agent (200) and from then on only one holds the VIP.
#[test]
fn healed_split_converges_to_one_master() {
    if !can_run("healed_split_converges_to_one_master") {
        return;
    }
    let bed = Bed::build("5").expect("bed");
    let i = |priority, state| Inst { version: 3, state, priority, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let mut agent = bed.agent(&bed.a, &agent_conf(&i(200, "BACKUP"))).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent master");
    let mut ka = bed.keepalived(&bed.b, &keepalived_conf(&i(100, "BACKUP"))).expect("keepalived");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived backup");

    bed.isolate(true).expect("cut");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived alone becomes master");
    wait_owns(&bed.b, VIP, true).expect("keepalived holds the VIP");
    assert!(owns(&bed.a, VIP), "the agent, alone too, keeps it");

    bed.isolate(false).expect("heal");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived yields after the heal");
    wait_owns(&bed.b, VIP, false).expect("keepalived gave the VIP up");
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);
    // Converged: 20 Master_Down_Intervals with no change.
    assert!(agent.wait_for_line("MASTER ->", Duration::from_millis(6400)).is_err(), "the agent lost mastership");
    assert!(owns(&bed.a, VIP));
    assert_never_both(sampler);
}

/// VRRPv3 over IPv6 (ff02::12, hop limit 255, checksum with the IPv6 pseudo-header):
/// keepalived master (150) crashes, the agent (100) takes over, keepalived preempts back.
#[test]
fn v3_ipv6_keepalived_crash_and_preempt_back() {
    if !can_run("v3_ipv6_keepalived_crash_and_preempt_back") {
        return;
    }
    let bed = Bed::build("6").expect("bed");
    let k = Inst { version: 3, state: "MASTER", priority: 150, advert_int: "0.1", extra: "", vip: VIP6, vrid: 52 };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k)).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived master");
    let mut agent = bed.agent(&bed.b, &agent_conf(&Inst { state: "BACKUP", priority: 100, ..k })).expect("agent");
    agent.wait_for_line("VRRP INIT -> BACKUP", WAIT).expect("agent backup");
    wait_owns(&bed.a, VIP6, true).expect("keepalived holds the VIP");
    assert!(
        agent.wait_for_line("-> MASTER", Duration::from_millis(3200)).is_err(),
        "the agent does not hear keepalived"
    );
    let sampler = Sampler::start(&bed.a, &bed.b, VIP6);
    // The new master's unsolicited neighbour advertisements for the VIP (RFC 4861 §7.2.6):
    // ICMPv6 type 136 (the first byte after the 40-byte header) whose target is the VIP.
    let mac = |ns: &Netns| {
        let out = ns.ip(&["-o", "link", "show", "eth0"]).expect("link");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("link/ether ").nth(1).and_then(|t| t.split_whitespace().next()).expect("mac").to_string()
    };
    let mut nas = Proc::spawn(
        "tcpdump",
        bed.br.cmd("tcpdump").args(["-i", "br0", "-n", "-p", "--immediate-mode", "-c", "5"]).arg(format!(
            "icmp6 and ip6[40] = 136 and ip6[48:4] = 0xfd000088 and ip6[60:4] = 0x100 and ether src {}",
            mac(&bed.b)
        )),
    )
    .expect("tcpdump");
    nas.wait_for_line("listening on", WAIT).expect("tcpdump listens");

    ka.crash(VIP6).expect("crash");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent takes over");
    wait_owns(&bed.b, VIP6, true).expect("agent holds the VIP");
    nas.wait_for_line("5 packets captured", WAIT).expect("5 unsolicited neighbour advertisements from the new master");

    let k2 = Inst { state: "BACKUP", ..k };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k2)).expect("keepalived again");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived preempts");
    agent.wait_for_line("VRRP MASTER -> BACKUP", WAIT).expect("agent yields");
    wait_owns(&bed.b, VIP6, false).expect("agent gave the VIP up");
    assert_never_both(sampler);
}

/// Tracking and notification: lvs-agent master (200) with a vrrp_script (weight 0: failure is
/// FAULT) and a track_interface with weight -150; keepalived backup (100). The script failing
/// hands the VIP over at once (priority 0, then Skew_Time), recovering takes it back
/// (preemption); the tracked interface going down lowers the agent to 50, so keepalived
/// preempts. The `notify` script gets keepalived's arguments; the new master's gratuitous ARPs
/// are on the wire.
#[test]
fn track_script_fault_track_interface_weight_notify_and_garp() {
    if !can_run("track_script_fault_track_interface_weight_notify_and_garp") {
        return;
    }
    let bed = Bed::build("7").expect("bed");
    let flag = bed.dir.join("healthy");
    let notified = bed.dir.join("notify.log");
    let notify = bed.dir.join("notify.sh");
    fs::write(&flag, "").expect("flag");
    fs::write(&notify, format!("#!/bin/sh\necho \"$@\" >> {}\n", notified.display())).expect("notify script");
    Command::new("chmod").arg("755").arg(&notify).status().expect("chmod");
    // The tracked interface: a veth pair inside the namespace (this kernel has no dummy).
    bed.a.ip(&["link", "add", "trk0", "type", "veth", "peer", "name", "trk1"]).expect("veth");
    bed.a.ip(&["link", "set", "trk1", "up"]).expect("trk1 up");
    bed.a.ip(&["link", "set", "trk0", "up"]).expect("trk0 up");
    let agent_mac = {
        let out = bed.a.ip(&["-o", "link", "show", "eth0"]).expect("link");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("link/ether ").nth(1).and_then(|t| t.split_whitespace().next()).expect("mac").to_string()
    };
    let extra = format!(
        "    track_script {{\n        chk_file\n    }}\n    track_interface {{\n        trk0 weight -150\n    }}\n    notify {}\n",
        notify.display()
    );
    let script = format!(
        "vrrp_script chk_file {{\n    script \"/usr/bin/test -f {}\"\n    interval 0.2\n    fall 1\n    rise 1\n}}\n",
        flag.display()
    );
    let i = Inst { version: 3, state: "BACKUP", priority: 200, advert_int: "0.1", extra: &extra, vip: VIP, vrid: 51 };
    // Exits after 5 matching frames; --immediate-mode so that none waits in a buffer.
    let mut arps = Proc::spawn(
        "tcpdump",
        bed.br.cmd("tcpdump").args(["-i", "br0", "-n", "-p", "--immediate-mode", "-c", "5"]).args([
            "arp",
            "and",
            "ether",
            "src",
            &agent_mac,
            "and",
            "arp[6:2] = 1",
            "and",
            "arp[14:4] = arp[24:4]",
        ]),
    )
    .expect("tcpdump");
    arps.wait_for_line("listening on", WAIT).expect("tcpdump listens");
    let mut agent = bed.agent(&bed.a, &format!("{script}{}", agent_conf(&i))).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent master");
    wait_owns(&bed.a, VIP, true).expect("agent holds the VIP");
    let ka_i = Inst { priority: 100, extra: "", ..i };
    let mut ka = bed.keepalived(&bed.b, &keepalived_conf(&ka_i)).expect("keepalived");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived backup");
    // keepalived's default garp_master_repeat: 5 at once (5 more after garp_master_delay, 5 s):
    // requests whose sender and target address are the same (arp[14:4], arp[24:4]).
    arps.wait_for_line("5 packets captured", WAIT).expect("5 gratuitous ARPs from the new master");
    let wait_file = |want: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = fs::read_to_string(&notified).unwrap_or_default();
            if text.lines().any(|l| l == want) {
                return;
            }
            assert!(Instant::now() < deadline, "notify never got `{want}`; it got:\n{text}");
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_file("INSTANCE VI_1 MASTER 200");
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);

    // The script fails: FAULT, priority 0 advert, keepalived takes over after its Skew_Time.
    fs::remove_file(&flag).expect("rm flag");
    agent.wait_for_line("VRRP MASTER -> FAULT", WAIT).expect("agent faults");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived takes over");
    wait_owns(&bed.a, VIP, false).expect("the faulted agent gave the VIP up");
    wait_owns(&bed.b, VIP, true).expect("keepalived holds the VIP");
    wait_file("INSTANCE VI_1 FAULT 200");
    let st = status(&bed.a);
    assert!(st.contains("VI_1 FAULT priority 200"), "{st}");

    // It recovers: backup, then preempts back (200 > 100).
    fs::write(&flag, "").expect("flag");
    agent.wait_for_line("VRRP FAULT -> BACKUP", WAIT).expect("agent recovers");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent preempts");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived yields");
    wait_owns(&bed.b, VIP, false).expect("keepalived gave the VIP up");

    // The tracked interface goes down: 200 - 150 = 50 < 100, keepalived preempts.
    bed.a.ip(&["link", "set", "trk0", "down"]).expect("trk0 down");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived preempts the weakened agent");
    agent.wait_for_line("VRRP MASTER -> BACKUP", WAIT).expect("agent yields");
    wait_owns(&bed.a, VIP, false).expect("agent gave the VIP up");
    let st = status(&bed.a);
    assert!(st.contains("VI_1 BACKUP priority 50"), "{st}");
    assert_never_both(sampler);
}

/// Sends one VRRP message from `ns` to 224.0.0.18 with `ttl`.
fn inject(ns: &Netns, msg: Vec<u8>, ttl: u8) {
    ns.within(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex,
            };
            let set = |opt, v: *const libc::c_void, len: usize| {
                assert_eq!(libc::setsockopt(fd, libc::IPPROTO_IP, opt, v, len as u32), 0);
            };
            set(libc::IP_MULTICAST_IF, (&mreq as *const libc::ip_mreqn).cast(), size_of::<libc::ip_mreqn>());
            let ttl = i32::from(ttl);
            set(libc::IP_MULTICAST_TTL, (&ttl as *const i32).cast(), 4);
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as u16;
            to.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::new(224, 0, 0, 18)).to_be();
            let n = libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(n, msg.len() as isize, "sendto: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .expect("in the namespace");
}

/// Malformed, truncated and spoofed adverts at priority 254 (any of them accepted would make
/// the master, at 100, yield) are rejected and counted by reason, and change nothing; a valid
/// one then does make it yield (the control).
#[test]
fn spoofed_and_malformed_adverts_are_rejected_counted_and_change_nothing() {
    use lvs_agent::vrrp::packet::{Advert, Auth, MCAST_V4, V4Checksum, Version};
    if !can_run("spoofed_and_malformed_adverts_are_rejected_counted_and_change_nothing") {
        return;
    }
    let bed = Bed::build("8").expect("bed");
    let i = Inst { version: 2, state: "BACKUP", priority: 100, advert_int: "1", extra: AUTH, vip: VIP, vrid: 51 };
    let mut agent = bed.agent(&bed.a, &agent_conf(&i)).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent master");
    let src: std::net::IpAddr = "10.88.0.2".parse().expect("literal");
    let dst = std::net::IpAddr::V4(MCAST_V4);
    let good = Advert {
        version: Version::V2,
        vrid: 51,
        priority: 254,
        interval: 1,
        addrs: vec![VIP.parse().expect("literal")],
        auth: Auth::pass("secret12"),
    };
    let enc = |a: &Advert| a.encode(src, dst, V4Checksum::PseudoHeader);
    let mut bad_sum = enc(&good);
    bad_sum[7] ^= 0x55;
    let mut carp = vec![0x21, 51, 0, 7, 0, 1, 0, 0];
    carp.extend_from_slice(&[0x5a; 28]);
    let spoofs: Vec<(&str, Vec<u8>, u8)> = vec![
        ("ttl", enc(&good), 254),
        ("checksum", bad_sum, 255),
        ("version", enc(&Advert { version: Version::V3, interval: 100, auth: Auth::None, ..good.clone() }), 255),
        ("vrid", enc(&Advert { vrid: 52, ..good.clone() }), 255),
        ("auth", enc(&Advert { auth: Auth::pass("guess"), ..good.clone() }), 255),
        ("interval", enc(&Advert { interval: 2, ..good.clone() }), 255),
        ("length", enc(&good)[..14].to_vec(), 255),
        ("carp", carp, 255),
    ];
    let before = status(&bed.a);
    assert!(before.contains("transitions 2,") && before.contains("rejected 0"), "{before}");
    for (_, msg, ttl) in &spoofs {
        inject(&bed.b, msg.clone(), *ttl);
    }
    // Bounded wait until all are counted.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = status(&bed.a);
        if text.contains(&format!("rejected {}", spoofs.len())) {
            break text;
        }
        assert!(Instant::now() < deadline, "not all spoofs counted:\n{text}");
        thread::sleep(Duration::from_millis(20));
    };
    for (why, _, _) in &spoofs {
        assert!(text.contains(&format!(" {why}=1")), "{why} not counted once:\n{text}");
    }
    assert!(text.contains("VI_1 MASTER priority 100") && text.contains("transitions 2,"), "{text}");
    assert!(owns(&bed.a, VIP));

    // The control: the same advert, valid, makes the master yield.
    inject(&bed.b, enc(&good), 255);
    agent.wait_for_line("VRRP MASTER -> BACKUP", WAIT).expect("a valid higher advert is obeyed");
    wait_owns(&bed.a, VIP, false).expect("VIP given up");
}

/// The v3 checksum mode on the wire. keepalived 2.2.7 has no `v3_checksum_as_v2` (later
/// versions do): it always checksums v3 over IPv4 with the pseudo-header. An agent set to
/// `v3_checksum_as_v2` (RFC 9568 §5.2.8) and keepalived reject each other's adverts as bad
/// checksums (counted by the agent, logged by keepalived); with the default both agree (the
/// other tests).
#[test]
fn v3_checksum_as_v2_is_what_the_agent_sends_and_checks() {
    if !can_run("v3_checksum_as_v2_is_what_the_agent_sends_and_checks") {
        return;
    }
    let bed = Bed::build("9").expect("bed");
    let k = Inst { version: 3, state: "MASTER", priority: 150, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k)).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived master");
    let as_v2 = Inst { state: "BACKUP", priority: 100, extra: "    v3_checksum_as_v2\n", ..k };
    let mut agent = bed.agent(&bed.b, &agent_conf(&as_v2)).expect("agent");
    agent.wait_for_line("advert rejected: bad checksum", WAIT).expect("the agent rejects keepalived's checksum");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("deaf to keepalived, the agent becomes master");
    ka.proc.wait_for_line("Invalid VRRPv3 checksum", WAIT).expect("keepalived rejects the agent's checksum");
    let st = status(&bed.b);
    assert!(st.contains(" checksum="), "{st}");
}

/// Failover under traffic: two lvs-agent directors running VRRP (v3, 0.1 s) in front of three
/// nginx real servers with mh; 30 keep-alive connections opened through the master; the master
/// dies (agent SIGKILLed, its link down, as a host that is gone); the backup takes over with
/// its VIP, data plane and gratuitous ARPs, and every connection goes on with its real server.
#[test]
fn failover_under_traffic_keeps_every_mh_connection() {
    use lvs_tests::{
        http::Held,
        topology::{DrLab, VIP as LAB_VIP},
    };
    if !can_run("failover_under_traffic_keeps_every_mh_connection") {
        return;
    }
    let agent = agent_bin();
    let floor = lvs_tests::topology::write_object("vfo", lvs_agent::dataplane::objects::FLOOR).expect("floor");
    let mut lab = DrLab::build_with("vfo", 3, 2, &floor).expect("bed");
    let _ = fs::remove_file(floor);
    lab.prepare_real_servers(&agent).expect("realserver up");
    lab.start_http().expect("nginx");
    let sources = lab.add_client_addresses(30).expect("client addresses");
    let vrrp = |priority: u8| {
        format!(
            "vrrp_instance VI_1 {{\n    version 3\n    interface eth0\n    virtual_router_id 77\n    priority {priority}\n    advert_int 0.1\n    virtual_ipaddress {{\n        {LAB_VIP}\n    }}\n}}\n"
        )
    };
    let conf = lab.keepalived_conf("mh", 80, "TCP", &[1, 1, 1]);
    let mut agent1 = lab.start_agent_on(0, &agent, &format!("{conf}{}", vrrp(150)), &[]).expect("agent 1");
    agent1.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("director 1 master");
    let mut agent2 = lab.start_agent_on(1, &agent, &format!("{conf}{}", vrrp(100)), &[]).expect("agent 2");
    agent2.wait_for_line("VRRP INIT -> BACKUP", WAIT).expect("director 2 backup");
    let d1 = lab.director_at(0);
    let d2 = lab.director_at(1);
    wait_owns(&d1.ns, &LAB_VIP.to_string(), true).expect("director 1 holds the VIP");

    let target = std::net::SocketAddrV4::new(LAB_VIP, 80);
    let mut held: Vec<Held> =
        sources.iter().map(|&s| Held::open_from(&lab.client.ns, s, target).expect("connecting")).collect();
    let before: Vec<String> = held.iter_mut().map(|h| h.ask().expect("asking through director 1")).collect();
    let used: std::collections::BTreeSet<_> = before.iter().collect();
    assert!(used.len() >= 2, "mh spread 30 clients over {used:?}");

    // Director 1 dies.
    // SAFETY: our child.
    unsafe { libc::kill(agent1.pid() as i32, libc::SIGKILL) };
    drop(agent1);
    d1.ns.ip(&["link", "set", "eth0", "down"]).expect("director 1 link down");
    let died = Instant::now();
    agent2.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("director 2 takes over");
    eprintln!("director 2 master {:?} after director 1 died (Master_Down_Interval 361 ms)", died.elapsed());
    wait_owns(&d2.ns, &LAB_VIP.to_string(), true).expect("director 2 holds the VIP");

    let after: Vec<Result<String, String>> = held.iter_mut().map(|h| h.ask().map_err(|e| format!("{e:#}"))).collect();
    let lost: Vec<String> = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(_, (b, a))| a.as_ref().ok() != Some(*b))
        .map(|(n, (b, a))| format!("connection {n}: {b} -> {a:?}"))
        .collect();
    assert!(lost.is_empty(), "{} of 30 connections lost or moved:\n{}", lost.len(), lost.join("\n"));
    drop(held);
    let (code, table2) = agent2.stop(libc::SIGTERM, WAIT).expect("agent 2 stops");
    assert!(code.success());
    // Director 2 carried every connection after the take-over: each one's first packet after
    // it was a new flow in its table, hashed to the server director 1 had chosen.
    let conns: u64 = lvs_tests::table::by_real_server(&table2).values().map(|r| r.conns).sum();
    assert_eq!(conns, 30, "director 2:\n{table2}");
}

/// vrrp_sync_group: the agent's VI_1 (VRID 51) and VI_2 (VRID 52, which nobody else runs) move
/// together. While keepalived is master of VRID 51, VI_2 does not take its VIP either (as
/// keepalived holds a member back while another hears a live master); when keepalived crashes
/// both become master; when it comes back and preempts VI_1, VI_2 goes back to backup with it.
#[test]
fn sync_group_members_move_together() {
    if !can_run("sync_group_members_move_together") {
        return;
    }
    const VIP2: &str = "10.88.0.101";
    let bed = Bed::build("s").expect("bed");
    let k = Inst { version: 3, state: "MASTER", priority: 150, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k)).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived master");
    let vi2 = instance(&Inst { state: "BACKUP", priority: 100, vip: VIP2, vrid: 52, ..k }).replace("VI_1", "VI_2");
    let conf = format!(
        "{}{vi2}vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_2\n    }}\n}}\n",
        agent_conf(&Inst { state: "BACKUP", priority: 100, ..k })
    );
    let mut agent = bed.agent(&bed.b, &conf).expect("agent");
    agent.wait_for_line("VRRP INIT -> BACKUP instance=VI_2", WAIT).expect("VI_2 backup");
    // 10 Master_Down_Intervals: VI_2 alone would have become master after one.
    assert!(agent.wait_for_line("-> MASTER", Duration::from_millis(3200)).is_err(), "a member took over");
    assert!(!owns(&bed.b, VIP2) && !owns(&bed.b, VIP));

    ka.crash(VIP).expect("crash");
    agent.wait_for_line("VRRP BACKUP -> MASTER instance=VI_", WAIT).expect("one member master");
    agent.wait_for_line("VRRP BACKUP -> MASTER instance=VI_", WAIT).expect("the other follows");
    wait_owns(&bed.b, VIP, true).expect("VIP 1");
    wait_owns(&bed.b, VIP2, true).expect("VIP 2");

    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&Inst { state: "BACKUP", ..k })).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived preempts VRID 51");
    agent.wait_for_line("VRRP MASTER -> BACKUP instance=VI_", WAIT).expect("one member backup");
    agent.wait_for_line("VRRP MASTER -> BACKUP instance=VI_", WAIT).expect("the other follows");
    wait_owns(&bed.b, VIP2, false).expect("VIP 2 given up with VIP 1");
    wait_owns(&bed.b, VIP, false).expect("VIP 1 given up");
    let st = status(&bed.b);
    assert!(st.contains("VI_1 BACKUP") && st.contains("VI_2 BACKUP"), "{st}");
}

/// A virtual server on `vip` for the agent's configs (forwarded only while master for it).
fn service(vip: &str) -> String {
    format!(
        "virtual_server {vip} 80 {{\n    lb_algo mh\n    lb_kind DR\n    protocol TCP\n    real_server 10.88.0.11 80 {{\n        weight 1\n    }}\n}}\n"
    )
}

/// The `transitions` count `lvs-agent status` shows for instance `name` in `state`.
fn transitions(st: &str, name: &str, state: &str) -> Option<u64> {
    let mut lines = st.lines().skip_while(|l| !l.trim_start().starts_with(&format!("{name} {state} ")));
    lines.next()?;
    lines.next()?.trim().strip_prefix("transitions ")?.split(',').next()?.parse().ok()
}

/// SIGHUP applies VRRP changes as keepalived's reload does, against keepalived 2.2.7 (backup,
/// 150, VRRPv3 every second):
/// 1. the agent (master, 200) gets a VIP more: it is on eth0 and its service forwarded when
///    "reloaded" is logged, announced by gratuitous ARPs, with no transition; keepalived,
///    reloaded with it too, stays backup;
/// 2. a reload adding an instance starts it (INIT -> BACKUP -> MASTER, nobody else has it);
/// 3. a reload whose VRRP part does not validate (an unknown interface) is rejected: nothing
///    changes;
/// 4. a reload lowering the agent's priority below keepalived's: keepalived preempts;
///    raising it back, the agent preempts;
/// 5. a reload removing the instance: priority 0, keepalived takes over after Skew_Time
///    (0.41 s, well under its Master_Down_Interval of 3.41 s), the agent's VIPs are gone;
///    the other instance goes on untouched.
///
/// The VIP is never held by both from the first convergence on.
#[test]
fn reload_applies_vrrp_changes_as_keepalived_does() {
    if !can_run("reload_applies_vrrp_changes_as_keepalived_does") {
        return;
    }
    const VIP2: &str = "10.88.0.101";
    const VIP3: &str = "10.88.0.102";
    let bed = Bed::build("r").expect("bed");
    let base = Inst { version: 3, state: "BACKUP", priority: 200, advert_int: "1", extra: "", vip: VIP, vrid: 51 };
    let k = Inst { priority: 150, ..base };
    let kconf = keepalived_conf(&k);
    let two_vips = format!("{VIP}\n        {VIP2}");
    let vi1 = |priority| instance(&Inst { priority, vip: &two_vips, ..base });
    let vi2 = instance(&Inst { priority: 100, vip: VIP3, vrid: 52, ..base }).replace("VI_1", "VI_2");

    let conf = format!("{}{}", instance(&base), service(VIP));
    let mut agent = bed.agent(&bed.a, &conf).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("agent master");
    let mut ka = bed.keepalived(&bed.b, &kconf).expect("keepalived");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived backup");
    wait_owns(&bed.a, VIP, true).expect("agent holds the VIP");
    let sampler = Sampler::start(&bed.a, &bed.b, VIP);
    let path = bed.dir.join(format!("{}-agent.conf", bed.a.name));
    let pid = agent.pid() as i32;
    let hup = |text: &str| {
        fs::write(&path, text).expect("config");
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    };

    // 1. A VIP more, at once, no transition. keepalived is reloaded with it right after (it
    //    drops adverts whose address count differs from its own: within its
    //    Master_Down_Interval both lists agree again).
    // Gratuitous ARPs (sender = target = 10.88.0.101), garp_master_repeat of them.
    let mut arps = Proc::spawn(
        "tcpdump",
        bed.br
            .cmd("tcpdump")
            .args(["-i", "br0", "-n", "-p", "--immediate-mode", "-c", "5"])
            .arg("arp and arp[6:2] = 1 and arp[14:4] = 0x0a580065 and arp[24:4] = 0x0a580065"),
    )
    .expect("tcpdump");
    arps.wait_for_line("listening on", WAIT).expect("tcpdump listens");
    hup(&format!("{}{}{}", vi1(200), service(VIP), service(VIP2)));
    agent.wait_for_line("reloaded /", WAIT).expect("reloaded");
    assert!(owns(&bed.a, VIP2), "the added VIP is on eth0 when the reload is done");
    arps.wait_for_line("5 packets captured", WAIT).expect("gratuitous ARPs for the added VIP");
    fs::write(bed.dir.join(format!("{}.conf", bed.b.name)), kconf.replace(VIP, &two_vips)).expect("config");
    // SAFETY: our child.
    unsafe { libc::kill(ka.proc.pid() as i32, libc::SIGHUP) };
    ka.proc.wait_for_line("Reload complete", WAIT).expect("keepalived reloaded");
    let st = status(&bed.a);
    assert!(st.contains("TCP  10.88.0.101:80 mh"), "the added VIP's service is forwarded:\n{st}");
    assert!(st.contains("TCP  10.88.0.100:80 mh"), "{st}");
    assert_eq!(transitions(&st, "VI_1", "MASTER"), Some(2), "no transition:\n{st}");
    assert!(
        ka.proc.wait_for_line("Entering MASTER STATE", Duration::from_secs(4)).is_err(),
        "keepalived stays backup (more than its Master_Down_Interval)"
    );
    assert!(!owns(&bed.b, VIP2));

    // 2. A new instance starts as at start-up.
    hup(&format!("{}{vi2}{}{}{}", vi1(200), service(VIP), service(VIP2), service(VIP3)));
    agent.wait_for_line("VRRP INIT -> BACKUP instance=VI_2", WAIT).expect("VI_2 starts");
    agent.wait_for_line("VRRP BACKUP -> MASTER instance=VI_2", WAIT).expect("VI_2 master");
    wait_owns(&bed.a, VIP3, true).expect("VI_2's VIP");
    let st = status(&bed.a);
    assert_eq!(transitions(&st, "VI_1", "MASTER"), Some(2), "VI_1 untouched:\n{st}");

    // 3. Rejected: nothing changes.
    hup(&format!(
        "{}{}{}{}{}",
        vi1(100),
        vi2.replace("interface eth0", "interface nosuch0"),
        service(VIP),
        service(VIP2),
        service(VIP3)
    ));
    let line = agent.wait_for_line("reload rejected", WAIT).expect("rejected");
    if !line.contains("nosuch0") {
        agent.wait_for_line("nosuch0", WAIT).expect("the reason names the interface");
    }
    let st = status(&bed.a);
    assert!(st.contains("VI_1 MASTER priority 200") && st.contains("VI_2 MASTER priority 100"), "{st}");

    // 4. Lower than keepalived: it preempts (its down timer, then its advert); back up: we do.
    let both = format!("{}{}{}{}", vi2, service(VIP), service(VIP2), service(VIP3));
    hup(&format!("{}{both}", vi1(100)));
    agent.wait_for_line("reloaded /", WAIT).expect("reloaded");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived preempts");
    agent.wait_for_line("VRRP MASTER -> BACKUP instance=VI_1", WAIT).expect("agent yields");
    wait_owns(&bed.a, VIP, false).expect("agent gave the VIP up");
    wait_owns(&bed.a, VIP2, false).expect("and the added one");
    let st = status(&bed.a);
    assert!(!st.contains("TCP  10.88.0.100:80") && !st.contains("TCP  10.88.0.101:80"), "{st}");
    hup(&format!("{}{both}", vi1(200)));
    agent.wait_for_line("VRRP BACKUP -> MASTER instance=VI_1", WAIT).expect("agent preempts");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived yields");
    wait_owns(&bed.b, VIP, false).expect("keepalived gave the VIP up");
    wait_owns(&bed.a, VIP2, true).expect("agent holds both");

    // 5. VI_1 removed (and its services): priority 0, keepalived takes over after Skew_Time.
    let removed = Instant::now();
    hup(&format!("{vi2}{}", service(VIP3)));
    agent.wait_for_line("VRRP MASTER -> INIT instance=VI_1", WAIT).expect("VI_1 stops");
    agent.wait_for_line("reloaded /", WAIT).expect("reloaded");
    assert!(!owns(&bed.a, VIP) && !owns(&bed.a, VIP2), "the removed instance's VIPs are gone");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived takes over");
    let took = removed.elapsed();
    eprintln!("keepalived took over {took:?} after the reload removing VI_1 (Skew_Time 0.41 s)");
    assert!(took < Duration::from_millis(2500), "not the priority-0 hand-over: {took:?}");
    wait_owns(&bed.b, VIP, true).expect("keepalived holds the VIP");
    let st = status(&bed.a);
    assert!(!st.contains("VI_1"), "{st}");
    assert_eq!(transitions(&st, "VI_2", "MASTER"), Some(2), "VI_2 untouched:\n{st}");
    assert!(owns(&bed.a, VIP3));
    assert_never_both(sampler);
}

/// A reload adding a `track_script` (weight 0) to a running master: the script runs and its
/// failure faults the instance (VIP and service given up); when it passes again the instance
/// comes back; a reload dropping the tracking stops it counting (its failure changes nothing).
#[test]
fn reload_adds_and_drops_a_track_script() {
    if !can_run("reload_adds_and_drops_a_track_script") {
        return;
    }
    let bed = Bed::build("rs").expect("bed");
    let i = Inst { version: 3, state: "BACKUP", priority: 200, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let conf = agent_conf(&i);
    let mut agent = bed.agent(&bed.a, &conf).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("master");
    wait_owns(&bed.a, VIP, true).expect("VIP");
    let path = bed.dir.join(format!("{}-agent.conf", bed.a.name));
    let pid = agent.pid() as i32;
    let hup = |text: &str| {
        fs::write(&path, text).expect("config");
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    };
    let flag = bed.dir.join("healthy");
    let _ = fs::remove_file(&flag);
    let script = format!(
        "vrrp_script chk {{\n    script \"/usr/bin/test -f {}\"\n    interval 0.2\n    fall 1\n    rise 1\n}}\n",
        flag.display()
    );
    let tracked = agent_conf(&Inst { extra: "    track_script {\n        chk\n    }\n", ..i });
    hup(&format!("{script}{tracked}"));
    agent.wait_for_line("VRRP MASTER -> FAULT instance=VI_1", WAIT).expect("the new script's failure faults");
    wait_owns(&bed.a, VIP, false).expect("VIP given up");
    assert!(!status(&bed.a).contains("TCP  10.88.0.100:80"), "no forwarding in FAULT");
    fs::write(&flag, "").expect("flag");
    agent.wait_for_line("VRRP FAULT -> BACKUP instance=VI_1", WAIT).expect("script passes");
    agent.wait_for_line("VRRP BACKUP -> MASTER instance=VI_1", WAIT).expect("master again");
    wait_owns(&bed.a, VIP, true).expect("VIP again");

    hup(&format!("{script}{conf}"));
    agent.wait_for_line("reloaded /", WAIT).expect("reloaded");
    fs::remove_file(&flag).expect("flag");
    assert!(
        agent.wait_for_line("-> FAULT", Duration::from_secs(1)).is_err(),
        "an untracked script's failure faulted the instance"
    );
    assert!(owns(&bed.a, VIP));
}

/// `/metrics` with VRRP: the state, priority and advert counters of a backup that hears
/// keepalived, and one rejected advert counted by reason; `promtool check metrics` accepts it.
#[test]
fn metrics_show_vrrp_state_and_adverts() {
    if !can_run("metrics_show_vrrp_state_and_adverts") {
        return;
    }
    let bed = Bed::build("m").expect("bed");
    let k = Inst { version: 3, state: "MASTER", priority: 150, advert_int: "0.1", extra: "", vip: VIP, vrid: 51 };
    let mut ka = bed.keepalived(&bed.a, &keepalived_conf(&k)).expect("keepalived");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived master");
    let conf = agent_conf(&Inst { state: "BACKUP", priority: 100, ..k });
    let mut agent = bed.agent_with(&bed.b, &conf, &["--metrics-address", "127.0.0.1:9469"]).expect("agent");
    agent.wait_for_line("VRRP INIT -> BACKUP", WAIT).expect("agent backup");
    // A CARP packet on the segment: counted, nothing else.
    let mut carp = vec![0x21, 51, 0, 7, 0, 1, 0, 0];
    carp.extend_from_slice(&[0x5a; 28]);
    inject(&bed.c, carp, 255);
    let scrape = || {
        let out = bed.b.run("curl", &["-s", "http://127.0.0.1:9469/metrics"]).expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let l = r#"instance="VI_1",vrid="51",interface="eth0""#;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = scrape();
        let received = text
            .lines()
            .find_map(|x| x.strip_prefix(&format!("lvs_vrrp_adverts_received_total{{{l}}} ")))
            .and_then(|v| v.parse::<u64>().ok());
        if text.contains(&format!(r#"lvs_vrrp_adverts_rejected_total{{{l},reason="carp"}} 1"#))
            && received.is_some_and(|n| n > 0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no carp rejection or no advert received in:\n{text}");
        thread::sleep(Duration::from_millis(20));
    };
    for want in [format!("lvs_vrrp_state{{{l}}} 1"), format!("lvs_vrrp_priority{{{l}}} 100")] {
        assert!(text.lines().any(|x| x == want), "missing `{want}` in:\n{text}");
    }
    let (ok, said) = lvs_tests::promtool::check_metrics(&bed.b, &text);
    assert!(ok, "{said}");
}

/// A VRRP set-up that cannot be done stops start-up with one sentence naming the instance,
/// its place in the file and the interface, and leaves nothing attached.
#[test]
fn an_instance_on_a_missing_interface_stops_start_up() {
    if !can_run("an_instance_on_a_missing_interface_stops_start_up") {
        return;
    }
    let bed = Bed::build("e").expect("bed");
    let i = Inst { version: 2, state: "BACKUP", priority: 100, advert_int: "1", extra: "", vip: VIP, vrid: 51 };
    let conf = agent_conf(&i).replace("interface eth0", "interface nosuch0");
    let mut agent = bed.agent(&bed.a, &conf).expect("agent");
    let path = bed.dir.join(format!("{}-agent.conf", bed.a.name));
    let want = format!("vrrp_instance VI_1 ({}:1:1): interface `nosuch0` not found", path.display());
    agent.wait_for_line(&want, WAIT).expect("the error");
    let (status, _) = agent.stop(0, WAIT).expect("exits");
    assert!(!status.success(), "{status}");
    let out = bed.a.run("ip", &["-d", "link", "show", "eth0"]).expect("ip");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("xdp"), "an XDP program was left attached");
}

/// global_defs `vrrp_mcast_group4` on both sides (keepalived and the agent use 224.0.0.19
/// instead of 224.0.0.18), and `virtual_ipaddress_excluded`: an IPv6 address held with the
/// IPv4 VIP while master, not listed in the adverts, and given up on stop.
#[test]
fn mcast_group_and_excluded_addresses() {
    if !can_run("mcast_group_and_excluded_addresses") {
        return;
    }
    const EXCLUDED: &str = "fd00:88::200";
    let bed = Bed::build("x").expect("bed");
    let group = "global_defs {\n    vrrp_mcast_group4 224.0.0.19\n}\n";
    let extra = format!("    virtual_ipaddress_excluded {{\n        {EXCLUDED}\n    }}\n");
    let i = Inst { version: 3, state: "BACKUP", priority: 200, advert_int: "0.1", extra: &extra, vip: VIP, vrid: 51 };
    let mut to_group = Proc::spawn(
        "tcpdump",
        bed.br
            .cmd("tcpdump")
            .args(["-i", "br0", "-n", "-p", "--immediate-mode", "-c", "3"])
            .arg("dst host 224.0.0.19 and ip proto 112 and src host 10.88.0.1 and ip[23] = 1"),
    )
    .expect("tcpdump");
    to_group.wait_for_line("listening on", WAIT).expect("tcpdump listens");
    let mut agent = bed.agent(&bed.a, &format!("{group}{}", agent_conf(&i))).expect("agent");
    agent.wait_for_line("VRRP BACKUP -> MASTER", WAIT).expect("master");
    // ip[23] is the advert's address count (20-byte IP header + 3): the excluded one is not in it.
    to_group.wait_for_line("3 packets captured", WAIT).expect("adverts to 224.0.0.19 listing one address");
    wait_owns(&bed.a, VIP, true).expect("VIP");
    wait_owns(&bed.a, EXCLUDED, true).expect("excluded address held too");
    let k = Inst { priority: 100, extra: "", ..i };
    let mut ka = bed.keepalived(&bed.b, &format!("{group}{}", instance(&k))).expect("keepalived");
    ka.proc.wait_for_line("Entering BACKUP STATE", WAIT).expect("keepalived backup");
    assert!(
        ka.proc.wait_for_line("Entering MASTER STATE", Duration::from_millis(3200)).is_err(),
        "keepalived hears the agent on 224.0.0.19"
    );
    let (status, _) = agent.stop(libc::SIGTERM, WAIT).expect("stop");
    assert!(status.success());
    assert!(!owns(&bed.a, VIP) && !owns(&bed.a, EXCLUDED), "both given up");
    ka.proc.wait_for_line("Entering MASTER STATE", WAIT).expect("keepalived takes over");
}
