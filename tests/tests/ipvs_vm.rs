//! NAT and TUN services through the kernel's IPVS, which these machines' kernel lacks: Debian's
//! kernel boots under QEMU (software emulation) with the real `ipvsadm`, and `lvs-agent` runs
//! inside it (`ipvs_vm/guest.sh`) with a DR service on XDP (generic mode) beside the NAT and
//! TUN ones. The guest reports; the assertions are here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use lvs_agent::ipvs::codec::{self, Dest, Request, Service, ServiceId, Stats};
use lvs_tests::ipvs_vm;

/// The schedulers the config uses, the tunnel and the veths (dependencies are found).
const MODULES: &[&str] = &["crc32c_generic", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "veth", "ipip", "bridge"];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from)
}

/// `ipvsadm -Ln` (or `lvs-agent list -n`) as service line -> {(real server, Forward, Weight)}.
fn table(text: &str) -> BTreeMap<String, BTreeSet<(String, String, String)>> {
    let mut out: BTreeMap<String, BTreeSet<_>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with("TCP") || line.starts_with("UDP") {
            let key = line.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(key.clone()).or_default();
            current = Some(key);
        } else if let Some(rest) = line.trim_start().strip_prefix("-> ")
            && !rest.starts_with("RemoteAddress")
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let key = current.clone().expect("a real server before any service");
            out.entry(key).or_default().insert((f[0].into(), f[1].into(), f[2].into()));
        }
    }
    out
}

fn expected() -> BTreeMap<String, BTreeSet<(String, String, String)>> {
    let d = |a: &str, f: &str, w: &str| (a.to_string(), f.to_string(), w.to_string());
    BTreeMap::from([
        (
            "TCP 10.7.0.100:80 rr".to_string(),
            BTreeSet::from([d("10.7.1.2:8080", "Masq", "1"), d("10.7.2.2:8080", "Masq", "2")]),
        ),
        (
            "UDP 10.7.0.100:53 wlc persistent 120 mask 255.255.255.0".to_string(),
            BTreeSet::from([d("10.7.1.2:53", "Masq", "3")]),
        ),
        (
            "TCP 10.7.0.101:80 wrr".to_string(),
            BTreeSet::from([d("10.7.3.2:80", "Tunnel", "1"), d("10.7.4.2:80", "Tunnel", "1")]),
        ),
    ])
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A message as readable lines: header (type, flags, command, version), then each attribute
/// with its raw type (NLA_F_NESTED included) and payload, nests one level down. With
/// `identity_only`, the service nest keeps only what names the service: the kernel reads
/// nothing else of it in destination and delete commands (`ip_vs_genl_parse_service` without
/// `full_entry`), and ipvsadm fills the rest with its defaults (an empty scheduler, mask ~0).
/// With `dest_identity_only`, likewise for the destination nest of DEL_DEST (the kernel reads
/// its address and port; ipvsadm adds its defaults: Route, weight 1).
fn layout(m: &[u8], identity_only: bool, dest_identity_only: bool) -> Vec<String> {
    let mut out =
        vec![format!("type {:02x}{:02x} flags {:02x}{:02x} cmd {} version {}", m[5], m[4], m[7], m[6], m[16], m[17])];
    let walk = |b: &[u8]| -> Vec<(u16, Vec<u8>)> {
        let mut v = Vec::new();
        let mut rest = b;
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            if len < 4 || len > rest.len() {
                break;
            }
            v.push((u16::from_ne_bytes([rest[2], rest[3]]), rest[4..len].to_vec()));
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        v
    };
    let identity = [
        codec::IPVS_SVC_ATTR_AF,
        codec::IPVS_SVC_ATTR_PROTOCOL,
        codec::IPVS_SVC_ATTR_ADDR,
        codec::IPVS_SVC_ATTR_PORT,
        codec::IPVS_SVC_ATTR_FWMARK,
    ];
    for (kind, payload) in walk(&m[20..]) {
        if kind & codec::NLA_F_NESTED == 0 {
            out.push(format!("{kind:#06x} {}", hex(&payload)));
            continue;
        }
        out.push(format!("{kind:#06x} nested"));
        let service = kind & codec::NLA_TYPE_MASK == codec::IPVS_CMD_ATTR_SERVICE;
        let dest = kind & codec::NLA_TYPE_MASK == codec::IPVS_CMD_ATTR_DEST;
        let dest_identity = [codec::IPVS_DEST_ATTR_ADDR_FAMILY, codec::IPVS_DEST_ATTR_ADDR, codec::IPVS_DEST_ATTR_PORT];
        for (k, p) in walk(&payload) {
            let skip = (identity_only && service && !identity.contains(&k))
                || (dest_identity_only && dest && !dest_identity.contains(&k));
            if !skip {
                out.push(format!("  {k:#06x} {}", hex(&p)));
            }
        }
    }
    out
}

/// Our encoding of `req` against what ipvsadm sent for the same command (the last message of
/// the capture with that generic netlink command), with ipvsadm's family id and sequence
/// number. Byte for byte (as [`layout`] shows them) except the service nest of commands that
/// name a service without defining it.
fn same_as_ipvsadm(out: &ipvs_vm::Outcome, capture: &str, req: &Request) {
    let text = out.section(&format!("capture-{capture}")).unwrap_or_else(|| panic!("capture-{capture} missing"));
    let messages = ipvs_vm::strace_messages(&text);
    let ours_cmd = req.encode(0, 0)[16];
    let theirs = messages
        .iter()
        .rev()
        .find(|m| m.len() > 16 && u16::from_ne_bytes([m[4], m[5]]) != codec::GENL_ID_CTRL && m[16] == ours_cmd)
        .unwrap_or_else(|| panic!("{capture}: no message with command {ours_cmd} in:\n{text}"));
    let family = u16::from_ne_bytes([theirs[4], theirs[5]]);
    let seq = u32::from_ne_bytes(theirs[8..12].try_into().unwrap());
    let ours = req.encode(family, seq);
    let identity_only = !matches!(req, Request::NewService(_) | Request::SetService(_));
    let del_dest = matches!(req, Request::DelDest(..));
    assert_eq!(
        layout(&ours, identity_only, del_dest),
        layout(theirs, identity_only, del_dest),
        "{capture}: ours (left) vs ipvsadm's (right)"
    );
    if !identity_only {
        // Whole messages too (libnl puts its port id in nlmsg_pid, we 0: the kernel ignores it).
        let mut theirs = theirs.clone();
        theirs[12..16].fill(0);
        assert_eq!(hex(&ours), hex(&theirs), "{capture}: ours (left) vs ipvsadm's (right)");
    }
}

fn count(section: &str, word: &str) -> usize {
    section.lines().filter(|l| l.trim() == word).count()
}

#[test]
fn nat_and_tun_services_in_kernel_ipvs() {
    const NAME: &str = "nat_and_tun_services_in_kernel_ipvs";
    if !lvs_tests::privilege::can_run(NAME) {
        return;
    }
    if let Some(why) = ipvs_vm::unavailable() {
        lvs_tests::privilege::skip_or_fail(NAME, &why);
        return;
    }
    let dir = target_dir().join("ipvs-vm");
    let kernel = ipvs_vm::kernel(&dir).expect("Debian's kernel");
    let image = ipvs_vm::initramfs(
        &kernel,
        MODULES,
        &lvs_tests::process::agent_bin(),
        include_str!("ipvs_vm/guest.sh"),
        &[
            ("k.conf", include_bytes!("ipvs_vm/keepalived.conf")),
            ("k-reload.conf", include_bytes!("ipvs_vm/keepalived-reload.conf")),
        ],
    )
    .expect("building the initramfs");
    let out = ipvs_vm::boot(&kernel, &image, &dir.join("run"), Duration::from_secs(240)).expect("booting the guest");
    let report = format!("guest results:\n{}", out.results);
    assert_eq!(out.failures, 0, "{report}");
    assert!(out.verdicts().all(|l| l.starts_with("ok ")), "{report}");

    // The codec sends what ipvsadm sends, byte for byte.
    let svc = |protocol: u16, last: u8, port: u16, scheduler: &str, flags: u32, timeout: u32, netmask: u32| Service {
        id: ServiceId::Addr { protocol, addr: [10, 7, 0, last].into(), port },
        scheduler: scheduler.into(),
        flags,
        timeout,
        netmask,
        pe_name: None,
        stats: Stats::default(),
    };
    let rr = svc(6, 210, 80, "rr", 0, 0, u32::MAX);
    let wlc = svc(17, 211, 53, "wlc", codec::IP_VS_SVC_F_PERSISTENT, 300, u32::from_ne_bytes([255, 255, 255, 0]));
    let tun = Dest::new([10, 7, 3, 9].into(), 80, codec::IP_VS_CONN_F_TUNNEL, 3);
    let mut masq = Dest::new([10, 7, 1, 9].into(), 53, codec::IP_VS_CONN_F_MASQ, 2);
    (masq.u_thresh, masq.l_thresh) = (100, 10);
    let masq5 = Dest::new([10, 7, 1, 9].into(), 53, codec::IP_VS_CONN_F_MASQ, 5);
    same_as_ipvsadm(&out, "new-service", &Request::NewService(rr.clone()));
    same_as_ipvsadm(&out, "new-dest-tun", &Request::NewDest(rr.id, tun));
    same_as_ipvsadm(&out, "new-service-persistent", &Request::NewService(wlc.clone()));
    same_as_ipvsadm(&out, "new-dest-masq", &Request::NewDest(wlc.id, masq));
    same_as_ipvsadm(&out, "set-dest", &Request::SetDest(wlc.id, masq5.clone()));
    same_as_ipvsadm(&out, "del-dest", &Request::DelDest(wlc.id, masq5));
    same_as_ipvsadm(&out, "del-service", &Request::DelService(wlc.id));
    same_as_ipvsadm(&out, "set-timeouts", &Request::SetTimeouts { tcp: 901, tcp_fin: 121, udp: 301 });

    // The kernel holds exactly what the config asks for, and the agent lists the same.
    let ipvsadm = out.section("ipvsadm").expect("ipvsadm section");
    assert_eq!(table(&ipvsadm), expected(), "{report}");
    // The agent lists the same, and the DR service beside them (XDP, not in the kernel).
    let list = out.section("list").expect("list section");
    let mut with_dr = expected();
    with_dr.insert(
        "TCP 10.7.0.102:80 rr".to_string(),
        BTreeSet::from([("10.7.0.50:80".to_string(), "Route".to_string(), "1".to_string())]),
    );
    assert_eq!(table(&list), with_dr, "lvs-agent list -n differs from the config:\n{report}");
    assert!(out.section("timeouts").unwrap_or_default().contains("Timeout (tcp tcpfin udp): 1000 100 200"), "{report}");

    // Real TCP through NAT (rr: 5 each) and TUN (wrr, equal weights: 5 each).
    let nat = out.section("traffic-nat").expect("traffic-nat");
    assert_eq!((count(&nat, "rs1"), count(&nat, "rs2")), (5, 5), "{report}");
    let tun = out.section("traffic-tun").expect("traffic-tun");
    assert_eq!((count(&tun, "rs3"), count(&tun, "rs4")), (5, 5), "{report}");
    // And the DR service through XDP beside them.
    let dr = out.section("traffic-dr").expect("traffic-dr");
    assert_eq!(count(&dr, "rs5"), 10, "{report}");

    // Kernel counters: 10 connections per service, 5 per real server; the agent shows the same.
    let stats = out.section("stats").expect("stats");
    let conns = |text: &str, name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|w| *w == name)?;
            f.get(at + 1)?.parse().ok()
        })
    };
    for (name, want) in [("10.7.0.100:80", 10), ("10.7.0.101:80", 10), ("10.7.1.2:8080", 5), ("10.7.3.2:80", 5)] {
        assert_eq!(conns(&stats, name), Some(want), "{name} in ipvsadm --stats:\n{report}");
    }
    let list_stats = out.section("list-stats").expect("list-stats");
    // The DR service's XDP counters: 10 connections, no reply packets through the director.
    let dr_row: Vec<&str> =
        list_stats.lines().find(|l| l.contains("-> 10.7.0.50:80")).unwrap_or_default().split_whitespace().collect();
    assert_eq!((dr_row.get(2), dr_row.get(4)), (Some(&"10"), Some(&"0")), "{report}");
    for name in ["10.7.0.100:80", "10.7.0.101:80", "10.7.1.2:8080", "10.7.2.2:8080", "10.7.3.2:80", "10.7.4.2:80"] {
        assert_eq!(
            conns(&list_stats, name),
            conns(&stats, name),
            "{name}: lvs-agent list --stats vs ipvsadm:\n{report}"
        );
    }

    let status = out.section("status").expect("status");
    assert!(status.contains("TCP  10.7.0.100:80 rr  (kernel IPVS)"), "{report}");
    assert!(!status.contains("10.7.0.102:80 rr  (kernel IPVS)"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(out.section("list-json").expect("list-json").trim()).expect("list --json parses");
    let forwarders: BTreeSet<(String, String)> = json["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (format!("{}:{}", s["address"].as_str().unwrap(), s["port"]), s["forwarder"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(forwarders.contains(&("10.7.0.102:80".into(), "xdp".into())), "{forwarders:?}");
    assert!(forwarders.contains(&("10.7.0.101:80".into(), "ipvs".into())), "{forwarders:?}");

    // Prometheus: kernel IPVS services and their kernel counters beside the XDP one.
    let metrics = out.section("metrics").expect("metrics");
    let nat = r#"protocol="TCP",address="10.7.0.100:80",scheduler="rr""#;
    for line in [
        format!(r#"lvs_service_forwarder{{{nat},forwarder="ipvs"}} 1"#),
        r#"lvs_service_forwarder{protocol="TCP",address="10.7.0.102:80",scheduler="rr",forwarder="xdp"} 1"#.into(),
        format!(r#"lvs_real_server_forward{{{nat},server="10.7.1.2:8080",forward="Masq"}} 1"#),
        format!(r#"lvs_service_connections_total{{{nat}}} 10"#),
        format!(r#"lvs_real_server_connections_total{{{nat},server="10.7.2.2:8080"}} 5"#),
        r#"lvs_real_server_forward{protocol="TCP",address="10.7.0.101:80",scheduler="wrr",server="10.7.4.2:80",forward="Tunnel"} 1"#.into(),
    ] {
        assert!(metrics.lines().any(|l| l.trim_end() == line), "missing `{line}` in /metrics:\n{report}");
    }

    // Drift repaired: the table after equals the config again, and the agent sent exactly the
    // four requests that undo the four changes (nothing that was right was touched); the first
    // pass programmed 3 services and 5 real servers.
    assert_eq!(table(&out.section("after-drift").expect("after-drift")), expected(), "{report}");
    let requests = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("kernel IPVS table brought to the configuration"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("requests=")?.parse().ok()))
            .collect()
    };
    assert_eq!(requests(&out.section("agent-log").expect("agent-log")).first(), Some(&8), "{report}");
    // (Summed: a drift check may fall between two of ipvsadm's changes.)
    assert_eq!(requests(&out.section("drift-log").expect("drift-log")).iter().sum::<u64>(), 4, "{report}");

    // Health: the stopped responder's destination left the kernel, the other stayed.
    let failed = table(&out.section("after-failure").expect("after-failure"));
    let mut want = expected();
    want.get_mut("TCP 10.7.0.100:80 rr").unwrap().retain(|d| d.0 != "10.7.2.2:8080");
    assert_eq!(failed, want, "{report}");

    // Reload: the new config in the kernel, by exactly its four differences (a weight, a real
    // server, a service, a scheduler).
    let d = |a: &str, f: &str, w: &str| (a.to_string(), f.to_string(), w.to_string());
    let reloaded = BTreeMap::from([
        ("TCP 10.7.0.100:80 rr".to_string(), BTreeSet::from([d("10.7.1.2:8080", "Masq", "4")])),
        (
            "TCP 10.7.0.101:80 rr".to_string(),
            BTreeSet::from([d("10.7.3.2:80", "Tunnel", "1"), d("10.7.4.2:80", "Tunnel", "1")]),
        ),
    ]);
    assert_eq!(table(&out.section("after-reload").expect("after-reload")), reloaded, "{report}");
    let reload_log = out.section("reload-log").expect("reload-log");
    assert!(reload_log.contains("reloaded /k.conf"), "{report}");
    assert_eq!(requests(&reload_log).iter().sum::<u64>(), 4, "{report}");
}
