//! lvs-xdp's XDP program: LVS direct routing.
//!
//! A frame for a virtual service (VIP:port:protocol) gets the chosen real server's MAC as its
//! Ethernet destination and the director's MAC as its source, and leaves through the same
//! interface (XDP_TX). Nothing else in the frame changes: the real server holds the VIP on a
//! loopback and answers the client directly. Every other frame is passed to the kernel
//! untouched.
//!
//! The path, cheapest first:
//! 1. Ethernet + IPv4 header, then the VIP pre-filter (one bit, see `lvs_common::filter`):
//!    non-VIP traffic leaves here, after no hash lookup at all.
//! 2. The L4 ports, then the flow table: an established flow goes straight to its real server.
//! 3. Only a new flow looks up the service and takes the next slot of its scheduling ring.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lvs_common::{
    filter,
    maps::{
        DEFAULT_FLOWS, DEST_F_ACTIVE, Dest, DestStats, Flow, FlowKeyV4, IPPROTO_TCP, IPPROTO_UDP,
        MAX_DESTS, MAX_SERVICES, RING_SLOTS, Service, ServiceKeyV4, ServiceStats,
    },
    sched,
};

#[map]
static VIP_FILTER: Array<u64> = Array::with_max_entries(filter::FILTER_WORDS, 0);
#[map]
static SERVICES_V4: HashMap<ServiceKeyV4, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
#[map]
static DESTS: Array<Dest> = Array::with_max_entries(MAX_DESTS, 0);
#[map]
static RING: Array<u32> = Array::with_max_entries(RING_SLOTS, 0);
#[map]
static CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);
/// BPF_F_NO_COMMON_LRU: each CPU evicts from its own LRU list, so inserting a new flow takes no
/// lock shared with the other CPUs. The hash table itself is shared: any CPU finds any flow.
/// The price: a CPU can only evict its own entries, so under pressure one CPU's flows may be
/// evicted while another CPU's older ones stay.
#[map]
static FLOWS_V4: LruHashMap<FlowKeyV4, Flow> = LruHashMap::with_max_entries(DEFAULT_FLOWS, BPF_F_NO_COMMON_LRU);
#[map]
static DEST_STATS: PerCpuArray<DestStats> = PerCpuArray::with_max_entries(MAX_DESTS, 0);
#[map]
static SERVICE_STATS: PerCpuArray<ServiceStats> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
const ETH_HLEN: usize = 14;
/// EtherType 0x0800 as it reads from the frame into a native (little-endian) u16.
const ETH_P_IP_RAW: u16 = 0x0800u16.to_be();
/// IPv4 flags/fragment-offset word: More Fragments and the 13-bit offset, in wire order.
const IP_MF_OFFSET_RAW: u16 = 0x3fffu16.to_be();
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

#[xdp]
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

/// The first four bytes of TCP and UDP headers alike.
#[repr(C)]
struct Ports {
    src: u16,
    dst: u16,
}

#[inline(always)]
fn try_lvs(ctx: &XdpContext) -> Result<u32, u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    if unsafe { (*eth).proto } != ETH_P_IP_RAW {
        return Ok(XDP_PASS);
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let daddr = ip.daddr;
    let (word, mask) = filter::word_and_mask(filter::bit_v4(daddr));
    match VIP_FILTER.get(word) {
        Some(bits) if *bits & mask != 0 => {}
        _ => return Ok(XDP_PASS),
    }

    // Maybe a VIP: validate what we rely on. A frame we cannot fully vouch for goes to the
    // kernel untouched, which drops what is malformed and answers what is merely unusual.
    if ip.vihl >> 4 != 4 {
        return Ok(XDP_PASS);
    }
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let proto = ip.proto;
    let l4_len = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return Ok(XDP_PASS),
    };
    // Later fragments carry no ports; until fragment tracking exists all fragments go to the
    // kernel, which reassembles and, without IPVS, answers or drops them itself.
    if ip.frag & IP_MF_OFFSET_RAW != 0 {
        return Ok(XDP_PASS);
    }
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    // A truncated frame (tot_len beyond the data) or a header that overlaps itself is not ours
    // to forward: the real server would drop it anyway, and rewriting it hides the damage.
    if ihl < 20 || tot_len < ihl + l4_len || ETH_HLEN + tot_len > ctx.data_end() - ctx.data() {
        return Ok(XDP_PASS);
    }
    // The bound on `ihl` (<= 60) is what lets the verifier accept this variable offset.
    let ports: *const Ports = ptr_at(ctx, ETH_HLEN + ihl)?;
    // SAFETY: checked by ptr_at; the whole L4 header is within tot_len, checked above.
    let ports = unsafe { &*ports };
    let key = FlowKeyV4 {
        saddr: ip.saddr,
        daddr,
        sport: ports.src,
        dport: ports.dst,
        proto,
        _pad: [0; 3],
    };
    let ip_bytes = tot_len as u64;

    // SAFETY: the value is only read; a concurrent update replaces the element (RCU) and the
    // worst outcome of a stale read is one packet to the previous real server.
    if let Some(flow) = unsafe { FLOWS_V4.get(&key) } {
        let (slot, generation) = (flow.dest, flow.generation);
        if let Some(dest) = DESTS.get(slot) {
            if dest.generation == generation && dest.flags & DEST_F_ACTIVE != 0 {
                return Ok(forward(eth, dest, slot, ip_bytes, 0));
            }
        }
        // The real server left (or its slot was reused): schedule the flow again below.
    }

    let skey = ServiceKeyV4 { addr: daddr, port: ports.dst, proto, _pad: 0 };
    // SAFETY: read-only use of the value, as above.
    let Some(svc) = (unsafe { SERVICES_V4.get(&skey) }) else {
        return Ok(XDP_PASS);
    };
    let Some(slot) = schedule(svc) else {
        return Ok(drop_for(svc.index, ip_bytes));
    };
    let Some(dest) = DESTS.get(slot) else {
        return Ok(drop_for(svc.index, ip_bytes));
    };
    if dest.flags & DEST_F_ACTIVE == 0 {
        // Only possible while the agent swaps a ring: count it as a drop, the client retries.
        return Ok(drop_for(svc.index, ip_bytes));
    }
    let flow = Flow { dest: slot, generation: dest.generation };
    // A full table evicts its least recently used flow; an error here only means this flow is
    // scheduled again on its next packet, which is what rr/wrr would do anyway.
    let _ = FLOWS_V4.insert(&key, &flow, 0);
    Ok(forward(eth, dest, slot, ip_bytes, 1))
}

/// Picks the destination slot for a new flow from the service's ring (rr/wrr, see
/// `lvs_common::sched`).
#[inline(always)]
fn schedule(svc: &Service) -> Option<u32> {
    if svc.ring_len == 0 {
        return None;
    }
    let cursor = CURSORS.get_ptr_mut(svc.index)?;
    // SAFETY: per-CPU slot, and XDP programs are not preempted on their CPU.
    let (at, next) = sched::next_slot(unsafe { *cursor }, svc.ring_len);
    unsafe { *cursor = next };
    RING.get(svc.ring_off.wrapping_add(at)).copied()
}

#[inline(always)]
fn forward(eth: *mut EthHdr, dest: &Dest, slot: u32, bytes: u64, new_flow: u64) -> u32 {
    // SAFETY: eth was bounds-checked by ptr_at at the start of the program.
    unsafe {
        (*eth).dst = dest.mac;
        (*eth).src = dest.src_mac;
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
