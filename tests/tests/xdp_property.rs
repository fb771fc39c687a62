//! Property tests of the XDP program under BPF_PROG_TEST_RUN: random frames in, and for each
//! the action and the output bytes checked against what the program may do.
//!
//! - Frames not for a virtual service pass untouched.
//! - Frames for a VIP pass untouched, drop, or are forwarded with nothing but the MACs changed
//!   (to a configured real server, from the director); a well-formed one for a service with
//!   usable real servers is forwarded to one of that service's.
//! - A flow keeps its real server across interleavings with other flows.
//!
//! Each property runs 2,000 cases from a fixed seed (so a failure reproduces), with failure
//! persistence off (no files written), on a bed of its own: the program loaded once and the
//! services installed through the agent's `Reconciler`, as in `xdp_test_run.rs`. A failure
//! reports the minimal frame in hex. The thread is pinned to CPU 0, as there: test runs
//! execute on the calling CPU and per-CPU state (cursors, flow cache) must stay on one.

mod common;

use std::{
    cell::RefCell,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lvs_agent::{
    dataplane::Dataplane,
    desired::{Plan, PlannedDest, PlannedService, RingKind, ServiceKey},
    reconcile::Reconciler,
};
use lvs_common::{
    filter,
    maps::{IPPROTO_FRAGMENT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRunner},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const CASES: u32 = 2000;
/// Any fixed value: the same cases every run.
const SEED: u64 = 0x6c76_732d_7864_7021;

const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

const VIP4A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const VIP4B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
const VIP6A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 0x100);
const VIP6B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 0x101);
const VIPS4: [Ipv4Addr; 2] = [VIP4A, VIP4B];
const VIPS6: [Ipv6Addr; 2] = [VIP6A, VIP6B];

/// A virtual service of the bed: real servers `n` (rs1..rs3) with their weights.
struct Svc {
    vip: IpAddr,
    port: u16,
    proto: u8,
    kind: RingKind,
    dests: &'static [(u8, u32)],
}

/// Both families, TCP and UDP, every kind of scheduler, and one service with no usable real
/// server (weight 0), which drops.
const SERVICES: &[Svc] = &[
    Svc { vip: IpAddr::V4(VIP4A), port: 80, proto: IPPROTO_TCP, kind: RingKind::Wrr, dests: &[(1, 1), (2, 2), (3, 3)] },
    Svc { vip: IpAddr::V4(VIP4A), port: 53, proto: IPPROTO_UDP, kind: RingKind::Rr, dests: &[(1, 1), (2, 1)] },
    Svc { vip: IpAddr::V4(VIP4B), port: 443, proto: IPPROTO_TCP, kind: RingKind::Sh, dests: &[(1, 1), (2, 1), (3, 1)] },
    Svc { vip: IpAddr::V4(VIP4B), port: 53, proto: IPPROTO_UDP, kind: RingKind::Mh, dests: &[(2, 1), (3, 2)] },
    Svc { vip: IpAddr::V4(VIP4B), port: 8080, proto: IPPROTO_TCP, kind: RingKind::Rr, dests: &[(1, 0)] },
    Svc { vip: IpAddr::V6(VIP6A), port: 80, proto: IPPROTO_TCP, kind: RingKind::Mh, dests: &[(1, 1), (2, 1), (3, 1)] },
    Svc { vip: IpAddr::V6(VIP6A), port: 53, proto: IPPROTO_UDP, kind: RingKind::Rr, dests: &[(1, 1), (3, 1)] },
    Svc { vip: IpAddr::V6(VIP6B), port: 443, proto: IPPROTO_TCP, kind: RingKind::Wrr, dests: &[(1, 2), (2, 1)] },
    Svc { vip: IpAddr::V6(VIP6B), port: 8443, proto: IPPROTO_TCP, kind: RingKind::Sh, dests: &[(2, 1), (3, 1)] },
    Svc { vip: IpAddr::V6(VIP6B), port: 8080, proto: IPPROTO_UDP, kind: RingKind::Dh, dests: &[(1, 1), (2, 1)] },
];

impl Svc {
    /// The MACs new flows of this service may be sent to.
    fn macs(&self) -> Vec<[u8; 6]> {
        self.dests.iter().filter(|&&(_, w)| w > 0).map(|&(n, _)| rs_mac(n)).collect()
    }

    fn addr_of(&self, n: u8) -> IpAddr {
        match self.vip {
            IpAddr::V4(_) => Ipv4Addr::new(10, 77, 0, 10 + n).into(),
            IpAddr::V6(_) => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x77, 10 + u16::from(n)).into(),
        }
    }
}

fn rs_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x0a, n]
}

const ALL_RS_MACS: [[u8; 6]; 3] = [[0x02, 0, 0, 0, 0x0a, 1], [0x02, 0, 0, 0, 0x0a, 2], [0x02, 0, 0, 0, 0x0a, 3]];

fn mac_of(a: IpAddr) -> Option<[u8; 6]> {
    let last = match a {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    (11..=13).contains(&last).then(|| rs_mac(last - 10))
}

/// Is `vip:port` over `proto` a configured service?
fn configured(vip: IpAddr, port: u16, proto: u8) -> bool {
    SERVICES.iter().any(|s| s.vip == vip && s.port == port && s.proto == proto)
}

fn plan() -> Plan {
    Plan {
        services: SERVICES
            .iter()
            .map(|s| PlannedService {
                key: ServiceKey::new(s.vip, s.port, s.proto),
                kind: s.kind,
                dests: s
                    .dests
                    .iter()
                    .map(|&(n, weight)| PlannedDest { addr: s.addr_of(n), port: s.port, weight })
                    .collect(),
                persistence: None,
                sorry: None,
            })
            .collect(),
        ..Plan::default()
    }
}

struct Bed {
    dp: Dataplane,
    _rec: Reconciler,
}

fn bed(test: &str) -> Option<Bed> {
    // The largest property creates about 16,000 flows, well within common::load's table.
    let (dp, rec) = common::load(test, DIRECTOR_MAC, &plan(), &mac_of)?;
    Some(Bed { dp, _rec: rec })
}

impl Bed {
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        common::run_once(&mut self.dp, frame)
    }
}

/// Runs `cases` of `strategy` through `test` with the fixed seed; panics with proptest's report
/// (the minimal failing input) on failure.
fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let config = Config {
        cases: CASES,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(SEED),
        failure_persistence: None,
        // Shrinking runs the program once per step (microseconds); bounded all the same.
        max_shrink_iters: 20_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// A frame, shown in hex (a failure report is meant to be pasted into a bug).
#[derive(Clone, PartialEq, Eq)]
struct Frame(Vec<u8>);

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes: ", self.0.len())?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

// ---- Frame construction ----------------------------------------------------------------

fn eth(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend_from_slice(&DIRECTOR_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// An L4 header and payload. TCP and UDP get their real header layout (checksums are not
/// the program's business and stay zero); anything else is `payload` alone.
fn l4(proto: u8, sport: u16, dport: u16, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match proto {
        IPPROTO_TCP => {
            v.extend_from_slice(&sport.to_be_bytes());
            v.extend_from_slice(&dport.to_be_bytes());
            v.extend_from_slice(&1000u32.to_be_bytes());
            v.extend_from_slice(&5000u32.to_be_bytes());
            v.extend_from_slice(&[0x50, tcp_flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        }
        IPPROTO_UDP => {
            v.extend_from_slice(&sport.to_be_bytes());
            v.extend_from_slice(&dport.to_be_bytes());
            v.extend_from_slice(&u16::try_from(8 + payload.len()).expect("short payload").to_be_bytes());
            v.extend_from_slice(&[0, 0]);
        }
        _ => {}
    }
    v.extend_from_slice(payload);
    v
}

/// An IPv4 frame with a consistent header: IHL from `options` (cut to whole words, at most
/// 40 bytes), total length, and header checksum.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, frag: u16, options: &[u8], l4: &[u8]) -> Vec<u8> {
    let opts = &options[..options.len().min(40) / 4 * 4];
    let ihl = 20 + opts.len();
    let mut h = vec![0x40 | u8::try_from(ihl / 4).expect("ihl"), 0];
    h.extend_from_slice(&u16::try_from(ihl + l4.len()).expect("short frame").to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(opts);
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h.extend_from_slice(l4);
    eth(ETH_P_IP, &h)
}

/// An IPv6 fragment header: next header, offset-and-flags word (offset << 3 | M), id.
#[derive(Debug, Clone, Copy)]
struct FragHdr {
    next: u8,
    off_flags: u16,
    id: u32,
}

/// An IPv6 frame with the right payload length; with `frag`, a Fragment header first.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, frag: Option<FragHdr>, l4: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    if let Some(fh) = frag {
        payload.extend_from_slice(&[fh.next, 0]);
        payload.extend_from_slice(&fh.off_flags.to_be_bytes());
        payload.extend_from_slice(&fh.id.to_be_bytes());
    }
    payload.extend_from_slice(l4);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&u16::try_from(payload.len()).expect("short frame").to_be_bytes());
    h.extend_from_slice(&[if frag.is_some() { IPPROTO_FRAGMENT } else { next }, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&payload);
    eth(ETH_P_IPV6, &h)
}

/// A damage done to a frame after it is built.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// XOR a byte (position taken modulo the length) with a non-zero mask.
    Flip(usize, u8),
    /// Cut the frame, keeping at least the Ethernet header (the kernel's test run takes no
    /// shorter frame).
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn truncate(f: &mut Vec<u8>, at: usize) {
    let keep = 14 + at % (f.len() - 13);
    f.truncate(keep);
}

fn apply(f: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        match *m {
            Mutation::Flip(at, mask) => {
                let i = at % f.len();
                f[i] ^= mask;
            }
            Mutation::Truncate(at) => truncate(f, at),
        }
    }
}

// ---- Address strategies ----------------------------------------------------------------

/// IPv4 addresses that share a VIP's pre-filter bit without being a VIP: the filter lets them
/// through and only the lookups tell them apart.
fn filter_twins_v4() -> Vec<Ipv4Addr> {
    let bits: Vec<u32> = VIPS4.iter().map(|v| filter::bit_v4(u32::from_ne_bytes(v.octets()))).collect();
    (0u32..)
        .map(|i| Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
        .filter(|a| !VIPS4.contains(a) && bits.contains(&filter::bit_v4(u32::from_ne_bytes(a.octets()))))
        .take(8)
        .collect()
}

/// A non-VIP IPv4 address: random, a VIP with one bit flipped, or a filter twin.
fn non_vip_v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        (0..VIPS4.len(), 0..32u32).prop_map(|(v, bit)| Ipv4Addr::from(u32::from(VIPS4[v]) ^ (1 << bit))),
        proptest::sample::select(filter_twins_v4()),
    ]
    .prop_filter("not a VIP", |a| !VIPS4.contains(a))
}

/// A non-VIP IPv6 address: random, or a VIP with one bit flipped (a flip in the first 96 bits
/// keeps the last word, which is all the pre-filter looks at).
fn non_vip_v6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (0..VIPS6.len(), 0..128u32).prop_map(|(v, bit)| Ipv6Addr::from(u128::from(VIPS6[v]) ^ (1 << bit))),
    ]
    .prop_filter("not a VIP", |a| !VIPS6.contains(a))
}

/// A random frame changed until its IP destination (where the program reads it) is no VIP:
/// random bytes can land on one, by construction or by a mutation.
fn steer_clear_of_vips(f: &mut [u8]) {
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    if ethertype == ETH_P_IP && f.len() >= 34 {
        while VIPS4.iter().any(|v| f[30..34] == v.octets()) {
            f[33] ^= 0x80;
        }
    }
    if ethertype == ETH_P_IPV6 && f.len() >= 54 {
        while VIPS6.iter().any(|v| f[38..54] == v.octets()) {
            f[53] ^= 0x80;
        }
    }
}

fn ethertype() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(ETH_P_IP),
        3 => Just(ETH_P_IPV6),
        1 => Just(0x0806u16), // ARP
        1 => Just(0x8100u16), // 802.1Q
        2 => any::<u16>(),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..48)
}

/// A protocol number, biased to the ones the program looks at.
fn proto() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => Just(IPPROTO_TCP),
        2 => Just(IPPROTO_UDP),
        1 => Just(IPPROTO_ICMP),
        1 => Just(IPPROTO_ICMPV6),
        1 => Just(IPPROTO_FRAGMENT),
        2 => any::<u8>(),
    ]
}

/// An IPv4 flags/fragment word: none, More Fragments at offset 0, a later fragment, or random.
fn frag_v4() -> impl Strategy<Value = u16> {
    prop_oneof![
        2 => Just(0u16),
        1 => Just(0x4000u16), // Don't Fragment
        1 => Just(0x2000u16), // first fragment
        1 => (1..0x2000u16, any::<bool>()).prop_map(|(off, mf)| off | if mf { 0x2000 } else { 0 }),
        1 => any::<u16>(),
    ]
}

// ---- Property a: frames not for a service -------------------------------------------------

/// A frame for no configured VIP:port:protocol, as the program must see it.
fn not_for_a_service() -> impl Strategy<Value = Frame> {
    // Anything at all on the wire, with the IP destination clear of the VIPs.
    let raw = (ethertype(), vec(any::<u8>(), 0..120), vec(mutation(), 0..2)).prop_map(|(et, body, m)| {
        let mut f = eth(et, &body);
        apply(&mut f, &m);
        steer_clear_of_vips(&mut f);
        Frame(f)
    });
    // Well-formed IPv4, then damaged, to any address but a VIP.
    let v4 = (
        any::<u32>().prop_map(Ipv4Addr::from),
        non_vip_v4(),
        proto(),
        (any::<u16>(), any::<u16>(), any::<u8>()),
        frag_v4(),
        vec(any::<u8>(), 0..44),
        payload(),
        vec(mutation(), 0..4),
    )
        .prop_map(|(src, dst, proto, (sport, dport, flags), frag, opts, pl, m)| {
            let mut f = ipv4(src, dst, proto, 1, frag, &opts, &l4(proto, sport, dport, flags, &pl));
            apply(&mut f, &m);
            steer_clear_of_vips(&mut f);
            Frame(f)
        });
    // Well-formed IPv6 (with or without a Fragment header), then damaged, to any but a VIP.
    let v6 = (
        any::<u128>().prop_map(Ipv6Addr::from),
        non_vip_v6(),
        proto(),
        (any::<u16>(), any::<u16>(), any::<u8>()),
        proptest::option::of((any::<u16>(), any::<u32>())),
        payload(),
        vec(mutation(), 0..4),
    )
        .prop_map(|(src, dst, proto, (sport, dport, flags), frag, pl, m)| {
            let fh = frag.map(|(off_flags, id)| FragHdr { next: proto, off_flags, id });
            let mut f = ipv6(src, dst, proto, fh, &l4(proto, sport, dport, flags, &pl));
            apply(&mut f, &m);
            steer_clear_of_vips(&mut f);
            Frame(f)
        });
    prop_oneof![2 => raw, 3 => v4, 3 => v6, 3 => vip_unserved_v4(), 3 => vip_unserved_v6()]
}

/// A TCP or UDP destination port with no service on `vip` for `proto`.
fn unserved(vip: IpAddr, proto: u8, port: u16) -> bool {
    !configured(vip, port, proto)
}

/// Well-formed IPv4 to a VIP, but on a port or protocol with no service, possibly truncated.
/// Not a later TCP/UDP fragment: those carry no port, so they may belong to a service.
fn vip_unserved_v4() -> impl Strategy<Value = Frame> {
    let tcp_udp = (prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP)], any::<u16>(), any::<bool>())
        .prop_map(|(p, port, mf)| (p, port, if mf { 0x2000 } else { 0 }));
    let other =
        (any::<u8>().prop_filter("no balanced protocol", |p| *p != IPPROTO_TCP && *p != IPPROTO_UDP), frag_v4())
            .prop_map(|(p, frag)| (p, 0, frag));
    (
        0..VIPS4.len(),
        any::<u32>().prop_map(Ipv4Addr::from),
        prop_oneof![tcp_udp, other],
        (any::<u16>(), any::<u8>(), any::<u16>()),
        vec(any::<u8>(), 0..44),
        payload(),
        proptest::option::of(any::<usize>()),
    )
        .prop_filter_map("a served port", |(v, src, (proto, dport, frag), (sport, flags, id), opts, pl, cut)| {
            let vip = VIPS4[v];
            if !unserved(vip.into(), proto, dport) {
                return None;
            }
            let mut f = ipv4(src, vip, proto, id, frag, &opts, &l4(proto, sport, dport, flags, &pl));
            if let Some(at) = cut {
                truncate(&mut f, at);
            }
            Some(Frame(f))
        })
}

/// Well-formed IPv6 to a VIP6, on a port or next header with no service, possibly truncated:
/// TCP/UDP to a port with none (unfragmented or a first fragment), any fragment of another
/// protocol (the Fragment header names the protocol in every fragment), or another next header.
fn vip_unserved_v6() -> impl Strategy<Value = Frame> {
    let balanced = prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP)];
    let not_balanced = any::<u8>().prop_filter("no balanced protocol", |p| *p != IPPROTO_TCP && *p != IPPROTO_UDP);
    let tcp_udp = (balanced, any::<u16>(), proptest::option::of((any::<bool>(), any::<u32>())))
        .prop_map(|(p, port, frag)| (p, port, frag.map(|(mf, id)| FragHdr { next: p, off_flags: u16::from(mf), id })));
    let other_fragment = (not_balanced.clone(), any::<u16>(), any::<u32>())
        .prop_map(|(p, off_flags, id)| (p, 0, Some(FragHdr { next: p, off_flags, id })));
    let other =
        not_balanced.prop_filter("not a Fragment header", |p| *p != IPPROTO_FRAGMENT).prop_map(|p| (p, 0, None));
    (
        0..VIPS6.len(),
        any::<u128>().prop_map(Ipv6Addr::from),
        prop_oneof![tcp_udp, other_fragment, other],
        (any::<u16>(), any::<u8>()),
        payload(),
        proptest::option::of(any::<usize>()),
    )
        .prop_filter_map("a served port", |(v, src, (proto, dport, fh), (sport, flags), pl, cut)| {
            let vip = VIPS6[v];
            if !unserved(vip.into(), proto, dport) {
                return None;
            }
            let mut f = ipv6(src, vip, proto, fh, &l4(proto, sport, dport, flags, &pl));
            if let Some(at) = cut {
                truncate(&mut f, at);
            }
            Some(Frame(f))
        })
}

#[test]
fn frames_for_no_service_pass_untouched() {
    let Some(bed) = bed("frames_for_no_service_pass_untouched") else { return };
    let bed = RefCell::new(bed);
    check(not_for_a_service(), |Frame(f)| {
        let (action, out) = bed.borrow_mut().run(&f);
        prop_assert_eq!(action, XDP_PASS, "action for {:?}", Frame(f.clone()));
        prop_assert!(out == f, "a passed frame was changed: in {:?}, out {:?}", Frame(f.clone()), Frame(out));
        Ok(())
    });
}

// ---- Property b: frames to a VIP ----------------------------------------------------------

/// How a frame to a service is fragmented.
#[derive(Debug, Clone, Copy)]
enum Frag {
    None,
    /// Offset 0, More Fragments: carries the ports.
    First(u32),
    /// A later fragment (offset in 8-byte units, More Fragments): no L4 header.
    Later(u16, bool, u32),
    /// IPv6 only: another extension header (hop-by-hop, routing, destination options) before
    /// the L4 header; the program leaves these to the kernel.
    OtherExt(u8),
}

#[derive(Debug, Clone)]
struct ToVip {
    svc: usize,
    src: u128,
    sport: u16,
    /// The service's port, or (when set) another.
    other_port: Option<u16>,
    flags: u8,
    options: Vec<u8>,
    frag: Frag,
    payload: Vec<u8>,
    mutations: Vec<Mutation>,
}

impl ToVip {
    fn dport(&self) -> u16 {
        self.other_port.unwrap_or(SERVICES[self.svc].port)
    }

    /// Built as described, then mutated.
    fn frame(&self) -> Vec<u8> {
        let s = &SERVICES[self.svc];
        let body = l4(s.proto, self.sport, self.dport(), self.flags, &self.payload);
        let mut f = match s.vip {
            IpAddr::V4(vip) => {
                let (frag, id, body) = match self.frag {
                    Frag::None | Frag::OtherExt(_) => (0, 0, body),
                    Frag::First(id) => (0x2000, id as u16, body),
                    Frag::Later(off, mf, id) => {
                        (off.clamp(1, 0x1fff) | if mf { 0x2000 } else { 0 }, id as u16, self.payload.clone())
                    }
                };
                let src = Ipv4Addr::from(self.src as u32);
                ipv4(src, vip, s.proto, id, frag, &self.options, &body)
            }
            IpAddr::V6(vip) => {
                let src = Ipv6Addr::from(self.src);
                match self.frag {
                    Frag::None => ipv6(src, vip, s.proto, None, &body),
                    Frag::First(id) => {
                        ipv6(src, vip, s.proto, Some(FragHdr { next: s.proto, off_flags: 1, id }), &body)
                    }
                    Frag::Later(off, mf, id) => {
                        let off_flags = off.clamp(1, 0x1fff) << 3 | u16::from(mf);
                        ipv6(src, vip, s.proto, Some(FragHdr { next: s.proto, off_flags, id }), &self.payload)
                    }
                    Frag::OtherExt(kind) => {
                        // An 8-byte extension header (next header, length 0, padding).
                        let mut ext = vec![s.proto, 0, 1, 4, 0, 0, 0, 0];
                        ext.extend_from_slice(&body);
                        ipv6(src, vip, kind, None, &ext)
                    }
                }
            }
        };
        apply(&mut f, &self.mutations);
        f
    }

    /// Undamaged, to the service's port, and carrying its ports: the program must forward it
    /// to one of the service's real servers (or drop it, for a service with none usable).
    fn pristine(&self) -> bool {
        self.mutations.is_empty() && self.other_port.is_none() && matches!(self.frag, Frag::None | Frag::First(_))
    }
}

fn to_vip() -> impl Strategy<Value = ToVip> {
    let frag = prop_oneof![
        4 => Just(Frag::None),
        1 => any::<u32>().prop_map(Frag::First),
        1 => (any::<u16>(), any::<bool>(), any::<u32>()).prop_map(|(o, mf, id)| Frag::Later(o, mf, id)),
        1 => prop_oneof![Just(0u8), Just(43u8), Just(60u8)].prop_map(Frag::OtherExt),
    ];
    (
        (0..SERVICES.len(), any::<u128>(), any::<u16>()),
        proptest::option::weighted(0.2, any::<u16>()),
        any::<u8>(),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(any::<u8>(), 0..=40)],
        frag,
        payload(),
        prop_oneof![1 => Just(Vec::new()), 1 => vec(mutation(), 1..4)],
    )
        .prop_map(|((svc, src, sport), other_port, flags, options, frag, payload, mutations)| ToVip {
            svc,
            src,
            sport,
            other_port,
            flags,
            options,
            frag,
            payload,
            mutations,
        })
}

#[test]
fn frames_to_a_vip_pass_drop_or_only_change_macs() {
    let Some(bed) = bed("frames_to_a_vip_pass_drop_or_only_change_macs") else { return };
    let bed = RefCell::new(bed);
    check(to_vip(), |case| {
        let f = case.frame();
        let (action, out) = bed.borrow_mut().run(&f);
        let shown = Frame(f.clone());
        match action {
            XDP_PASS => prop_assert!(out == f, "a passed frame was changed: in {:?}, out {:?}", shown, Frame(out)),
            XDP_DROP => {}
            XDP_TX => {
                prop_assert_eq!(out.len(), f.len(), "length changed for {:?}", shown);
                prop_assert!(out[12..] == f[12..], "more than the MACs changed: in {:?}, out {:?}", shown, Frame(out));
                prop_assert_eq!(&out[6..12], &DIRECTOR_MAC, "source MAC for {:?}", shown);
                let to: [u8; 6] = out[0..6].try_into().expect("6 bytes");
                prop_assert!(ALL_RS_MACS.contains(&to), "sent to {:02x?}, no real server: {:?}", to, shown);
            }
            other => prop_assert!(false, "action {} for {:?}", other, shown),
        }
        if case.pristine() {
            let svc = &SERVICES[case.svc];
            let macs = svc.macs();
            if macs.is_empty() {
                prop_assert_eq!(action, XDP_DROP, "a service with no usable real server: {:?}", shown);
            } else {
                prop_assert_eq!(action, XDP_TX, "a well-formed frame for a service: {:?}", shown);
                let to: [u8; 6] = out[0..6].try_into().expect("6 bytes");
                prop_assert!(macs.contains(&to), "sent to {:02x?}, not a real server of its service: {:?}", to, shown);
            }
        }
        Ok(())
    });
}

// ---- Property c: pinning ----------------------------------------------------------------

/// One packet of a flow: which flow, its TCP flags, its payload length.
type Send = (usize, u8, usize);

#[derive(Debug, Clone)]
struct Interleaving {
    /// (service, client address, client port) per flow.
    flows: Vec<(usize, u128, u16)>,
    sends: Vec<Send>,
}

fn interleaving() -> impl Strategy<Value = Interleaving> {
    let usable: Vec<usize> = (0..SERVICES.len()).filter(|&i| !SERVICES[i].macs().is_empty()).collect();
    (
        vec((proptest::sample::select(usable), any::<u128>(), any::<u16>()), 1..8),
        vec((any::<usize>(), any::<u8>(), 0..32usize), 1..48),
    )
        .prop_map(|(flows, sends)| {
            let n = flows.len();
            Interleaving { sends: sends.into_iter().map(|(i, fl, len)| (i % n, fl, len)).collect(), flows }
        })
}

fn flow_frame(svc: &Svc, src: u128, sport: u16, flags: u8, len: usize) -> Vec<u8> {
    let body = l4(svc.proto, sport, svc.port, flags, &vec![0x61; len]);
    match svc.vip {
        IpAddr::V4(vip) => ipv4(Ipv4Addr::from(src as u32), vip, svc.proto, 0, 0, &[], &body),
        IpAddr::V6(vip) => ipv6(Ipv6Addr::from(src), vip, svc.proto, None, &body),
    }
}

#[test]
fn a_flow_keeps_its_real_server_across_interleavings() {
    let Some(bed) = bed("a_flow_keeps_its_real_server_across_interleavings") else { return };
    let bed = RefCell::new(bed);
    check(interleaving(), |case| {
        let mut bed = bed.borrow_mut();
        let mut first: Vec<Option<[u8; 6]>> = vec![None; case.flows.len()];
        for &(i, flags, len) in &case.sends {
            let (svc_index, src, sport) = case.flows[i];
            let svc = &SERVICES[svc_index];
            let f = flow_frame(svc, src, sport, flags, len);
            let (action, out) = bed.run(&f);
            prop_assert_eq!(action, XDP_TX, "flow {} not forwarded: {:?}", i, Frame(f.clone()));
            let to: [u8; 6] = out[0..6].try_into().expect("6 bytes");
            prop_assert!(svc.macs().contains(&to), "flow {} to {:02x?}, not its service's: {:?}", i, to, Frame(f));
            match first[i] {
                None => first[i] = Some(to),
                Some(was) => {
                    prop_assert_eq!(was, to, "flow {} moved from {:02x?}: {:?}", i, was, Frame(f.clone()));
                }
            }
        }
        Ok(())
    });
}
