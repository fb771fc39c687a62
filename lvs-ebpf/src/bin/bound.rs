//! The benchmark's bound on a new flow (`cargo xtask bench`): a program that does only what
//! any forwarder keeping per-flow state must do for a flow's first packet. Its own object, not
//! `lvs-floor`'s: that one is also loaded by iproute2 for the tests' veth peers, and this one
//! has a map.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use lvs_common::flowtab::{self, BucketV4};

/// The flow table read: created with one bucket, sized by the benchmark's loader as lvs's
/// `FLOWS_V4` (and, as it, BPF_F_MMAPABLE, which puts its buckets on page boundaries).
#[map]
static BOUND_FLOWS: Array<BucketV4> = Array::with_max_entries(1, 1 << 10);
/// Buckets - 1 of `BOUND_FLOWS`, set by the loader.
#[unsafe(no_mangle)]
static BOUND_MASK: Global<u32> = Global::new(0);

/// Reads a frame's 5-tuple, reads the two buckets lvs's flow table holds that flow in (same
/// hash, same layout, a table of the same size), swaps the Ethernet addresses and transmits.
/// A flow's first packet finds neither bucket in a cache, so this is the least a new flow
/// can cost. Expects IPv4 without options (the benchmark's frames); anything else passes.
#[xdp]
pub fn new_flow_bound(ctx: XdpContext) -> u32 {
    const PORTS: usize = 14 + 20;
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + PORTS + 4 > end {
        return XDP_PASS;
    }
    // SAFETY: bounds checked above; byte offsets of IPv4 without options behind Ethernet.
    let (vihl, proto, saddr, daddr, ports) = unsafe {
        (
            *((start + 14) as *const u8),
            *((start + 23) as *const u8),
            *((start + 26) as *const u32),
            *((start + 30) as *const u32),
            *((start + PORTS) as *const u32),
        )
    };
    if vihl != 0x45 {
        return XDP_PASS;
    }
    let kw = [u64::from(saddr) | u64::from(daddr) << 32, u64::from(ports) | u64::from(proto) << 32];
    let (i1, i2) = flowtab::buckets(flowtab::hash_v4(kw), BOUND_MASK.load());
    let (Some(b1), Some(b2)) = (BOUND_FLOWS.get_ptr(i1), BOUND_FLOWS.get_ptr(i2)) else {
        return XDP_PASS;
    };
    // SAFETY: array values; a read of each (of its first word) is all the bound needs, and
    // the program cannot return before both reads complete.
    unsafe {
        core::ptr::read_volatile(b1.cast::<u32>());
        core::ptr::read_volatile(b2.cast::<u32>());
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: bounds checked above.
    unsafe {
        let mut addrs = *eth;
        let (dst, src) = addrs.split_at_mut(6);
        dst.swap_with_slice(src);
        *eth = addrs;
    }
    XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
