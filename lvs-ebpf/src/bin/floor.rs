//! Reference programs for `cargo xtask bench`, and the pass program the tests put on veth peers.
//!
//! The benchmark reports lvs-xdp's cost as a ratio to these floors, measured in the same run,
//! so that a noisy shared machine moves both sides alike.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::xdp,
    programs::XdpContext,
};

/// Reads the Ethernet header and drops: the cost of entering an XDP program at all.
#[xdp]
pub fn floor_drop(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 > end {
        return XDP_PASS;
    }
    // SAFETY: bounds checked above.
    let proto = unsafe { core::ptr::read_volatile((start + 12) as *const u16) };
    if proto == 0 { XDP_PASS } else { XDP_DROP }
}

/// Swaps the Ethernet addresses and transmits: the least any XDP forwarder does.
#[xdp]
pub fn floor_swap(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 > end {
        return XDP_PASS;
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

/// Passes everything: attached to the peer of a veth so that frames sent with XDP_TX are
/// delivered (veth only delivers them to a peer running XDP or with GRO on).
#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
