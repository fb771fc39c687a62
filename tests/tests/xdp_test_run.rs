//! The XDP program under BPF_PROG_TEST_RUN: crafted frames in, action and exact bytes out.
//!
//! Services are installed through the agent's own reconciler, so these tests cover the map
//! layout the agent writes as well as the program that reads it. The test thread is pinned to
//! one CPU: test runs execute on the calling CPU, and the per-CPU scheduling cursor must be
//! the same one from run to run for the order to match the reference model.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use lvs_agent::{
    dataplane::Dataplane,
    desired::{Persistence, Plan, PlannedDest, PlannedService, RingKind, ServiceKey},
    reconcile::Reconciler,
};
use lvs_common::{
    filter,
    maps::{IPPROTO_TCP, IPPROTO_UDP},
    sched, sched_ext,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);

fn rs(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + n)
}
fn rs_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x0a, n]
}
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 0x10);

fn rs6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 10 + u16::from(n))
}

fn mac_of(a: IpAddr) -> Option<[u8; 6]> {
    let last = match a {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    (11..=13).contains(&last).then(|| rs_mac(last - 10))
}

fn service(vip: Ipv4Addr, port: u16, proto: u8, kind: RingKind, weights: &[(u8, u32)]) -> PlannedService {
    PlannedService {
        key: ServiceKey::new(vip.into(), port, proto),
        kind,
        dests: weights.iter().map(|&(n, weight)| PlannedDest { addr: rs(n).into(), port, weight }).collect(),
        persistence: None,
        sorry: None,
    }
}

fn service6(port: u16, proto: u8, kind: RingKind, weights: &[(u8, u32)]) -> PlannedService {
    PlannedService {
        key: ServiceKey::new(VIP6.into(), port, proto),
        kind,
        dests: weights.iter().map(|&(n, weight)| PlannedDest { addr: rs6(n).into(), port, weight }).collect(),
        persistence: None,
        sorry: None,
    }
}

/// The standard plan: TCP 80 wrr 1:2:3, UDP 53 rr, a TCP service with no usable server, and
/// IPv6 TCP 80 rr.
fn plan() -> Plan {
    Plan {
        services: vec![
            service(VIP, 80, IPPROTO_TCP, RingKind::Wrr, &[(1, 1), (2, 2), (3, 3)]),
            service(VIP, 53, IPPROTO_UDP, RingKind::Rr, &[(1, 1), (2, 1)]),
            service(EMPTY_VIP, 80, IPPROTO_TCP, RingKind::Rr, &[(1, 0)]),
            service6(80, IPPROTO_TCP, RingKind::Rr, &[(1, 1), (2, 1), (3, 1)]),
        ],
        ..Plan::default()
    }
}

struct Bed {
    dp: Dataplane,
    rec: Reconciler,
}

fn bed(test: &str) -> Option<Bed> {
    let (dp, rec) = common::load(test, DIRECTOR_MAC, &plan(), &mac_of)?;
    Some(Bed { dp, rec })
}

impl Bed {
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        common::run_once(&mut self.dp, frame)
    }

    /// Runs `frame`, expects XDP_TX, checks that only the MACs changed, and returns the new
    /// destination MAC.
    fn forwarded(&mut self, frame: &[u8]) -> [u8; 6] {
        let (action, out) = self.run(frame);
        assert_eq!(action, XDP_TX, "frame should be forwarded");
        assert_eq!(out.len(), frame.len());
        assert_eq!(&out[6..12], &DIRECTOR_MAC, "source MAC must be the director's");
        assert_eq!(&out[12..], &frame[12..], "nothing but the MACs may change");
        out[0..6].try_into().unwrap()
    }

    fn passed_untouched(&mut self, frame: &[u8]) {
        let (action, out) = self.run(frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, frame, "a passed frame must be untouched");
    }
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC).ipv4(src.octets(), dst.octets(), 64);
    let b = if syn { b.tcp(sport, dport, 1000, 64240).syn() } else { b.tcp(sport, dport, 1001, 64240).ack(5000) };
    let payload: &[u8] = if syn { b"" } else { b"GET / HTTP/1.0\r\n\r\n" };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn tcp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC).ipv6(src.octets(), dst.octets(), 64);
    let b = if syn { b.tcp(sport, dport, 1000, 64240).syn() } else { b.tcp(sport, dport, 1001, 64240).ack(5000) };
    let payload: &[u8] = if syn { b"" } else { b"GET / HTTP/1.0\r\n\r\n" };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp(sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, b"query")
        .unwrap();
    v
}

#[test]
fn syn_and_later_packets_of_a_flow_go_to_one_real_server() {
    let Some(mut b) = bed("syn_and_later_packets_of_a_flow_go_to_one_real_server") else { return };
    let first = b.forwarded(&tcp(CLIENT, 40000, VIP, 80, true));
    assert!((1..=3).any(|n| rs_mac(n) == first), "rewritten to a configured real server");
    for _ in 0..20 {
        assert_eq!(b.forwarded(&tcp(CLIENT, 40000, VIP, 80, false)), first);
        // New flows in between advance the scheduler; the established flow must not follow.
        b.forwarded(&tcp(CLIENT, 40001 + rand_port(), VIP, 80, true));
    }
}

fn rand_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The real servers (by MAC) of the first `n` new flows of the bed's wrr service with these
/// weights, as the `lvs_common::sched` reference model orders them.
fn wrr_macs(weights: &[u32], n: usize) -> Vec<[u8; 6]> {
    let mut ring = vec![0; sched::wrr_len(weights) as usize];
    sched::wrr_sequence(weights, &mut ring);
    ring.iter().cycle().take(n).map(|&i| rs_mac(i as u8 + 1)).collect()
}

#[test]
fn new_flows_follow_the_wrr_reference_model_exactly() {
    let Some(mut b) = bed("new_flows_follow_the_wrr_reference_model_exactly") else { return };
    let weights = [1u32, 2, 3];
    let expected = wrr_macs(&weights, 600);
    let got: Vec<[u8; 6]> = (0..600).map(|i| b.forwarded(&tcp(CLIENT, 20000 + i, VIP, 80, true))).collect();
    assert_eq!(got, expected);
    // Counters: one new flow and one packet per SYN, bytes as IP bytes.
    let svc = b.rec.services().find(|s| s.key.port() == 80 && s.key.ip() == IpAddr::V4(VIP)).unwrap().clone();
    for (i, d) in svc.dests.iter().enumerate() {
        let st = b.dp.maps_ref().dest_stats(d.slot).unwrap();
        assert_eq!(st.conns, 100 * weights[i] as u64, "{}", d.addr);
        assert_eq!(st.packets, 100 * weights[i] as u64);
        assert_eq!(st.bytes, 40 * 100 * weights[i] as u64, "20 bytes IP + 20 bytes TCP per SYN");
    }
}

#[test]
fn retransmitted_syns_keep_their_server_and_leave_the_scheduler_alone() {
    // The program picks a SYN's real server before its scan says whether the flow is new; a
    // retransmission must keep the first pick and must not step the wrr cursor.
    let Some(mut b) = bed("retransmitted_syns_keep_their_server_and_leave_the_scheduler_alone") else { return };
    let expected = wrr_macs(&[1, 2, 3], 120);
    let mut got = Vec::new();
    for i in 0..120 {
        let syn = tcp(CLIENT, 30000 + i, VIP, 80, true);
        let first = b.forwarded(&syn);
        assert_eq!(b.forwarded(&syn), first, "SYN from port {} again", 30000 + i);
        got.push(first);
    }
    assert_eq!(got, expected);
}

#[test]
fn ipv6_flows_are_forwarded_and_pinned() {
    let Some(mut b) = bed("ipv6_flows_are_forwarded_and_pinned") else { return };
    let got: Vec<[u8; 6]> = (0..6).map(|i| b.forwarded(&tcp6(CLIENT6, 30000 + i, VIP6, 80, true))).collect();
    assert_eq!(got, [rs_mac(1), rs_mac(2), rs_mac(3), rs_mac(1), rs_mac(2), rs_mac(3)], "rr over IPv6");
    for _ in 0..5 {
        assert_eq!(b.forwarded(&tcp6(CLIENT6, 30001, VIP6, 80, false)), rs_mac(2), "the flow stays");
    }
    // An extension header (here hop-by-hop, next header 0) goes to the kernel untouched.
    let mut ext = tcp6(CLIENT6, 30000, VIP6, 80, true);
    ext[14 + 6] = 0;
    b.passed_untouched(&ext);
    // Every truncation of an IPv6 frame passes untouched or drops.
    let f = tcp6(CLIENT6, 30009, VIP6, 80, false);
    for len in 14..f.len() {
        let (action, out) = b.run(&f[..len]);
        assert!(action == XDP_PASS || action == XDP_DROP, "len {len}: action {action}");
        assert_eq!(out, &f[..len], "len {len}");
    }
}

/// A bed with one TCP 80 service of the given kind over rs1..rs3 with weights 1:2:3.
fn hashing_bed(test: &str, kind: RingKind) -> Option<Bed> {
    let mut b = bed(test)?;
    let p = Plan { services: vec![service(VIP, 80, IPPROTO_TCP, kind, &[(1, 1), (2, 2), (3, 3)])], ..Plan::default() };
    b.rec.apply(&p, &mac_of, b.dp.maps()).expect("installing the service");
    Some(b)
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 78, 0, 0)) + i * 7919)
}

#[test]
fn hashing_schedulers_follow_the_reference_tables() {
    let weights = [1u32, 2, 3];
    for kind in [RingKind::Sh, RingKind::Dh, RingKind::Mh] {
        let Some(mut b) = hashing_bed("hashing_schedulers_follow_the_reference_tables", kind) else { return };
        // The reference: lvs-common's tables and hashes, the same code the agent and program use.
        let table: Vec<u32> = match kind {
            RingKind::Sh | RingKind::Dh => {
                let mut t = [0u32; 256];
                assert!(if kind == RingKind::Sh {
                    sched_ext::sh_table(&weights, &mut t)
                } else {
                    sched_ext::dh_table(&weights, &mut t)
                });
                t.to_vec()
            }
            _ => {
                let dests: Vec<sched_ext::MhDest> = (1..=3u8)
                    .map(|n| sched_ext::MhDest {
                        addr: [u32::from_ne_bytes(rs(n).octets()), 0, 0, 0],
                        port: 80,
                        weight: weights[usize::from(n - 1)],
                    })
                    .collect();
                let mut t = vec![0u32; sched_ext::MH_TAB_SIZE as usize];
                assert!(sched_ext::mh_table(&dests, &mut t));
                t
            }
        };
        let mut seen = [0u32; 4];
        for i in 0..300 {
            let src = client(i);
            let raw = u32::from_ne_bytes(src.octets());
            let bucket = match kind {
                RingKind::Sh => sched_ext::sh_bucket_v4(raw),
                RingKind::Dh => sched_ext::dh_bucket_v4(u32::from_ne_bytes(VIP.octets())),
                _ => sched_ext::mh_bucket_v4(raw, 0, false, sched_ext::MH_TAB_SIZE),
            };
            let want = rs_mac(table[bucket as usize] as u8 + 1);
            let got = b.forwarded(&tcp(src, 50000, VIP, 80, true));
            assert_eq!(got, want, "{kind:?}, client {src}");
            seen[usize::from(got[5])] += 1;
        }
        match kind {
            // dh hashes the VIP: one real server takes the whole service (IPVS's semantics).
            RingKind::Dh => assert_eq!(seen.iter().filter(|&&n| n == 300).count(), 1, "{seen:?}"),
            _ => assert!(seen[1..].iter().all(|&n| n > 0), "{kind:?}: every server gets clients: {seen:?}"),
        }
    }
}

#[test]
fn a_second_director_sends_established_flows_to_the_same_server() {
    for (kind, must_keep) in [(RingKind::Mh, true), (RingKind::Sh, true), (RingKind::Rr, false)] {
        let test = "a_second_director_sends_established_flows_to_the_same_server";
        let Some(mut first) = hashing_bed(test, kind) else { return };
        let Some(mut second) = hashing_bed(test, kind) else { return };
        // Flows open on the first director; then, mid-stream, their packets reach the second,
        // whose flow table has never seen them. The second has scheduled other traffic before
        // (as a real standby would), so a stateful scheduler is not in step with the first.
        second.forwarded(&tcp(Ipv4Addr::new(10, 79, 0, 1), 1234, VIP, 80, true));
        let mut kept = 0;
        for i in 0..60 {
            let src = client(i);
            let on_first = first.forwarded(&tcp(src, 40000 + i as u16, VIP, 80, true));
            let on_second = second.forwarded(&tcp(src, 40000 + i as u16, VIP, 80, false));
            kept += u32::from(on_first == on_second);
        }
        if must_keep {
            assert_eq!(kept, 60, "{kind:?}: every established flow keeps its real server");
        } else {
            // The control: rr schedules by arrival, so the second director moves flows.
            assert!(kept < 60, "{kind:?} kept all {kept} flows: the test cannot tell");
        }
    }
}

#[test]
fn persistence_keeps_a_client_network_on_its_real_server() {
    let Some(mut b) = bed("persistence_keeps_a_client_network_on_its_real_server") else { return };
    let mut svc = service(VIP, 80, IPPROTO_TCP, RingKind::Rr, &[(1, 1), (2, 1), (3, 1)]);
    let slash24 = u32::from_ne_bytes([255, 255, 255, 0]);
    svc.persistence = Some(Persistence { timeout: 50, mask: [slash24, 0, 0, 0] });
    b.rec.apply(&Plan { services: vec![svc.clone()], ..Plan::default() }, &mac_of, b.dp.maps()).unwrap();

    // rr would rotate; with persistence every connection of the client, and of its /24, lands
    // on the first one's real server.
    let a = Ipv4Addr::new(10, 80, 1, 5);
    let first = b.forwarded(&tcp(a, 20000, VIP, 80, true));
    for port in 20001..20020 {
        assert_eq!(b.forwarded(&tcp(a, port, VIP, 80, true)), first);
        assert_eq!(b.forwarded(&tcp(Ipv4Addr::new(10, 80, 1, 77), port, VIP, 80, true)), first, "same /24");
    }
    // Another network is scheduled on its own (rr moves on from the first choice).
    let other = b.forwarded(&tcp(Ipv4Addr::new(10, 80, 2, 5), 20000, VIP, 80, true));
    assert_ne!(other, first);

    // An expired template no longer binds: age it past the timeout, as the clock would.
    let templates = b.dp.maps().persistence_templates_v4();
    let keys: Vec<_> = templates.keys().map(Result::unwrap).collect();
    for k in keys {
        let mut t = templates.get(&k, 0).unwrap();
        t.last_used = t.last_used.wrapping_sub(51);
        templates.insert(k, t, 0).unwrap();
    }
    let after: Vec<[u8; 6]> = (0..3).map(|i| b.forwarded(&tcp(a, 21000 + i, VIP, 80, true))).collect();
    assert!(after.iter().all(|m| *m == after[0]), "a new template binds again: {after:?}");
    assert_ne!(after[0], first, "rr moved on, so the expired template was not used");

    // A removed real server's template is not followed.
    let bound = after[0];
    let rest: Vec<(u8, u32)> = (1..=3u8).filter(|&n| rs_mac(n) != bound).map(|n| (n, 1)).collect();
    svc.dests = service(VIP, 80, IPPROTO_TCP, RingKind::Rr, &rest).dests;
    b.rec.apply(&Plan { services: vec![svc], ..Plan::default() }, &mac_of, b.dp.maps()).unwrap();
    assert_ne!(b.forwarded(&tcp(a, 22000, VIP, 80, true)), bound);
}

#[test]
fn the_sorry_server_takes_new_flows_while_no_real_server_is_usable() {
    let Some(mut b) = bed("the_sorry_server_takes_new_flows_while_no_real_server_is_usable") else { return };
    let mut svc = service(VIP, 80, IPPROTO_TCP, RingKind::Rr, &[(1, 0), (2, 0)]);
    svc.sorry = Some(PlannedDest { addr: rs(3).into(), port: 80, weight: 1 });
    b.rec.apply(&Plan { services: vec![svc.clone()], ..Plan::default() }, &mac_of, b.dp.maps()).unwrap();
    assert_eq!(b.forwarded(&tcp(CLIENT, 23000, VIP, 80, true)), rs_mac(3), "to the sorry server");
    // A real server comes back: new flows go to it, the sorry server's flow stays.
    svc.dests = service(VIP, 80, IPPROTO_TCP, RingKind::Rr, &[(1, 1), (2, 0)]).dests;
    b.rec.apply(&Plan { services: vec![svc], ..Plan::default() }, &mac_of, b.dp.maps()).unwrap();
    assert_eq!(b.forwarded(&tcp(CLIENT, 23001, VIP, 80, true)), rs_mac(1));
    assert_eq!(b.forwarded(&tcp(CLIENT, 23000, VIP, 80, false)), rs_mac(3));
}

/// A later IPv4 fragment (offset 185 x 8 bytes, no L4 header) of datagram `id`.
fn later_fragment_v4(src: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut f = tcp(src, 1, VIP, 80, false);
    f.truncate(14 + 20 + 16);
    f[16..18].copy_from_slice(&36u16.to_be_bytes()); // total length: header + 16 bytes
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&185u16.to_be_bytes()); // offset, no More Fragments
    fix_ip_checksum(&mut f);
    f
}

#[test]
fn later_fragments_follow_their_first_fragment() {
    let Some(mut b) = bed("later_fragments_follow_their_first_fragment") else { return };
    for (i, src) in
        [Ipv4Addr::new(10, 81, 0, 1), Ipv4Addr::new(10, 81, 0, 2), Ipv4Addr::new(10, 81, 0, 3)].into_iter().enumerate()
    {
        let id = 7000 + i as u16;
        let mut first = tcp(src, 30000, VIP, 80, false);
        first[18..20].copy_from_slice(&id.to_be_bytes());
        first[20] = 0x20; // More Fragments, offset 0
        fix_ip_checksum(&mut first);
        let to = b.forwarded(&first);
        assert_eq!(b.forwarded(&later_fragment_v4(src, id)), to, "fragment of datagram {id}");
    }
    // A later fragment of a datagram whose first fragment was never seen: to the kernel.
    b.passed_untouched(&later_fragment_v4(Ipv4Addr::new(10, 81, 0, 9), 9999));

    // IPv6: a Fragment header after the fixed header.
    let frag6 = |offset_flags: u16, id: u32, body: &[u8]| {
        let mut f = tcp6(CLIENT6, 30100, VIP6, 80, false);
        let l4 = f.split_off(54);
        let mut fh = vec![6u8, 0];
        fh.extend_from_slice(&offset_flags.to_be_bytes());
        fh.extend_from_slice(&id.to_be_bytes());
        f[20] = 44; // next header: Fragment
        f.extend_from_slice(&fh);
        f.extend_from_slice(if body.is_empty() { &l4 } else { body });
        let payload = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&payload.to_be_bytes());
        f
    };
    let to = b.forwarded(&frag6(0x0001, 77, b"")); // offset 0, More Fragments
    assert_eq!(b.forwarded(&frag6(0x00b8, 77, &[0u8; 16])), to, "IPv6 later fragment");
    b.passed_untouched(&frag6(0x00b8, 78, &[0u8; 16]));
}

#[test]
fn icmp_errors_about_a_flow_reach_its_real_server() {
    let Some(mut b) = bed("icmp_errors_about_a_flow_reach_its_real_server") else { return };
    let to = b.forwarded(&tcp(CLIENT, 31000, VIP, 80, true));
    // A router on the way back says the real server's reply (VIP:80 -> client:31000) was too
    // big: fragmentation needed (type 3, code 4, next-hop MTU 1400).
    let icmp_about = |cport: u16| {
        let mut quoted = Vec::new();
        PacketBuilder::ipv4(VIP.octets(), CLIENT.octets(), 64).tcp(80, cport, 1, 100).write(&mut quoted, &[]).unwrap();
        quoted.truncate(28);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
            .ipv4([10, 77, 0, 1], VIP.octets(), 64)
            .icmpv4_raw(3, 4, [0, 0, 0x05, 0x78])
            .write(&mut f, &quoted)
            .unwrap();
        f
    };
    assert_eq!(b.forwarded(&icmp_about(31000)), to);
    // About no known flow: the kernel's business.
    b.passed_untouched(&icmp_about(31999));

    // ICMPv6 packet too big, likewise.
    let to6 = b.forwarded(&tcp6(CLIENT6, 31000, VIP6, 80, true));
    let mut quoted = Vec::new();
    PacketBuilder::ipv6(VIP6.octets(), CLIENT6.octets(), 64).tcp(80, 31000, 1, 100).write(&mut quoted, &[]).unwrap();
    quoted.truncate(48);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 1).octets(), VIP6.octets(), 64)
        .icmpv6_raw(2, 0, 1280u32.to_be_bytes())
        .write(&mut f, &quoted)
        .unwrap();
    assert_eq!(b.forwarded(&f), to6);
}

/// ActiveConn / InActConn of rs1..rs3 of the first service.
fn conns(b: &Bed) -> Vec<(u32, u32)> {
    let svc = b.rec.services().next().unwrap();
    svc.dests
        .iter()
        .map(|d| {
            let c = b.dp.maps_ref().dest_conns(d.slot).unwrap();
            (c.active, c.inactive)
        })
        .collect()
}

fn tcp_flags(src: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = tcp(src, sport, VIP, 80, false);
    f[14 + 20 + 13] = flags;
    f
}

#[test]
fn connections_are_counted_from_the_inbound_tcp_state() {
    let Some(mut b) = hashing_bed("connections_are_counted_from_the_inbound_tcp_state", RingKind::Rr) else { return };
    let src = Ipv4Addr::new(10, 82, 0, 1);
    let to = b.forwarded(&tcp(src, 40000, VIP, 80, true));
    let i = usize::from(to[5]) - 1;
    let at = |b: &Bed| conns(b)[i];
    assert_eq!(at(&b), (0, 1), "SYN: inactive (SYN_RECV)");
    b.forwarded(&tcp_flags(src, 40000, 0x10));
    assert_eq!(at(&b), (1, 0), "the client's ACK: established");
    for _ in 0..5 {
        b.forwarded(&tcp_flags(src, 40000, 0x18));
    }
    assert_eq!(at(&b), (1, 0), "data does not change it");
    b.forwarded(&tcp_flags(src, 40000, 0x11));
    assert_eq!(at(&b), (0, 1), "FIN: inactive (FIN_WAIT)");

    // Another connection ended by RST.
    let to2 = b.forwarded(&tcp(src, 40001, VIP, 80, true));
    b.forwarded(&tcp_flags(src, 40001, 0x10));
    b.forwarded(&tcp_flags(src, 40001, 0x04));
    let j = usize::from(to2[5]) - 1;
    assert_eq!(conns(&b)[j].0, 0, "RST: no longer active");

    // The agent's sweep expires idle flows and takes their counts back.
    let rec = &b.rec;
    let generation_of = |slot| rec.generation(slot);
    let far_future = u32::MAX / 4;
    let expired = b.dp.maps().expire_flows(far_future, &generation_of).unwrap();
    assert_eq!(expired, 2);
    assert!(conns(&b).iter().all(|&c| c == (0, 0)), "{:?}", conns(&b));
}

#[test]
fn least_connection_schedulers_follow_the_reference_model() {
    for kind in [RingKind::Lc, RingKind::Wlc, RingKind::Sed, RingKind::Nq] {
        let Some(mut b) = hashing_bed("least_connection_schedulers_follow_the_reference_model", kind) else { return };
        let weights = [1u32, 2, 3];
        for i in 0..60u16 {
            // The loads the program sees, through the reference model.
            let loads: Vec<sched_ext::ConnLoad> = conns(&b)
                .iter()
                .zip(weights)
                .map(|(&(active, inactive), weight)| sched_ext::ConnLoad { active, inactive, weight })
                .collect();
            let want = match kind {
                RingKind::Lc => sched_ext::select_lc(&loads),
                RingKind::Wlc => sched_ext::select_wlc(&loads),
                RingKind::Sed => sched_ext::select_sed(&loads),
                _ => sched_ext::select_nq(&loads),
            }
            .unwrap();
            let src = Ipv4Addr::new(10, 83, 0, 1);
            let got = b.forwarded(&tcp(src, 41000 + i, VIP, 80, true));
            assert_eq!(got, rs_mac(want as u8 + 1), "{kind:?}, connection {i}, loads {loads:?}");
            // Every third connection becomes established, so active and inactive both matter.
            if i % 3 == 0 {
                b.forwarded(&tcp_flags(src, 41000 + i, 0x10));
            }
        }
        let total: u32 = conns(&b).iter().map(|c| c.0 + c.1).sum();
        assert_eq!(total, 60, "{kind:?}: every connection counted once");
    }
}

#[test]
fn udp_to_the_vip_is_forwarded_round_robin() {
    let Some(mut b) = bed("udp_to_the_vip_is_forwarded_round_robin") else { return };
    let got: Vec<[u8; 6]> = (0..4).map(|i| b.forwarded(&udp(5000 + i, VIP, 53))).collect();
    assert_eq!(got, [rs_mac(1), rs_mac(2), rs_mac(1), rs_mac(2)]);
    assert_eq!(b.forwarded(&udp(5000, VIP, 53)), rs_mac(1), "same 5-tuple, same real server");
}

#[test]
fn everything_not_for_a_vip_service_passes_untouched() {
    let Some(mut b) = bed("everything_not_for_a_vip_service_passes_untouched") else { return };
    // Not a VIP.
    b.passed_untouched(&tcp(CLIENT, 40000, Ipv4Addr::new(10, 77, 0, 2), 80, true));
    // The VIP, but a port or protocol with no service.
    b.passed_untouched(&tcp(CLIENT, 40000, VIP, 22, true));
    b.passed_untouched(&udp(40000, VIP, 80));
    // An address sharing the VIP's filter bit still passes (the lookups decide, not the bit).
    let vip_bit = filter::bit_v4(u32::from_ne_bytes(VIP.octets()));
    let twin = (0u32..=u32::MAX)
        .map(|i| Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
        .find(|a| *a != VIP && filter::bit_v4(u32::from_ne_bytes(a.octets())) == vip_bit)
        .unwrap();
    b.passed_untouched(&tcp(CLIENT, 40000, twin, 80, true));
    // ICMP to the VIP (ping) is the director's own business.
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"ping")
        .unwrap();
    b.passed_untouched(&icmp);
    // ARP who-has VIP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP.octets());
    b.passed_untouched(&arp);
    // IPv6 TCP to an address that is not a VIP.
    b.passed_untouched(&tcp6(CLIENT6, 40000, Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 0x2), 80, true));
    // IPv6 to the VIP on a port with no service.
    b.passed_untouched(&tcp6(CLIENT6, 40000, VIP6, 22, true));
    // A frame with nothing after the Ethernet header (the kernel's test run takes nothing
    // shorter: bpf_prog_test_run_xdp rejects data below ETH_HLEN).
    b.passed_untouched(&tcp(CLIENT, 40000, VIP, 80, true)[..14]);
}

#[test]
fn ip_options_are_skipped_to_find_the_ports() {
    let Some(mut b) = bed("ip_options_are_skipped_to_find_the_ports") else { return };
    let plain = tcp(CLIENT, 41000, VIP, 80, true);
    // Insert 4 bytes of IP options (NOP NOP NOP EOL): IHL 6.
    let mut f = plain[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&plain[34..]);
    f[14] = 0x46;
    let tot = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ip_checksum(&mut f);
    let to = b.forwarded(&f);
    assert!((1..=3).any(|n| rs_mac(n) == to));
}

#[test]
fn a_service_without_usable_real_servers_drops_and_counts() {
    let Some(mut b) = bed("a_service_without_usable_real_servers_drops_and_counts") else { return };
    for i in 0..3 {
        let (action, _) = b.run(&tcp(CLIENT, 42000 + i, EMPTY_VIP, 80, true));
        assert_eq!(action, XDP_DROP);
    }
    let svc = b.rec.services().find(|s| s.key.ip() == IpAddr::V4(EMPTY_VIP)).unwrap().index;
    let st = b.dp.maps_ref().service_stats(svc).unwrap();
    assert_eq!((st.dropped_packets, st.dropped_bytes), (3, 120));
}

#[test]
fn quiesced_servers_keep_flows_and_removed_ones_lose_them() {
    let Some(mut b) = bed("quiesced_servers_keep_flows_and_removed_ones_lose_them") else { return };
    // Find one flow on each real server.
    let mut on: [Option<u16>; 4] = [None; 4];
    for port in 43000..43100 {
        let to = b.forwarded(&tcp(CLIENT, port, VIP, 80, true));
        let n = to[5] as usize;
        on[n].get_or_insert(port);
    }
    let (p1, p3) = (on[1].unwrap(), on[3].unwrap());

    // rs3 to weight 0: its flow continues, new flows avoid it.
    let mut quiesce = plan();
    quiesce.services[0] = service(VIP, 80, IPPROTO_TCP, RingKind::Wrr, &[(1, 1), (2, 2), (3, 0)]);
    b.rec.apply(&quiesce, &mac_of, b.dp.maps()).unwrap();
    assert_eq!(b.forwarded(&tcp(CLIENT, p3, VIP, 80, false)), rs_mac(3));
    for port in 44000..44060 {
        assert_ne!(b.forwarded(&tcp(CLIENT, port, VIP, 80, true)), rs_mac(3));
    }

    // rs1 removed: its flow moves to a remaining server and then stays there.
    let mut removed = plan();
    removed.services[0] = service(VIP, 80, IPPROTO_TCP, RingKind::Wrr, &[(2, 1), (3, 1)]);
    b.rec.apply(&removed, &mac_of, b.dp.maps()).unwrap();
    let moved = b.forwarded(&tcp(CLIENT, p1, VIP, 80, false));
    assert!(moved == rs_mac(2) || moved == rs_mac(3));
    assert_eq!(b.forwarded(&tcp(CLIENT, p1, VIP, 80, false)), moved);
}

#[test]
fn truncated_frames_are_never_rewritten() {
    let Some(mut b) = bed("truncated_frames_are_never_rewritten") else { return };
    for frame in [tcp(CLIENT, 45000, VIP, 80, true), tcp(CLIENT, 45001, VIP, 80, false), udp(45002, VIP, 53)] {
        // From 14 bytes on: the kernel's test run rejects shorter data (ETH_HLEN minimum).
        for len in 14..frame.len() {
            let cut = &frame[..len];
            let (action, out) = b.run(cut);
            assert!(action == XDP_PASS || action == XDP_DROP, "len {len}: action {action}");
            assert_eq!(out, cut, "len {len}: a truncated frame must not be rewritten");
        }
    }
}

#[test]
fn removing_all_services_passes_vip_traffic_again() {
    let Some(mut b) = bed("removing_all_services_passes_vip_traffic_again") else { return };
    let f = tcp(CLIENT, 46000, VIP, 80, true);
    b.forwarded(&f);
    b.rec.apply(&Plan::default(), &mac_of, b.dp.maps()).unwrap();
    b.passed_untouched(&f);
    b.passed_untouched(&tcp(CLIENT, 46000, VIP, 80, false));
}

fn fix_ip_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let mut sum = 0u32;
    for c in frame[14..14 + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
fn every_connection_of_one_client_is_listed_once() {
    // The end-to-end client's pattern: one address, one service, thousands of source ports,
    // each connection opened, used and closed; ports reused. Every 5-tuple must be in the flow
    // table once, with the real server its packets went to.
    let Some(mut b) = bed("every_connection_of_one_client_is_listed_once") else { return };
    let mut sent = std::collections::BTreeMap::new();
    let ports = (0..12_000u32).map(|i| 32768 + ((i * 7919) % 28000) as u16);
    for port in ports.clone().chain(ports.take(500)) {
        let to = b.forwarded(&tcp(CLIENT, port, VIP, 80, true));
        for flags in [0x10, 0x18, 0x11, 0x10] {
            assert_eq!(b.forwarded(&tcp_flags(CLIENT, port, flags)), to, "port {port}, flags {flags:#x}");
        }
        // A reused port is the same flow, alive (FIN_WAIT): its SYN keeps the real server.
        if let Some(before) = sent.insert(port, to) {
            assert_eq!(before, to, "port {port} reused");
        }
    }
    let listed = b.dp.maps_ref().connections(0);
    let mut seen = std::collections::BTreeMap::new();
    for (client, vip, proto, e) in &listed {
        assert_eq!((client.ip(), *vip, *proto), (IpAddr::V4(CLIENT), (VIP, 80).into(), IPPROTO_TCP));
        assert!(seen.insert(client.port(), e.flow.dest).is_none(), "port {} listed twice", client.port());
    }
    assert_eq!(seen.len(), sent.len(), "every connection listed");
    let slot_of = |mac: [u8; 6]| {
        let svc = b.rec.services().find(|s| s.dests.len() == 3 && s.dests[0].addr.is_ipv4()).unwrap();
        svc.dests.iter().find(|d| d.mac == Some(mac)).unwrap().slot
    };
    for (port, mac) in &sent {
        assert_eq!(seen.get(port), Some(&slot_of(*mac)), "port {port}");
    }
}

#[test]
fn the_sweep_keeps_a_flow_the_program_touched_after_the_sweep_read_it() {
    let Some(mut b) = bed("the_sweep_keeps_a_flow_the_program_touched_after_the_sweep_read_it") else { return };
    b.dp.maps().set_clock(1000).unwrap();
    let (kept, freed) = (41000u16, 41001u16);
    for port in [kept, freed] {
        b.forwarded(&tcp(CLIENT, port, VIP, 80, true));
    }
    // The sweep reads both as idle at a time far past their timeouts...
    let t = b.dp.maps_ref().timeouts().unwrap();
    let table = b.dp.maps_ref().flow_table_v4();
    let idle = table.idle(table.part(0, 1), 1000 + 10_000, &t);
    assert_eq!(idle.len(), 2);
    // ...then, before it frees them, a packet of one arrives (the clock has moved on).
    b.dp.maps().set_clock(1000 + 10_000).unwrap();
    b.forwarded(&tcp_flags(CLIENT, kept, 0x10));
    let table = b.dp.maps_ref().flow_table_v4();
    let freed_now: Vec<u16> = idle.iter().filter(|e| table.free(e)).map(|e| u16::from_be(e.slot.sport)).collect();
    assert_eq!(freed_now, [freed], "only the untouched flow is freed");
    let listed: Vec<u16> = b.dp.maps_ref().connections(1000 + 10_000).iter().map(|c| c.0.port()).collect();
    assert_eq!(listed, [kept]);
}
