//! lvs-xdp's XDP program: LVS direct routing, IPv4 and IPv6.
//!
//! A frame for a virtual service (VIP:port:protocol) gets the chosen real server's MAC as its
//! Ethernet destination and the director's MAC as its source, and leaves through the same
//! interface (XDP_TX). Nothing else in the frame changes: the real server holds the VIP on a
//! loopback and answers the client directly. Every other frame is passed to the kernel
//! untouched.
//!
//! The path, cheapest first:
//! 1. Ethernet + IP header, then the VIP pre-filter (one bit, see `lvs_common::filter`):
//!    non-VIP traffic leaves here, after no lookup at all.
//! 2. The L4 ports, then the per-CPU flow cache and behind it the flow table
//!    (`lvs_common::flowtab`: one bucket, two at most): an established flow goes straight to
//!    its real server.
//! 3. Only a flow not found there looks up the service and picks a real server (see `pick`),
//!    while its buckets' lines are still on their way from memory; the scan of the buckets
//!    then says whether the pick is committed (a new flow) or dropped (a SYN retransmitted).
#![no_std]
#![no_main]
// The BPF target declares no atomics to core, so `AtomicU64::fetch_add` is unavailable; the
// intrinsic lowers to BPF's atomic add (built with nightly, as aya-build does).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    Global,
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lvs_common::{
    filter,
    flowtab::{self, Bucket, BucketV4, BucketV6, Room, SlotV4, SlotV6, Way},
    maps::{
        ConnCounts, DEFAULT_FLOWS, DEST_F_ACTIVE, Dest, DestStats, FLOW_CACHE_SLOTS, FLOW_STATE_UDP, Flow,
        FlowCacheEntry, FlowCacheEntryV6, FragKeyV4, FragKeyV6, GlobalStats, IPPROTO_FRAGMENT, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_CONN_DESTS, MAX_DESTS, MAX_FRAGS, MAX_PERSIST, MAX_SERVICES,
        NO_SLOT, Persist, PersistKeyV4, PersistKeyV6, RING_SLOTS, SVC_F_HASH_PORT, Service, ServiceKeyV4, ServiceKeyV6,
        ServiceStats, sched_kind,
    },
    sched,
    sched_ext::{self, ConnLoad, tcp_state, tcp_state::Timeouts},
};

/// The VIP pre-filter bitmap, as global data: the program reads it at a fixed address, with no
/// map lookup. The loader turns `.bss` into a one-element array map (`names::VIP_FILTER`),
/// which the agent writes whole, one changed bit per write.
#[unsafe(no_mangle)]
static mut VIP_FILTER: [u64; filter::FILTER_WORDS as usize] = [0; filter::FILTER_WORDS as usize];
#[map]
static SERVICES_V4: HashMap<ServiceKeyV4, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
#[map]
static SERVICES_V6: HashMap<ServiceKeyV6, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
#[map]
static DESTS: Array<Dest> = Array::with_max_entries(MAX_DESTS, 0);
#[map]
static RING: Array<u32> = Array::with_max_entries(RING_SLOTS, 0);
#[map]
static CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);
/// The flow tables (`lvs_common::flowtab`), shared by all CPUs. BPF_F_MMAPABLE: the data starts
/// on a page, so each bucket is whole cache lines, and the agent reads them through a mapping.
/// The loader sizes both from `--flows` and sets `FLOW_MASK` to match.
#[map]
static FLOWS_V4: Array<BucketV4> = Array::with_max_entries(flowtab::buckets_for(DEFAULT_FLOWS), BPF_F_MMAPABLE);
#[map]
static FLOWS_V6: Array<BucketV6> = Array::with_max_entries(flowtab::buckets_for(DEFAULT_FLOWS), BPF_F_MMAPABLE);
/// Buckets - 1 of the flow tables (a power of two less one), set by the loader in `.rodata`:
/// the program masks a flow's hash with it.
#[unsafe(no_mangle)]
static FLOW_MASK: Global<u32> = Global::new(flowtab::buckets_for(DEFAULT_FLOWS) - 1);
/// Exact-match caches in front of the flow tables, per CPU (see `FlowCacheEntry`): an
/// established flow's packets within one second are served from here.
#[map]
static FLOW_CACHE_V4: PerCpuArray<FlowCacheEntry> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);
#[map]
static FLOW_CACHE_V6: PerCpuArray<FlowCacheEntryV6> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);
/// Connections per destination slot, as ipvsadm's ActiveConn / InActConn: the program adds with
/// atomic adds as flows open, change state and end; flows the agent's sweep expires are
/// counted in `DEST_EXPIRED`, which only the agent writes (no lost update between the two).
#[map]
static DEST_CONNS: Array<ConnCounts> = Array::with_max_entries(MAX_DESTS, 0);
#[map]
static DEST_EXPIRED: Array<ConnCounts> = Array::with_max_entries(MAX_DESTS, 0);
/// The time in seconds (CLOCK_MONOTONIC_COARSE), published by the agent once a second. A map
/// read costs far less than a clock helper call on every packet; if the agent stalls, time
/// stands still, which can only delay expiry, never expire a live flow.
#[map]
static CLOCK: Array<u64> = Array::with_max_entries(1, 0);
/// Idle timeouts (`ipvsadm --set tcp tcpfin udp`), written by the agent.
#[map]
static TIMEOUTS: Array<Timeouts> = Array::with_max_entries(1, 0);
/// Persistence templates (`persistence_timeout`): LRU, so a full table forgets the oldest.
#[map]
static PERSIST_V4: LruHashMap<PersistKeyV4, Persist> = LruHashMap::with_max_entries(MAX_PERSIST, BPF_F_NO_COMMON_LRU);
#[map]
static PERSIST_V6: LruHashMap<PersistKeyV6, Persist> = LruHashMap::with_max_entries(MAX_PERSIST, BPF_F_NO_COMMON_LRU);
/// Fragmented datagrams: the real server their first fragment went to (see `v4`, `v6`).
#[map]
static FRAGS_V4: LruHashMap<FragKeyV4, Flow> = LruHashMap::with_max_entries(MAX_FRAGS, 0);
#[map]
static FRAGS_V6: LruHashMap<FragKeyV6, Flow> = LruHashMap::with_max_entries(MAX_FRAGS, 0);
#[map]
static GLOBAL_STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);
#[map]
static DEST_STATS: PerCpuArray<DestStats> = PerCpuArray::with_max_entries(MAX_DESTS, 0);
#[map]
static SERVICE_STATS: PerCpuArray<ServiceStats> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

// Ports and addresses are read as native words of wire-order bytes and split by shifts.
#[cfg(target_endian = "big")]
compile_error!("lvs-ebpf assumes a little-endian BPF target (bpfel)");

const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;
/// EtherTypes as they read from the frame into a native (little-endian) u16.
const ETH_P_IP_RAW: u16 = 0x0800u16.to_be();
const ETH_P_IPV6_RAW: u16 = 0x86ddu16.to_be();
/// IPv4 flags/fragment-offset word, in wire order: More Fragments, and the 13-bit offset.
const IP_MF_RAW: u16 = 0x2000u16.to_be();
const IP_OFFSET_RAW: u16 = 0x1fffu16.to_be();
/// IPv6 Fragment header offset field (13 bits above 3 flag bits), in wire order.
const IP6_OFFSET_RAW: u16 = 0xfff8u16.to_be();
const FRAG_HLEN: usize = 8;
/// ICMP error types that quote the offending packet (IPVS ip_vs_in_icmp handles these):
/// destination unreachable (incl. fragmentation needed), source quench, time exceeded.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv6: destination unreachable, packet too big, time exceeded.
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

// Inlined into the entry point the macro wraps it in: as a called function LLVM may pass the
// context's data pointers as narrowed scalars, which the verifier rejects.
#[xdp]
#[inline(always)]
pub fn lvs(ctx: XdpContext) -> u32 {
    match try_lvs(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// A pointer to a `T` at `offset`, if the frame holds all of it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, u32> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return Err(XDP_PASS);
    }
    Ok((start + offset) as *mut T)
}

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    proto: u16,
}

#[repr(C)]
struct Ipv4Hdr {
    vihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

#[repr(C)]
struct Ipv6Hdr {
    vtc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: [u32; 4],
    daddr: [u32; 4],
}

#[repr(C)]
struct Ipv6FragHdr {
    nexthdr: u8,
    reserved: u8,
    frag_off: u16,
    id: u32,
}

/// Is the filter bit for this address set? (Fixed-address read, see `VIP_FILTER`.)
#[inline(always)]
fn maybe_vip(bit: u32) -> bool {
    let (word, mask) = filter::word_and_mask(bit);
    // The mask is a no-op (word < FILTER_WORDS) that spares a bounds check. Volatile: the
    // agent writes the bitmap, the compiler must not assume it keeps its initial zeros.
    // SAFETY: in-bounds read of global data.
    let bits = unsafe {
        core::ptr::read_volatile(core::ptr::addr_of!(VIP_FILTER[word as usize & (filter::FILTER_WORDS as usize - 1)]))
    };
    bits & mask != 0
}

#[inline(always)]
fn try_lvs(ctx: &XdpContext) -> Result<u32, u32> {
    // One bounds check covers Ethernet and IPv4: a frame too short for them is not for a VIP.
    let eth: *mut EthHdr = ptr_at::<[u8; ETH_HLEN + 20]>(ctx, 0)?.cast();
    // SAFETY: ptr_at checked that the headers lie inside the frame.
    let proto = unsafe { (*eth).proto };
    if proto == ETH_P_IP_RAW {
        return v4(ctx, eth);
    }
    // Keeps the IPv4 path (and its non-VIP exit, the most common packet) free of this test.
    core::hint::cold_path();
    if proto == ETH_P_IPV6_RAW { v6(ctx, eth) } else { Ok(XDP_PASS) }
}

/// Length of the L4 header we rely on, or None for a protocol we do not balance.
#[inline(always)]
fn l4_len(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(TCP_HLEN),
        IPPROTO_UDP => Some(UDP_HLEN),
        _ => None,
    }
}

#[inline(always)]
fn v4(ctx: &XdpContext, eth: *mut EthHdr) -> Result<u32, u32> {
    // SAFETY: try_lvs checked that Ethernet + 20 bytes of IPv4 header lie inside the frame.
    let ip = unsafe { &*eth.cast::<u8>().add(ETH_HLEN).cast::<Ipv4Hdr>() };
    let daddr = ip.daddr;
    if !maybe_vip(filter::bit_v4(daddr)) {
        return Ok(XDP_PASS);
    }

    // Maybe a VIP: validate what we rely on. A frame we cannot fully vouch for goes to the
    // kernel untouched, which drops what is malformed and answers what is merely unusual.
    if ip.vihl >> 4 != 4 {
        return Ok(XDP_PASS);
    }
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let proto = ip.proto;
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    // A truncated frame (tot_len beyond the data) or a header that overlaps itself is not ours
    // to forward: the real server would drop it anyway, and rewriting it hides the damage.
    if ihl < 20 || tot_len < ihl || ETH_HLEN + tot_len > ctx.data_end() - ctx.data() {
        return Ok(XDP_PASS);
    }
    if proto == IPPROTO_ICMP {
        return icmp_v4(ctx, eth, ip, ihl);
    }
    let Some(l4) = l4_len(proto) else { return Ok(XDP_PASS) };
    let ip_bytes = tot_len as u64;
    // Fragments: the first carries the ports and is scheduled like any packet, and its real
    // server is recorded under the datagram's (source, destination, protocol, identification);
    // later ones carry no ports and follow that record.
    if ip.frag & IP_OFFSET_RAW != 0 {
        let key = FragKeyV4 { saddr: ip.saddr, daddr, id: ip.id, proto, _pad: 0 };
        return Ok(later_fragment(&FRAGS_V4, &key, eth, ip_bytes));
    }
    if tot_len < ihl + l4 {
        return Ok(XDP_PASS);
    }
    // The bound on `ihl` (<= 60) is what lets the verifier accept this variable offset.
    let l4_off = ETH_HLEN + ihl;
    let ports: *const u32 = ptr_at(ctx, l4_off)?;
    // SAFETY: checked by ptr_at; the whole L4 header is within tot_len, checked above.
    let ports = unsafe { *ports };
    let flags = if proto == IPPROTO_TCP { tcp_flags(ctx, l4_off)? } else { 0 };
    let first_fragment = ip.frag & IP_MF_RAW != 0;
    let saddr = ip.saddr;
    // The 5-tuple as two words (as `flowtab::hash_v4` takes it).
    let kw = [u64::from(saddr) | u64::from(daddr) << 32, u64::from(ports) | u64::from(proto) << 32];
    let secs = now_secs();
    let cache_slot = filter::flow_slot_v4(saddr, daddr, ports, proto, FLOW_CACHE_SLOTS);
    let cached = FLOW_CACHE_V4.get_ptr_mut(cache_slot).ok_or(XDP_PASS)?;
    // The entry as four words: key, key, flow (dest | generation << 32), refreshed | state << 32.
    // SAFETY: this CPU's own slot (XDP runs to completion on its CPU); FlowCacheEntry is 32
    // bytes of plain data laid out as these words (asserted in lvs-common).
    let cached = unsafe { &mut *cached.cast::<[u64; 4]>() };
    let frag = FragKeyV4 { saddr, daddr, id: ip.id, proto, _pad: 0 };
    let opening = opens(proto, flags);
    if !opening
        && cached[0] == kw[0]
        && cached[1] == kw[1]
        && let Some((flow, dest)) = cache_hit(cached[2], cached[3], proto, flags, secs)
    {
        if first_fragment {
            record_fragment(&FRAGS_V4, &frag, flow);
        }
        return Ok(forward(eth, dest, flow.dest, ip_bytes, 0));
    }
    // The slots' clock: seconds modulo 2^16 (see flowtab).
    let now = secs as u16;
    let sport = ports as u16;
    let tag = flowtab::tag_v4(daddr, ports, proto);
    let (i1, i2) = flowtab::buckets(flowtab::hash_v4(kw), flow_mask());
    let b1 = FLOWS_V4.get_ptr_mut(i1).ok_or(XDP_PASS)?;
    let b2 = FLOWS_V4.get_ptr_mut(i2).ok_or(XDP_PASS)?;
    let hit = probe(b1, b2, opening, proto, saddr, sport, tag);
    let mut resume = Resume {
        cached,
        kw: &kw,
        secs,
        now,
        proto,
        flags,
        frags: &FRAGS_V4,
        frag: &frag,
        first_fragment,
        eth,
        ip_bytes,
    };
    if let Some(action) = hit.and_then(|slot| resume.known(slot)) {
        return Ok(action);
    }
    // The service, and a real server for a new flow: looked up and picked while the buckets'
    // lines are on their way (none of it needs them); committed only once the scan says the
    // flow is new (see `place`).
    let skey = ServiceKeyV4 { addr: daddr, port: (ports >> 16) as u16, proto, _pad: 0 };
    // SAFETY: read-only use of the value; a concurrent update replaces it (RCU).
    let Some(svc) = (unsafe { SERVICES_V4.get(skey) }) else {
        return Ok(XDP_PASS);
    };
    let client = ClientV4 { saddr, daddr, sport };
    let template = || {
        let key = PersistKeyV4 { client: saddr & svc.persist_mask[0], vip: daddr, vport: skey.port, proto, _pad: 0 };
        persistent(&PERSIST_V4, &key, svc, &client)
    };
    place(|| Scan::new(b1, b2, saddr, tag, sport, now), (i1, i2), svc, &client, template, opening, resume)
}

#[inline(always)]
fn v6(ctx: &XdpContext, eth: *mut EthHdr) -> Result<u32, u32> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN)?;
    // SAFETY: checked by ptr_at.
    let ip = unsafe { &*ip };
    let daddr = ip.daddr;
    if !maybe_vip(filter::bit_v6(daddr[3])) {
        return Ok(XDP_PASS);
    }
    if ip.vtc_flow as u8 >> 4 != 6 {
        return Ok(XDP_PASS);
    }
    let payload = usize::from(u16::from_be(ip.payload_len));
    if ETH_HLEN + IPV6_HLEN + payload > ctx.data_end() - ctx.data() {
        return Ok(XDP_PASS);
    }
    let ip_bytes = (IPV6_HLEN + payload) as u64;
    let saddr = ip.saddr;
    if ip.nexthdr == IPPROTO_ICMPV6 {
        return icmp_v6(ctx, eth, ip);
    }
    // TCP or UDP right after the fixed header, or after a Fragment header (RFC 8200 4.5:
    // fragments as for IPv4, keyed by source, destination and identification). Other
    // extension headers go to the kernel.
    let (proto, l4_off, first_fragment, frag_id) = if ip.nexthdr == IPPROTO_FRAGMENT {
        let fh: *const Ipv6FragHdr = ptr_at(ctx, ETH_HLEN + IPV6_HLEN)?;
        // SAFETY: checked by ptr_at.
        let fh = unsafe { &*fh };
        if l4_len(fh.nexthdr).is_none() {
            return Ok(XDP_PASS);
        }
        if fh.frag_off & IP6_OFFSET_RAW != 0 {
            let key = FragKeyV6 { saddr, daddr, id: fh.id };
            return Ok(later_fragment(&FRAGS_V6, &key, eth, ip_bytes));
        }
        (fh.nexthdr, IPV6_HLEN + FRAG_HLEN, true, fh.id)
    } else {
        (ip.nexthdr, IPV6_HLEN, false, 0)
    };
    let Some(l4) = l4_len(proto) else { return Ok(XDP_PASS) };
    if IPV6_HLEN + payload < l4_off + l4 {
        return Ok(XDP_PASS);
    }
    let ports: *const u32 = ptr_at(ctx, ETH_HLEN + l4_off)?;
    // SAFETY: checked by ptr_at; the L4 header is within the payload, checked above.
    let ports = unsafe { *ports };
    let flags = if proto == IPPROTO_TCP { tcp_flags(ctx, ETH_HLEN + l4_off)? } else { 0 };
    let w = |a: [u32; 4], i: usize| u64::from(a[i]) | u64::from(a[i + 1]) << 32;
    let kw = [w(saddr, 0), w(saddr, 2), w(daddr, 0), w(daddr, 2), u64::from(ports) | u64::from(proto) << 32];
    let secs = now_secs();
    let cache_slot = filter::flow_slot_v6(saddr, daddr, ports, proto, FLOW_CACHE_SLOTS);
    let cached = FLOW_CACHE_V6.get_ptr_mut(cache_slot).ok_or(XDP_PASS)?;
    // The entry as seven words: five of key, flow, refreshed | state << 32 (FlowCacheEntryV6).
    // SAFETY: as for IPv4.
    let cached = unsafe { &mut *cached.cast::<[u64; 7]>() };
    let frag = FragKeyV6 { saddr, daddr, id: frag_id };
    let opening = opens(proto, flags);
    if !opening
        && cached[0] == kw[0]
        && cached[1] == kw[1]
        && cached[2] == kw[2]
        && cached[3] == kw[3]
        && cached[4] == kw[4]
        && let Some((flow, dest)) = cache_hit(cached[5], cached[6], proto, flags, secs)
    {
        if first_fragment {
            record_fragment(&FRAGS_V6, &frag, flow);
        }
        return Ok(forward(eth, dest, flow.dest, ip_bytes, 0));
    }
    let now = secs as u16;
    let sport = ports as u16;
    let tag = flowtab::tag_v6(kw[2], kw[3], kw[4]);
    let (i1, i2) = flowtab::buckets(flowtab::hash_v6(kw), flow_mask());
    let b1 = FLOWS_V6.get_ptr_mut(i1).ok_or(XDP_PASS)?;
    let b2 = FLOWS_V6.get_ptr_mut(i2).ok_or(XDP_PASS)?;
    let hit = probe(b1, b2, opening, proto, saddr, sport, tag);
    let mut resume = Resume {
        cached,
        kw: &kw,
        secs,
        now,
        proto,
        flags,
        frags: &FRAGS_V6,
        frag: &frag,
        first_fragment,
        eth,
        ip_bytes,
    };
    if let Some(action) = hit.and_then(|slot| resume.known(slot)) {
        return Ok(action);
    }
    // As for IPv4: the service, then `place`.
    let skey = ServiceKeyV6 { addr: daddr, port: (ports >> 16) as u16, proto, _pad: 0 };
    // SAFETY: as for IPv4.
    let Some(svc) = (unsafe { SERVICES_V6.get(skey) }) else {
        return Ok(XDP_PASS);
    };
    let client = ClientV6 { saddr, daddr, sport };
    let template = || {
        let m = svc.persist_mask;
        let masked = [saddr[0] & m[0], saddr[1] & m[1], saddr[2] & m[2], saddr[3] & m[3]];
        let key = PersistKeyV6 { client: masked, vip: daddr, vport: skey.port, proto, _pad: 0 };
        persistent(&PERSIST_V6, &key, svc, &client)
    };
    place(|| Scan::new(b1, b2, saddr, tag, sport, now), (i1, i2), svc, &client, template, opening, resume)
}

/// A flow table of one address family, as `place` uses it.
trait Table: Bucket + Sized + 'static {
    fn flows() -> &'static Array<Self>;
    /// Writes a newly scheduled flow into `slot` (see `flowtab::store`).
    fn write(slot: &mut Self::Slot, saddr: Self::Addr, tag: u32, sport: u16, now: u16, flow: u32);
}

impl Table for BucketV4 {
    #[inline(always)]
    fn flows() -> &'static Array<Self> {
        &FLOWS_V4
    }
    #[inline(always)]
    fn write(slot: &mut SlotV4, saddr: u32, tag: u32, sport: u16, now: u16, flow: u32) {
        let written = SlotV4 { tag, sport, last: now, saddr, flow };
        // SAFETY: the slot is 16 bytes of plain data, 8-aligned in the array.
        unsafe { flowtab::store(core::ptr::from_mut(slot).cast(), written.words(), SlotV4::KEY_WORD) };
    }
}

impl Table for BucketV6 {
    #[inline(always)]
    fn flows() -> &'static Array<Self> {
        &FLOWS_V6
    }
    #[inline(always)]
    fn write(slot: &mut SlotV6, saddr: [u32; 4], tag: u32, sport: u16, now: u16, flow: u32) {
        let written = SlotV6 { saddr, tag, sport, last: now, flow, _pad: 0 };
        // SAFETY: the slot is 32 bytes of plain data, 8-aligned in the array.
        unsafe { flowtab::store(core::ptr::from_mut(slot).cast(), written.words(), SlotV6::KEY_WORD) };
    }
}

/// A packet whose flow the probe did not settle (a SYN, a flow in neither bucket, or one idle
/// past its timeout or whose real server left), for either family: a real server picked (not
/// yet committed) while the buckets' lines are on their way, then one scan of both buckets
/// says where the flow is, or where it goes. `template`: the persistence template's pick,
/// for a service with `persistence_timeout` (it writes the template, so it runs only once
/// the flow is known to be new). `scan` builds the scan's state: built after the pick, not
/// before, the verifier has 36% fewer instructions to walk (513K against 800K, measured).
#[inline(always)]
fn place<T: Table, C: FlowHashes, const N: usize, const K: usize, F>(
    scan: impl FnOnce() -> Scan<T>,
    (i1, i2): (u32, u32),
    svc: &Service,
    client: &C,
    template: impl FnOnce() -> Option<(u32, &'static Dest)>,
    opening: bool,
    mut resume: Resume<'_, N, K, F>,
) -> Result<u32, u32> {
    let early = if svc.persist_timeout == 0 { pick(svc, client) } else { None };
    let mut scan = scan();
    let way = scan.run();
    let b = T::flows().get_ptr_mut(if way < WAYS32 { i1 } else { i2 }).ok_or(XDP_PASS)?;
    // SAFETY: an array value; the way index is masked to the bucket.
    let slot = unsafe { &mut (*b).ways_mut()[(way & (WAYS32 - 1)) as usize] };
    // A SYN of a flow the table holds (a retransmission, or a client port reused while the
    // entry lives): as any packet of a known flow, it keeps its real server.
    if opening
        && scan.found < SCAN_WAYS
        && let Some(action) = resume.known(slot)
    {
        return Ok(action);
    }

    // New, idle past its timeout, or its real server left: schedule it.
    let chosen = if svc.persist_timeout == 0 { early.map(Pick::commit) } else { template() };
    let Some((at, dest)) = chosen.or_else(|| sorry(svc)) else {
        return Ok(drop_for(svc.index, resume.ip_bytes));
    };
    let flow = open(slot.tag(), slot.flow(), at, dest, resume.proto, resume.flags);
    T::write(slot, scan.saddr, scan.tag, scan.sport, scan.now, flow);
    // Not into the cache for a SYN: the cache serves only packets that leave a flow's state
    // as it is, and the client's next packet, its ACK, moves the flow on to ESTABLISHED; the
    // store would be a miss (a random line of this CPU's cache) for nothing. An older entry of
    // this 5-tuple left in place serves only within the second it was written, so only a flow
    // the table evicted while active that second, whose port the client reuses in that same
    // second, could be sent by it to its old real server.
    let settled = Flow { dest: at, generation: dest.generation };
    Ok(resume.finish(settled, dest, flowtab::state_of(flow), !opening, 1))
}

const WAYS32: u32 = flowtab::WAYS as u32;
/// Ways of a flow's two buckets, in scan order (first bucket first).
const SCAN_WAYS: u32 = 2 * WAYS32;
const NOT_FOUND: u32 = SCAN_WAYS;

/// The state of a scan of a flow's two buckets (`scan_bucket`): the way holding the
/// flow (`found`), else each bucket's room, from which `flowtab::free_way` picks as
/// `flowtab::place` does; when both are full, a second pass (`evict_bucket`) ranks
/// their flows by `flowtab::evict_cost`. Loop callbacks, one call per bucket, each verified
/// once per bucket type: inline, the eight ways' branches multiplied through the scheduling
/// that follows exceed the verifier's budget.
#[repr(C)]
struct Scan<B: Bucket> {
    b1: *mut B,
    b2: *mut B,
    saddr: B::Addr,
    tag: u32,
    sport: u16,
    now: u16,
    found: u32,
    first: Room,
    second: Room,
    best: u32,
    best_cost: u32,
}

impl<B: Bucket> Scan<B> {
    #[inline(always)]
    fn new(b1: *mut B, b2: *mut B, saddr: B::Addr, tag: u32, sport: u16, now: u16) -> Self {
        Self {
            b1,
            b2,
            saddr,
            tag,
            sport,
            now,
            found: NOT_FOUND,
            first: Room::FULL,
            second: Room::FULL,
            best: 0,
            best_cost: u32::MAX,
        }
    }

    /// The way (numbered over both buckets) holding the flow, else the way a new flow takes.
    #[inline(always)]
    fn run(&mut self) -> u32 {
        let ctx = core::ptr::from_mut(self).cast();
        // SAFETY: the callbacks take a `Scan` of this bucket type, which `ctx` is.
        unsafe { aya_ebpf::helpers::bpf_loop(2, scan_bucket::<B> as *mut _, ctx, 0) };
        if self.found < SCAN_WAYS {
            return self.found;
        }
        if let Some(w) = flowtab::free_way(self.first, self.second) {
            return w;
        }
        // SAFETY: as above.
        unsafe { aya_ebpf::helpers::bpf_loop(2, evict_bucket::<B> as *mut _, ctx, 0) };
        self.best
    }
}

/// One bucket of a `Scan` (0: the first), a loop callback: 1 stops the loop (found, or done).
extern "C" fn scan_bucket<B: Bucket>(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the context `Scan::run` gave it, of this bucket type.
    let s = unsafe { &mut *ctx.cast::<Scan<B>>() };
    if i > 1 {
        return 1;
    }
    // SAFETY: both are array values of the family's flow table.
    let b = unsafe { &*(if i == 0 { s.b1 } else { s.b2 }) };
    match b.look(s.saddr, s.sport, s.tag) {
        Ok(w) => {
            s.found = i as u32 * WAYS32 + w as u32;
            1
        }
        Err(room) if i == 0 => {
            s.first = room;
            0
        }
        Err(room) => {
            s.second = room;
            0
        }
    }
}

/// One bucket of a `Scan` whose two buckets are full, a loop callback: its cheapest way to
/// evict so far.
extern "C" fn evict_bucket<B: Bucket>(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: as for scan_bucket.
    let s = unsafe { &mut *ctx.cast::<Scan<B>>() };
    if i > 1 {
        return 1;
    }
    // SAFETY: as for scan_bucket.
    let b = unsafe { &*(if i == 0 { s.b1 } else { s.b2 }) };
    // By reference: a copy would take stack this callback, called from the program's deepest
    // frame, does not have.
    let t = TIMEOUTS.get(0).unwrap_or(&Timeouts::DEFAULT);
    for (w, slot) in b.ways().iter().enumerate() {
        let c = flowtab::evict_cost(slot, s.now, t);
        if c < s.best_cost {
            s.best_cost = c;
            s.best = i as u32 * WAYS32 + w as u32;
        }
    }
    0
}

/// The way of `b1` or `b2` (a flow's buckets) holding the flow, probed inline; None for a
/// SYN, which goes straight to the scan (it finds a known flow as well).
#[inline(always)]
fn probe<B: Bucket + 'static>(
    b1: *mut B,
    b2: *mut B,
    opening: bool,
    proto: u8,
    saddr: B::Addr,
    sport: u16,
    tag: u32,
) -> Option<&'static mut B::Slot> {
    // A packet that may open a flow (a SYN, any UDP datagram) will likely need the second
    // bucket too: touching it now overlaps its cache miss with the first's. A later TCP
    // packet is almost always found in the first bucket it reads.
    if proto == IPPROTO_UDP || opening {
        // SAFETY: an array value; the read (of its first word) only warms the line.
        let _ = unsafe { core::ptr::read_volatile(b2.cast::<u32>()) };
    }
    if opening {
        // The scan reads the first bucket only after the service lookup: start its miss now.
        // SAFETY: as above.
        let _ = unsafe { core::ptr::read_volatile(b1.cast::<u32>()) };
        return None;
    }
    find_flow(b1, b2, saddr, sport, tag)
}

/// The slot of `b1` or `b2` (a flow's buckets, the first read first) holding the flow.
#[inline(always)]
fn find_flow<B: Bucket + 'static>(
    b1: *mut B,
    b2: *mut B,
    saddr: B::Addr,
    sport: u16,
    tag: u32,
) -> Option<&'static mut B::Slot> {
    // SAFETY: array values, read and updated in place (see flowtab on concurrent writers).
    match unsafe { (*b1).find(saddr, sport, tag) } {
        Some(w) => Some(unsafe { &mut (*b1).ways_mut()[w] }),
        None => unsafe { (*b2).find(saddr, sport, tag) }.map(|w| unsafe { &mut (*b2).ways_mut()[w] }),
    }
}

/// The flow tables' bucket mask (see `FLOW_MASK`).
#[inline(always)]
fn flow_mask() -> u32 {
    FLOW_MASK.load()
}

/// The flow's real server, if the slot still holds the real server the flow was scheduled to.
#[inline(always)]
fn usable(flow: Flow) -> Option<&'static Dest> {
    let dest = DESTS.get(flow.dest)?;
    (flowtab::same_generation(dest.generation, flow.generation) && dest.flags & DEST_F_ACTIVE != 0).then_some(dest)
}

/// Whether a packet opens a TCP connection (SYN without ACK): almost always a new flow, so it
/// skips the per-CPU cache's compare (a miss whose line is cold) and the inline lookup, and
/// goes straight to the scan of its two buckets, which finds a known flow as well.
#[inline(always)]
fn opens(proto: u8, flags: u8) -> bool {
    proto == IPPROTO_TCP && flags & (tcp_state::TCP_SYN | tcp_state::TCP_ACK) == tcp_state::TCP_SYN
}

/// TCP flags (byte 13 of the TCP header at `l4_off`).
#[inline(always)]
fn tcp_flags(ctx: &XdpContext, l4_off: usize) -> Result<u8, u32> {
    let flags: *const u8 = ptr_at(ctx, l4_off + 13)?;
    // SAFETY: checked by ptr_at.
    Ok(unsafe { *flags })
}

/// The state after a client-to-server packet: TCP follows IPVS's input-only table (DR sees no
/// server-to-client packet, so a connection is ESTABLISHED on the client's first ACK and
/// ends on its FIN or RST, and nothing is known of the server's side); UDP has one state.
#[inline(always)]
fn next_state(state: u8, proto: u8, flags: u8) -> u8 {
    if proto == IPPROTO_TCP { tcp_state::next(state, flags) } else { state }
}

/// A cache hit that needs nothing else: written this second, and a state the packet leaves
/// unchanged (so the flow table sees each flow's activity and state changes).
#[inline(always)]
fn cache_hit(flow: u64, meta: u64, proto: u8, flags: u8, now: u32) -> Option<(Flow, &'static Dest)> {
    let (refreshed, state) = (meta as u32, (meta >> 32) as u8);
    if refreshed != now || next_state(state, proto, flags) != state {
        return None;
    }
    let flow = Flow { dest: flow as u32, generation: (flow >> 32) as u32 };
    usable(flow).map(|d| (flow, d))
}

/// Writes a cache entry: its key words, then flow and meta. Only once the flow is settled, so
/// an entry never pairs a key with another flow's words.
#[inline(always)]
fn fill<const N: usize, const K: usize>(cached: &mut [u64; N], key: &[u64; K], flow: Flow, state: u8, now: u32) {
    const { assert!(K + 2 == N) };
    cached[..K].copy_from_slice(key);
    cached[K] = u64::from(flow.dest) | u64::from(flow.generation) << 32;
    cached[K + 1] = u64::from(now) | u64::from(state) << 32;
}

/// The idle timeouts in force (`ipvsadm --set`).
#[inline(always)]
fn timeouts() -> Timeouts {
    TIMEOUTS.get(0).copied().unwrap_or(Timeouts::DEFAULT)
}

/// What forwarding a packet of a flow the table holds needs besides its slot: this CPU's
/// cache entry to refresh, and the record to write if the packet is a first fragment.
struct Resume<'a, const N: usize, const K: usize, F: 'static> {
    cached: &'a mut [u64; N],
    kw: &'a [u64; K],
    secs: u32,
    now: u16,
    proto: u8,
    flags: u8,
    frags: &'static LruHashMap<F, Flow>,
    /// The datagram's fragment key, recorded when the packet is a first fragment. A flag and a
    /// key, not an `Option`: LLVM keeps an `Option<&F>` as a tag and a pointer in two stack
    /// slots, whose link older verifiers (Linux 6.1) lose, rejecting the record's key as a
    /// possibly null pointer.
    frag: &'a F,
    first_fragment: bool,
    eth: *mut EthHdr,
    ip_bytes: u64,
}

impl<const N: usize, const K: usize, F> Resume<'_, N, K, F> {
    /// The packet forwarded to the real server of the flow in `slot` (see `known`); None when
    /// the flow must be scheduled anew.
    #[inline(always)]
    fn known<W: Way>(&mut self, slot: &mut W) -> Option<u32> {
        let (flow, last) = slot.activity_mut();
        let (at, dest, state) = known(flow, last, self.proto, self.flags, self.now)?;
        Some(self.finish(Flow { dest: at, generation: dest.generation }, dest, state, true, 0))
    }

    /// The packet of a settled flow forwarded: this CPU's cache entry written (when `cache`),
    /// the fragment record if it is a first fragment, the frame to the real server.
    #[inline(always)]
    fn finish(&mut self, flow: Flow, dest: &Dest, state: u8, cache: bool, new_flow: u64) -> u32 {
        if cache {
            fill(self.cached, self.kw, flow, state, self.secs);
        }
        if self.first_fragment {
            record_fragment(self.frags, self.frag, flow);
        }
        forward(self.eth, dest, flow.dest, self.ip_bytes, new_flow)
    }
}

/// A packet of a flow the table holds (its slot's flow word and last activity): the state
/// transition, with the connection counts, and the activity time, each written only when it
/// changes (a slot's line is not dirtied by every packet). None: the flow is idle past its
/// timeout or its real server left, and is scheduled anew in the same slot.
#[inline(always)]
fn known(flow: &mut u32, last: &mut u16, proto: u8, flags: u8, now: u16) -> Option<(u32, &'static Dest, u8)> {
    let f = *flow;
    let at = flowtab::dest_of(f);
    let dest = usable(Flow { dest: at, generation: flowtab::generation_of(f) })?;
    // Active this second: not expired, and the timeouts need not be read.
    if *last != now && flowtab::expired(*last, f, now, &timeouts()) {
        return None;
    }
    let state = flowtab::state_of(f);
    let next = next_state(state, proto, flags);
    if next != state {
        conn_move(at, dest.generation, state, next);
        *flow = flowtab::pack(at, dest.generation, next);
    }
    if *last != now {
        *last = now;
    }
    Some((at, dest, next))
}

/// Counts a newly scheduled flow, and takes back the flow whose slot it takes (`old_tag` not 0:
/// an evicted, expired or stale flow); returns the new flow word.
#[inline(always)]
fn open(old_tag: u32, old_flow: u32, at: u32, dest: &Dest, proto: u8, flags: u8) -> u32 {
    if old_tag != 0 {
        conn_add(flowtab::dest_of(old_flow), flowtab::generation_of(old_flow), flowtab::state_of(old_flow), -1);
    }
    let state = if proto == IPPROTO_TCP { tcp_state::next(tcp_state::NONE, flags) } else { FLOW_STATE_UDP };
    conn_add(at, dest.generation, state, 1);
    flowtab::pack(at, dest.generation, state)
}

/// Adds `n` to destination `at`'s active or inactive count (one 64-bit atomic add on the two
/// packed 32-bit counts; BPF has 64-bit atomic add on every target version). Skipped when the
/// slot has since been given to another real server: its counts are the new one's.
#[inline(always)]
fn conn_add(at: u32, generation: u32, state: u8, n: i64) {
    let Some(dest) = DESTS.get(at) else { return };
    if !flowtab::same_generation(dest.generation, generation) {
        return;
    }
    let Some(c) = DEST_CONNS.get_ptr_mut(at) else { return };
    let delta = if tcp_state::is_active(state) { n } else { n << 32 };
    // SAFETY: ConnCounts is 8 bytes, 8-aligned in the array's value area.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(c.cast::<u64>(), delta as u64) };
}

#[inline(always)]
fn conn_move(at: u32, generation: u32, from: u8, to: u8) {
    if tcp_state::is_active(from) != tcp_state::is_active(to) {
        conn_add(at, generation, from, -1);
        conn_add(at, generation, to, 1);
    }
}

/// The hashes of a new flow the hashing schedulers index their tables with, per family; only
/// the one the service's scheduler uses is computed. Addresses and ports as on the wire.
trait FlowHashes {
    /// sh: the client's address (and port).
    fn sh(&self, with_port: bool) -> u32;
    /// dh: the packet's destination address.
    fn dh(&self) -> u32;
    /// mh: the client's address (and port) into a table of `m` entries.
    fn mh(&self, with_port: bool, m: u32) -> u32;
}

struct ClientV4 {
    saddr: u32,
    daddr: u32,
    sport: u16,
}

impl FlowHashes for ClientV4 {
    #[inline(always)]
    fn sh(&self, with_port: bool) -> u32 {
        if with_port {
            sched_ext::sh_bucket_v4_port(self.saddr, self.sport)
        } else {
            sched_ext::sh_bucket_v4(self.saddr)
        }
    }
    #[inline(always)]
    fn dh(&self) -> u32 {
        sched_ext::dh_bucket_v4(self.daddr)
    }
    #[inline(always)]
    fn mh(&self, with_port: bool, m: u32) -> u32 {
        sched_ext::mh_bucket_v4(self.saddr, self.sport, with_port, m)
    }
}

struct ClientV6 {
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
}

impl FlowHashes for ClientV6 {
    #[inline(always)]
    fn sh(&self, with_port: bool) -> u32 {
        // IPVS folds the IPv6 address to one (host-order) word, then hashes as for IPv4.
        if with_port {
            sched_ext::sh_hash(sched_ext::fold_v6(self.saddr).wrapping_add(u32::from(u16::from_be(self.sport))))
        } else {
            sched_ext::sh_bucket_v6(self.saddr)
        }
    }
    #[inline(always)]
    fn dh(&self) -> u32 {
        sched_ext::dh_bucket_v6(self.daddr)
    }
    #[inline(always)]
    fn mh(&self, with_port: bool, m: u32) -> u32 {
        sched_ext::mh_bucket_v6(self.saddr, self.sport, with_port, m)
    }
}

/// A real server picked for a new flow, with the one thing picking changes (an rr/wrr
/// cursor's step) not yet done: a SYN picks before it knows whether the table holds its flow
/// (see `v4`), and one that turns out known (a retransmission) must leave the cursor as IPVS
/// would, unmoved.
struct Pick {
    at: u32,
    dest: &'static Dest,
    cursor: Option<(*mut u32, u32)>,
}

impl Pick {
    /// The pick made final: the cursor steps on.
    #[inline(always)]
    fn commit(self) -> (u32, &'static Dest) {
        if let Some((cursor, next)) = self.cursor {
            // SAFETY: this CPU's slot of CURSORS (XDP programs are not preempted on their CPU).
            unsafe { *cursor = next };
        }
        (self.at, self.dest)
    }
}

/// Schedules a new flow: `pick`, committed.
#[inline(always)]
fn schedule<C: FlowHashes>(svc: &Service, client: &C) -> Option<(u32, &'static Dest)> {
    pick(svc, client).map(Pick::commit)
}

/// Picks the real server for a new flow from the service's `RING` range, as its scheduler
/// says (rr/wrr walk a ring; sh, dh and mh index a bucket table by hash; lc, wlc, sed and nq
/// compare loads), if it is usable. Nothing is written (see `Pick`).
#[inline(always)]
fn pick<C: FlowHashes>(svc: &Service, client: &C) -> Option<Pick> {
    if svc.ring_len == 0 {
        return None;
    }
    let mut cursor = None;
    let at = match svc.sched {
        sched_kind::RING => {
            let c = CURSORS.get_ptr_mut(svc.index)?;
            // SAFETY: per-CPU slot, and XDP programs are not preempted on their CPU.
            let (at, next) = sched::next_slot(unsafe { *c }, svc.ring_len);
            cursor = Some((c, next));
            at
        }
        sched_kind::SH => client.sh(svc.flags & SVC_F_HASH_PORT != 0),
        sched_kind::DH => client.dh(),
        sched_kind::MH => client.mh(svc.flags & SVC_F_HASH_PORT != 0, svc.ring_len),
        sched_kind::LC | sched_kind::WLC | sched_kind::SED | sched_kind::NQ => {
            return least_loaded(svc).map(|(at, dest)| Pick { at, dest, cursor: None });
        }
        _ => return None,
    };
    if at >= svc.ring_len {
        return None;
    }
    let slot = *RING.get(svc.ring_off.wrapping_add(at))?;
    let dest = DESTS.get(slot)?;
    // Inactive only while the agent swaps a ring: the caller drops and counts.
    (dest.flags & DEST_F_ACTIVE != 0).then_some(Pick { at: slot, dest, cursor })
}

/// A later fragment (no ports): to the real server its datagram's first fragment went to. One
/// whose first fragment was never seen (reordered, the record evicted, or simply not for a
/// service: without ports the pre-filter is all that matched) is counted and passed to the
/// kernel untouched, which reassembles or discards it as it would without us.
#[inline(always)]
fn later_fragment<K>(frags: &LruHashMap<K, Flow>, key: &K, eth: *mut EthHdr, bytes: u64) -> u32 {
    // SAFETY: the value is copied out at once.
    if let Some(flow) = unsafe { frags.get(key) }.copied()
        && let Some(dest) = usable(flow)
    {
        return forward(eth, dest, flow.dest, bytes, 0);
    }
    if let Some(g) = GLOBAL_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { (*g).orphan_fragments += 1 };
    }
    XDP_PASS
}

#[inline(always)]
fn record_fragment<K>(frags: &LruHashMap<K, Flow>, key: &K, flow: Flow) {
    let _ = frags.insert(key, flow, 0);
}

/// An ICMP error quoting a packet a real server sent from the VIP (its reply to the client,
/// or its own fragmentation-needed trigger): to the real server that owns the flow, so that
/// path MTU discovery and unreachable errors reach the host that holds the connection. The
/// quoted packet runs server to client; reversed, it is the flow's key.
#[inline(always)]
fn icmp_v4(ctx: &XdpContext, eth: *mut EthHdr, ip: &Ipv4Hdr, ihl: usize) -> Result<u32, u32> {
    let icmp: *const [u8; 8] = ptr_at(ctx, ETH_HLEN + ihl)?;
    // SAFETY: checked by ptr_at.
    let kind = unsafe { (*icmp)[0] };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_SOURCE_QUENCH && kind != ICMP_TIME_EXCEEDED {
        return Ok(XDP_PASS);
    }
    let inner_off = ETH_HLEN + ihl + 8;
    let inner: *const Ipv4Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: checked by ptr_at.
    let inner = unsafe { &*inner };
    let inner_ihl = usize::from(inner.vihl & 0x0f) * 4;
    if inner_ihl < 20 || inner.saddr != ip.daddr || l4_len(inner.proto).is_none() {
        return Ok(XDP_PASS);
    }
    let ports: *const u32 = ptr_at(ctx, inner_off + inner_ihl)?;
    // SAFETY: checked by ptr_at.
    let quoted_ports = unsafe { *ports };
    // Quoted: VIP:vport -> client:cport. The flow: client:cport -> VIP:vport.
    let ports = quoted_ports.rotate_left(16);
    let (client, vip) = (inner.daddr, inner.saddr);
    let kw = [u64::from(client) | u64::from(vip) << 32, u64::from(ports) | u64::from(inner.proto) << 32];
    let tag = flowtab::tag_v4(vip, ports, inner.proto);
    let (i1, i2) = flowtab::buckets(flowtab::hash_v4(kw), flow_mask());
    let (Some(b1), Some(b2)) = (FLOWS_V4.get_ptr_mut(i1), FLOWS_V4.get_ptr_mut(i2)) else { return Ok(XDP_PASS) };
    let found = find_flow(b1, b2, client, ports as u16, tag).map(|s| s.flow());
    let bytes = u64::from(u16::from_be(ip.tot_len));
    Ok(icmp_to_owner(found, eth, bytes))
}

#[inline(always)]
fn icmp_v6(ctx: &XdpContext, eth: *mut EthHdr, ip: &Ipv6Hdr) -> Result<u32, u32> {
    let icmp: *const [u8; 8] = ptr_at(ctx, ETH_HLEN + IPV6_HLEN)?;
    // SAFETY: checked by ptr_at.
    let kind = unsafe { (*icmp)[0] };
    if kind != ICMPV6_DEST_UNREACH && kind != ICMPV6_PKT_TOOBIG && kind != ICMPV6_TIME_EXCEED {
        return Ok(XDP_PASS);
    }
    let inner_off = ETH_HLEN + IPV6_HLEN + 8;
    let inner: *const Ipv6Hdr = ptr_at(ctx, inner_off)?;
    // SAFETY: checked by ptr_at.
    let inner = unsafe { &*inner };
    if inner.saddr != ip.daddr || l4_len(inner.nexthdr).is_none() {
        return Ok(XDP_PASS);
    }
    let ports: *const u32 = ptr_at(ctx, inner_off + IPV6_HLEN)?;
    // SAFETY: checked by ptr_at.
    let ports = unsafe { *ports }.rotate_left(16);
    let (c, v) = (inner.daddr, inner.saddr);
    let w = |a: [u32; 4], i: usize| u64::from(a[i]) | u64::from(a[i + 1]) << 32;
    let kw = [w(c, 0), w(c, 2), w(v, 0), w(v, 2), u64::from(ports) | u64::from(inner.nexthdr) << 32];
    let tag = flowtab::tag_v6(kw[2], kw[3], kw[4]);
    let (i1, i2) = flowtab::buckets(flowtab::hash_v6(kw), flow_mask());
    let (Some(b1), Some(b2)) = (FLOWS_V6.get_ptr_mut(i1), FLOWS_V6.get_ptr_mut(i2)) else { return Ok(XDP_PASS) };
    let found = find_flow(b1, b2, c, ports as u16, tag).map(|s| s.flow());
    let bytes = (IPV6_HLEN + usize::from(u16::from_be(ip.payload_len))) as u64;
    Ok(icmp_to_owner(found, eth, bytes))
}

/// `found`: the flow word of the quoted flow, if the table holds it.
#[inline(always)]
fn icmp_to_owner(found: Option<u32>, eth: *mut EthHdr, bytes: u64) -> u32 {
    let Some(f) = found else { return XDP_PASS };
    let flow = Flow { dest: flowtab::dest_of(f), generation: flowtab::generation_of(f) };
    let Some(dest) = usable(flow) else { return XDP_PASS };
    if let Some(g) = GLOBAL_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { (*g).icmp_forwarded += 1 };
    }
    forward(eth, dest, flow.dest, bytes, 0)
}

/// lc, wlc, sed, nq: the least loaded usable destination of the service's list, compared with
/// the kernel's rules (`lvs_common::sched_ext::better_*`, first minimum in list order).
///
/// The loads are the connection counts this director keeps from client-to-server packets
/// only (see `next_state`): a connection the server closed is counted until the client's FIN
/// or RST, or until it idles out. IPVS in DR mode has the same blind spot.
#[inline(always)]
fn least_loaded(svc: &Service) -> Option<(u32, &'static Dest)> {
    let mut walk = LeastLoaded {
        ring_off: svc.ring_off,
        len: svc.ring_len,
        sched: u32::from(svc.sched),
        best_slot: NO_SLOT,
        best: ConnLoad { active: 0, inactive: 0, weight: 0 },
    };
    // bpf_loop (kernel 5.17) runs the callback with the verifier checking its body once; an
    // open-coded loop over up to MAX_CONN_DESTS destinations is re-verified per iteration and
    // call site, past the verifier's instruction budget.
    // SAFETY: the helper calls `compare_one` with our stack context, at most MAX_CONN_DESTS times.
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            MAX_CONN_DESTS,
            compare_one as *mut core::ffi::c_void,
            core::ptr::from_mut(&mut walk).cast(),
            0,
        );
    }
    if walk.best_slot == NO_SLOT {
        return None;
    }
    let dest = DESTS.get(walk.best_slot)?;
    (dest.flags & DEST_F_ACTIVE != 0).then_some((walk.best_slot, dest))
}

/// The state of `least_loaded`'s walk.
#[repr(C)]
struct LeastLoaded {
    ring_off: u32,
    len: u32,
    sched: u32,
    best_slot: u32,
    best: ConnLoad,
}

/// One step of `least_loaded`: compares destination `i` of the list with the best so far.
/// Returns 1 to stop (end of the list), 0 to go on.
extern "C" fn compare_one(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the context least_loaded gave it.
    let walk = unsafe { &mut *ctx.cast::<LeastLoaded>() };
    let i = i as u32;
    if i >= walk.len {
        return 1;
    }
    let Some(&slot) = RING.get(walk.ring_off.wrapping_add(i)) else { return 1 };
    let Some(dest) = DESTS.get(slot) else { return 0 };
    if dest.flags & DEST_F_ACTIVE == 0 {
        return 0;
    }
    let (c, x) =
        (DEST_CONNS.get(slot).copied().unwrap_or_default(), DEST_EXPIRED.get(slot).copied().unwrap_or_default());
    let load = ConnLoad {
        active: c.active.saturating_sub(x.active),
        inactive: c.inactive.saturating_sub(x.inactive),
        weight: dest.weight,
    };
    let better = if walk.best_slot == NO_SLOT {
        sched_ext::usable(&load)
    } else {
        match walk.sched as u8 {
            sched_kind::LC => sched_ext::better_lc(&load, &walk.best),
            sched_kind::WLC => sched_ext::better_wlc(&load, &walk.best),
            sched_kind::SED => sched_ext::better_sed(&load, &walk.best),
            _ => sched_ext::better_nq(&load, &walk.best),
        }
    };
    if better {
        walk.best_slot = slot;
        walk.best = load;
    }
    0
}

/// Seconds, as the agent publishes them in `CLOCK`.
#[inline(always)]
fn now_secs() -> u32 {
    CLOCK.get(0).map_or(0, |t| *t as u32)
}

/// Scheduling for a service with persistence (IPVS persistence templates): a client whose
/// template is younger than the timeout and points at a usable real server goes there again;
/// otherwise it is scheduled as usual and the template (re)written.
///
/// Difference from IPVS: a template's age counts from the last *new* connection that used it.
/// IPVS also keeps a template alive while connections it controls are open, so a client with
/// one long-lived connection keeps its server for later connections past the timeout; here
/// such a later connection may be scheduled anew (its open connections stay where they are).
#[inline(always)]
fn persistent<K, C: FlowHashes>(
    templates: &LruHashMap<K, Persist>,
    key: &K,
    svc: &Service,
    client: &C,
) -> Option<(u32, &'static Dest)> {
    let now = now_secs();
    if let Some(t) = templates.get_ptr_mut(key) {
        // SAFETY: a map value; a concurrent update at worst makes two clients' templates race.
        let t = unsafe { &mut *t };
        if now.wrapping_sub(t.last_used) <= svc.persist_timeout
            && let Some(dest) = usable(t.flow)
        {
            t.last_used = now;
            return Some((t.flow.dest, dest));
        }
    }
    let (slot, dest) = schedule(svc, client)?;
    let template = Persist { flow: Flow { dest: slot, generation: dest.generation }, last_used: now, _pad: 0 };
    let _ = templates.insert(key, template, 0);
    Some((slot, dest))
}

/// The sorry server, for a service with no usable real server (keepalived's `sorry_server`).
#[inline(always)]
fn sorry(svc: &Service) -> Option<(u32, &'static Dest)> {
    if svc.sorry == NO_SLOT {
        return None;
    }
    let dest = DESTS.get(svc.sorry)?;
    (dest.flags & DEST_F_ACTIVE != 0).then_some((svc.sorry, dest))
}

#[inline(always)]
fn forward(eth: *mut EthHdr, dest: &Dest, slot: u32, bytes: u64, new_flow: u64) -> u32 {
    // Dest starts with the two MACs in Ethernet header order (new destination, new source),
    // so the rewrite is three 32-bit moves. A field-wise copy of the 6-byte arrays would be
    // lowered to a call to a memmove subprogram per packet. The frame starts 4-aligned: XDP
    // buffers put it XDP_PACKET_HEADROOM (256) bytes into a page, and x86 has NET_IP_ALIGN 0.
    let from = core::ptr::from_ref(dest).cast::<u32>();
    let to = eth.cast::<u32>();
    // SAFETY: eth was bounds-checked for 34 bytes by ptr_at; Dest is 24 bytes, 4-aligned.
    unsafe {
        *to = *from;
        *to.add(1) = *from.add(1);
        *to.add(2) = *from.add(2);
    }
    if let Some(stats) = DEST_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes;
            (*stats).conns += new_flow;
        }
    }
    XDP_TX
}

#[inline(always)]
fn drop_for(service: u32, bytes: u64) -> u32 {
    if let Some(stats) = SERVICE_STATS.get_ptr_mut(service) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe {
            (*stats).dropped_packets += 1;
            (*stats).dropped_bytes += bytes;
        }
    }
    XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
