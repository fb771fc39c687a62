//! The flow table: which real server each connection was given, its TCP state and when it
//! was last active. One layout and one set of rules, used by the XDP program, by the agent
//! (listing, sweeping) and by the host tests as the reference model.
//!
//! Layout: a BPF array (`FLOWS_V4`, `FLOWS_V6`) of buckets of [`WAYS`] slots; an IPv4 bucket
//! is one 64-byte cache line, an IPv6 bucket two. The arrays are created `BPF_F_MMAPABLE`,
//! which puts their data on a page boundary (so a bucket never straddles lines) and lets the
//! agent read and sweep them through a memory mapping instead of a syscall per entry.
//!
//! A flow lives in one of two buckets chosen by its hash ("two choices"): a lookup reads the
//! first, and the second only when the first does not hold the flow; a new flow takes a free
//! way of the emptier of the two, else an expired flow's way, else evicts the least recently
//! active of the eight (per-set LRU, to the second). With two slots per flow the table is
//! sized for, live flows are practically never evicted (`tests::a_full_table_keeps_its_flows`).
//!
//! Why not the kernel's LRU hash map: with a million flows, a new flow there pays three to
//! five dependent cache misses (its bucket, the chain, the per-CPU LRU list, the evicted
//! node and that node's bucket). Here both buckets' reads are independent of each other and
//! the insert writes a line just read: about one miss. And a slot is 16 bytes (IPv4) where
//! the LRU hash spends about 90 on an entry, so the table also stays smaller in cache.
//!
//! What a slot stores: the client's address and port exactly, the VIP, virtual port and
//! protocol as a 31-bit tag (the listing takes them back from the real server's service), the
//! real server's slot and generation and the TCP state in one word, and the last activity in
//! seconds modulo 2^16. Two flows are confused only if the same client address and port go to
//! two services whose tags collide (odds 2^-31 per such pair); the result would be one of the
//! two connections sent to the other's real server.
//!
//! Concurrency: the table is shared by all CPUs (RSS keeps a flow on one CPU, but a flow that
//! moves must still find its entry). A writer placing a flow clears the slot's key word (the
//! one holding the tag) first and stores it last, so that on x86 (stores become visible in
//! order) a reader never pairs a key with another flow's address or flow word. Two
//! CPUs inserting into the same way in the same instant lose one of the two inserts: that flow
//! is scheduled again on its next packet. BPF has no cheaper way to avoid this than a
//! compare-and-swap per new flow, and the window is a few nanoseconds per bucket pair.

use crate::{
    maps::{FLOW_STATE_UDP, MAX_DESTS},
    sched_ext::tcp_state::{self, Timeouts},
};

/// Slots per bucket.
pub const WAYS: usize = 4;
/// Bits of the flow word holding the destination slot.
pub const DEST_BITS: u32 = 17;
const DEST_MASK: u32 = (1 << DEST_BITS) - 1;
/// The low bits of `Dest::generation` a flow remembers: a slot must be given to another real
/// server 2048 times while a flow sleeps for that flow to follow the wrong owner (and such a
/// flow, rescheduled, would be broken anyway: DR real servers do not share connections).
pub const GEN_BITS: u32 = 11;
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
/// The longest idle timeout a slot can measure (its clock is 16 bits of seconds): longer
/// timeouts are cut to this (18 hours).
pub const MAX_TIMEOUT: u32 = u16::MAX as u32 - 1;

const _: () = assert!(MAX_DESTS <= 1 << DEST_BITS);
const _: () = assert!(DEST_BITS + GEN_BITS + 4 == 32);
const _: () = assert!(FLOW_STATE_UDP < 16);

/// One IPv4 flow. `tag == 0`: a free slot.
///
/// Two words: the key word (tag, port, last activity), then the address and the flow word.
/// The tag and the last activity share a word so that the agent's sweep frees a slot with one
/// compare-and-swap that fails if the program touched the slot since the sweep read it: any
/// write by the program (a refresh, or another flow placed there) carries a newer `last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct SlotV4 {
    /// [`tag_v4`] of the VIP, virtual port and protocol.
    pub tag: u32,
    /// Client port, as on the wire.
    pub sport: u16,
    /// Last activity: seconds of the program's clock, modulo 2^16.
    pub last: u16,
    /// Client address, as on the wire.
    pub saddr: u32,
    /// [`pack`]ed destination slot, generation and state.
    pub flow: u32,
}

/// One IPv6 flow (as [`SlotV4`]; the key word is the third).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct SlotV6 {
    pub saddr: [u32; 4],
    pub tag: u32,
    pub sport: u16,
    pub last: u16,
    pub flow: u32,
    pub _pad: u32,
}

/// Value of `FLOWS_V4`: one cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct BucketV4 {
    pub ways: [SlotV4; WAYS],
}

/// Value of `FLOWS_V6`: two cache lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct BucketV6 {
    pub ways: [SlotV6; WAYS],
}

const _: () = assert!(size_of::<SlotV4>() == 16);
const _: () = assert!(size_of::<SlotV6>() == 32);
const _: () = assert!(size_of::<BucketV4>() == 64);
const _: () = assert!(size_of::<BucketV6>() == 128);

impl SlotV4 {
    /// The word holding the tag (with the port and the last activity).
    pub const KEY_WORD: usize = 0;
    /// The slot as the words [`store`] writes.
    #[inline(always)]
    #[must_use]
    pub const fn words(&self) -> [u64; 2] {
        [
            self.tag as u64 | (self.sport as u64) << 32 | (self.last as u64) << 48,
            self.saddr as u64 | (self.flow as u64) << 32,
        ]
    }
}

impl SlotV6 {
    /// The word holding the tag (with the port and the last activity).
    pub const KEY_WORD: usize = 2;
    /// The slot as the words [`store`] writes.
    #[inline(always)]
    #[must_use]
    pub const fn words(&self) -> [u64; 4] {
        let a = self.saddr;
        [
            a[0] as u64 | (a[1] as u64) << 32,
            a[2] as u64 | (a[3] as u64) << 32,
            self.tag as u64 | (self.sport as u64) << 32 | (self.last as u64) << 48,
            self.flow as u64 | (self._pad as u64) << 32,
        ]
    }
}

/// Writes a slot's `words` at `p` as every writer must (see Concurrency above): the key word
/// (index `key`) cleared first and set last.
///
/// # Safety
/// `p` points to a slot of `N` 8-aligned words that may be written.
#[inline(always)]
pub unsafe fn store<const N: usize>(p: *mut u64, words: [u64; N], key: usize) {
    // SAFETY: the caller's; every index is below N.
    unsafe {
        p.add(key).write_volatile(0);
        let mut i = 0;
        while i < N {
            if i != key {
                p.add(i).write_volatile(words[i]);
            }
            i += 1;
        }
        p.add(key).write_volatile(words[key]);
    }
}

/// The flow word: destination slot, the low [`GEN_BITS`] of its generation, and the state
/// (`tcp_state`, or `FLOW_STATE_UDP`).
#[inline(always)]
#[must_use]
pub const fn pack(dest: u32, generation: u32, state: u8) -> u32 {
    (dest & DEST_MASK) | (generation & GEN_MASK) << DEST_BITS | ((state & 0xf) as u32) << (DEST_BITS + GEN_BITS)
}

#[inline(always)]
#[must_use]
pub const fn dest_of(flow: u32) -> u32 {
    flow & DEST_MASK
}

#[inline(always)]
#[must_use]
pub const fn generation_of(flow: u32) -> u32 {
    (flow >> DEST_BITS) & GEN_MASK
}

#[inline(always)]
#[must_use]
pub const fn state_of(flow: u32) -> u8 {
    (flow >> (DEST_BITS + GEN_BITS)) as u8
}

/// Whether a remembered generation (full or cut to [`GEN_BITS`]) is the slot's current one.
#[inline(always)]
#[must_use]
pub const fn same_generation(a: u32, b: u32) -> bool {
    (a ^ b) & GEN_MASK == 0
}

/// Buckets for a table sized for `flows` flows: two slots per flow, a power of two buckets
/// (the program masks the hash), at least one.
#[must_use]
pub const fn buckets_for(flows: u32) -> u32 {
    let slots = (flows as u64 * 2).next_power_of_two();
    let buckets = slots / WAYS as u64;
    if buckets == 0 {
        1
    } else if buckets > 1 << 30 {
        1 << 30
    } else {
        buckets as u32
    }
}

/// Murmur3's 64-bit finaliser: every input bit moves about half the output bits.
#[inline(always)]
const fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The hash of an IPv4 5-tuple given as the words `saddr | daddr << 32` and
/// `ports | proto << 32` (ports as read from the wire: source in the low half). Two
/// multiplications, not a full finaliser: it runs for every packet of every flow, and
/// [`buckets`] takes the well-mixed high half for the first bucket.
#[inline(always)]
#[must_use]
pub const fn hash_v4(kw: [u64; 2]) -> u64 {
    let x = (kw[0] ^ kw[1].wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^ (x >> 29)
}

/// The hash of an IPv6 5-tuple given as five words: source address (two), destination
/// address (two), `ports | proto << 32`.
#[inline(always)]
#[must_use]
pub const fn hash_v6(kw: [u64; 5]) -> u64 {
    mix(kw[0]
        ^ kw[1].wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ kw[2].wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ kw[3].wrapping_mul(0x1656_67b1_9e37_79f9)
        ^ kw[4].wrapping_mul(0x85eb_ca77_c2b2_ae63))
}

/// The two buckets a flow of hash `h` may live in, for a table of `mask + 1` buckets.
#[inline(always)]
#[must_use]
pub const fn buckets(h: u64, mask: u32) -> (u32, u32) {
    ((h >> 32) as u32 & mask, h as u32 & mask)
}

/// The tag of an IPv4 flow's VIP, virtual port (the high half of `ports`) and protocol:
/// never 0, which marks a free slot. Multiplicative hashing (the high half of one product):
/// it only has to tell apart the few services one client address and port talk to.
#[inline(always)]
#[must_use]
pub const fn tag_v4(daddr: u32, ports: u32, proto: u8) -> u32 {
    let x = daddr as u64 | ((ports >> 16) as u64) << 32 | (proto as u64) << 48;
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 | 1
}

/// The tag of an IPv6 flow (as [`tag_v4`]): from the destination words and `ports | proto << 32`.
#[inline(always)]
#[must_use]
pub const fn tag_v6(d0: u64, d1: u64, ports_proto: u64) -> u32 {
    (mix(d0 ^ d1.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (ports_proto >> 16).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)) >> 32)
        as u32
        | 1
}

/// A slot as the placement rules see it.
pub trait Way {
    fn tag(&self) -> u32;
    fn last(&self) -> u16;
    fn flow(&self) -> u32;
    /// The flow word and the last activity, for a packet of the flow to update in place.
    fn activity_mut(&mut self) -> (&mut u32, &mut u16);
}

/// `Way` for the slot types, whose fields share names.
macro_rules! impl_way {
    ($($slot:ty),*) => {$(
        impl Way for $slot {
            #[inline(always)]
            fn tag(&self) -> u32 {
                self.tag
            }
            #[inline(always)]
            fn last(&self) -> u16 {
                self.last
            }
            #[inline(always)]
            fn flow(&self) -> u32 {
                self.flow
            }
            #[inline(always)]
            fn activity_mut(&mut self) -> (&mut u32, &mut u16) {
                (&mut self.flow, &mut self.last)
            }
        }
    )*};
}
impl_way!(SlotV4, SlotV6);

/// A bucket of either family.
pub trait Bucket {
    type Slot: Way;
    /// The client address as a slot holds it.
    type Addr: Copy + PartialEq;
    fn ways(&self) -> &[Self::Slot; WAYS];
    fn ways_mut(&mut self) -> &mut [Self::Slot; WAYS];
    fn client(slot: &Self::Slot) -> (Self::Addr, u16);

    /// The way holding this flow, if any (`look` without the room, which the compiler then
    /// leaves out).
    #[inline(always)]
    fn find(&self, saddr: Self::Addr, sport: u16, tag: u32) -> Option<usize> {
        self.look(saddr, sport, tag).ok()
    }

    /// One pass over the bucket: the way holding this flow, or else the room it has for one.
    #[inline(always)]
    fn look(&self, saddr: Self::Addr, sport: u16, tag: u32) -> Result<usize, Room> {
        let ways = self.ways();
        let mut tally = Tally::new();
        let mut w = 0;
        while w < WAYS {
            let s = &ways[w];
            let t = s.tag();
            if t == tag && Self::client(s) == (saddr, sport) {
                return Ok(w);
            }
            tally.add(t);
            w += 1;
        }
        Err(tally.room())
    }
}

/// `Bucket` for the bucket types: (bucket, slot, client address).
macro_rules! impl_bucket {
    ($(($bucket:ty, $slot:ty, $addr:ty)),*) => {$(
        impl Bucket for $bucket {
            type Slot = $slot;
            type Addr = $addr;
            #[inline(always)]
            fn ways(&self) -> &[$slot; WAYS] {
                &self.ways
            }
            #[inline(always)]
            fn ways_mut(&mut self) -> &mut [$slot; WAYS] {
                &mut self.ways
            }
            #[inline(always)]
            fn client(s: &$slot) -> ($addr, u16) {
                (s.saddr, s.sport)
            }
        }
    )*};
}
impl_bucket!((BucketV4, SlotV4, u32), (BucketV6, SlotV6, [u32; 4]));

/// The idle timeout of a flow in `state`, in seconds, as a slot can measure it.
#[inline(always)]
#[must_use]
pub const fn idle_limit(state: u8, t: &Timeouts) -> u32 {
    let limit = if state == FLOW_STATE_UDP { t.udp } else { tcp_state::timeout(state, t) };
    if limit > MAX_TIMEOUT { MAX_TIMEOUT } else { limit }
}

/// Seconds since `last` at `now` (both modulo 2^16).
#[inline(always)]
#[must_use]
pub const fn age(last: u16, now: u16) -> u32 {
    now.wrapping_sub(last) as u32
}

/// Whether a flow last active at `last` has been idle past its state's timeout at `now`.
#[inline(always)]
#[must_use]
pub const fn expired(last: u16, flow: u32, now: u16, t: &Timeouts) -> bool {
    age(last, now) > idle_limit(state_of(flow), t)
}

/// Where a new flow goes, given its two buckets: (in the second bucket, way). A free way if
/// either bucket has one ([`free_way`]), else the way [`evict_cost`] ranks cheapest, the
/// first on ties.
#[inline(always)]
#[must_use]
pub fn place<W: Way>(first: &[W; WAYS], second: &[W; WAYS], now: u16, t: &Timeouts) -> (bool, usize) {
    let at = free_way(Room::of(first), Room::of(second)).unwrap_or_else(|| {
        let (mut best, mut at) = (u32::MAX, 0);
        for (i, s) in first.iter().chain(second).enumerate() {
            let c = evict_cost(s, now, t);
            if c < best {
                best = c;
                at = i as u32;
            }
        }
        at
    });
    (at >= WAYS as u32, at as usize % WAYS)
}

/// What a bucket has for a new flow: its occupied ways, and its first free way (`WAYS` when
/// it is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Room {
    pub used: u32,
    pub free: u32,
}

impl Room {
    pub const FULL: Room = Room { used: WAYS as u32, free: WAYS as u32 };

    #[inline(always)]
    #[must_use]
    pub fn of<W: Way>(b: &[W; WAYS]) -> Room {
        let mut tally = Tally::new();
        let mut w = 0;
        while w < WAYS {
            tally.add(b[w].tag());
            w += 1;
        }
        tally.room()
    }
}

/// A bucket's [`Room`], counted way by way in order and without branches (see [`occupied`]):
/// the first free way is the number of occupied ways before it.
struct Tally {
    used: u64,
    free: u64,
    /// 1 while every way so far is occupied.
    leading: u64,
}

impl Tally {
    #[inline(always)]
    const fn new() -> Self {
        Self { used: 0, free: 0, leading: 1 }
    }

    #[inline(always)]
    fn add(&mut self, tag: u32) {
        let occupied = occupied(tag);
        self.used += occupied;
        self.leading &= occupied;
        self.free += self.leading;
    }

    #[inline(always)]
    const fn room(&self) -> Room {
        Room { used: self.used as u32, free: self.free as u32 }
    }
}

/// 1 if a way with this tag is occupied, else 0, computed without a branch: BPF has no
/// conditional set, so a comparison becomes a jump, mispredicted about half the time on a
/// half-full table's ways, right after their line arrives (and one more path for the
/// verifier to walk).
#[inline(always)]
const fn occupied(tag: u32) -> u64 {
    (tag as u64 + 0xffff_ffff) >> 32
}

/// The free way a new flow takes, numbered over both buckets (the second's ways from
/// `WAYS`): the first free way of the emptier bucket, the first bucket's on ties, so that the
/// two fill evenly. None when both are full: then a flow is evicted (see [`evict_cost`]).
#[inline(always)]
#[must_use]
pub const fn free_way(first: Room, second: Room) -> Option<u32> {
    if first.used >= WAYS as u32 && second.used >= WAYS as u32 {
        None
    } else if second.used < first.used {
        Some(WAYS as u32 + second.free)
    } else {
        Some(first.free)
    }
}

/// What evicting an occupied way costs, when both of a new flow's buckets are full: an
/// expired flow's way 0, a live flow's 1 + how recently it was active (65535 - its age), so
/// that the flow idle longest goes.
#[inline(always)]
#[must_use]
pub fn evict_cost<W: Way>(s: &W, now: u16, t: &Timeouts) -> u32 {
    if expired(s.last(), s.flow(), now, t) { 0 } else { 1 + (u32::from(u16::MAX) - age(s.last(), now)) }
}

#[cfg(feature = "user")]
mod pod {
    use super::{BucketV4, BucketV6};
    // SAFETY: repr(C) plain data, no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for BucketV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BucketV6 {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;
    use crate::sched_ext::tcp_state::{ESTABLISHED, FIN_WAIT, SYN_RECV};

    fn kw(saddr: u32, daddr: u32, sport: u16, dport: u16) -> [u64; 2] {
        let ports = u32::from(sport) | u32::from(dport) << 16;
        [u64::from(saddr) | u64::from(daddr) << 32, u64::from(ports) | 6 << 32]
    }

    #[test]
    fn flow_word_round_trips() {
        let f = pack(MAX_DESTS - 1, 0xffff_ffff, FLOW_STATE_UDP);
        assert_eq!((dest_of(f), generation_of(f), state_of(f)), (MAX_DESTS - 1, GEN_MASK, FLOW_STATE_UDP));
        let f = pack(7, 2049, ESTABLISHED);
        assert_eq!((dest_of(f), generation_of(f), state_of(f)), (7, 1, ESTABLISHED));
        assert!(same_generation(2049, 1) && !same_generation(2, 1));
    }

    #[test]
    fn slot_words_are_the_slots_memory_with_the_tag_in_the_key_word() {
        let v4 = SlotV4 { tag: 0x8765_4321, sport: 0x1234, last: 0xbeef, saddr: 0x0a00_0001, flow: 0xdead_0001 };
        // SAFETY: plain data of two 8-aligned words.
        assert_eq!(v4.words(), unsafe { core::mem::transmute::<SlotV4, [u64; 2]>(v4) });
        assert_eq!(v4.words()[SlotV4::KEY_WORD] as u32, v4.tag);
        let v6 = SlotV6 { saddr: [1, 2, 3, 4], tag: 0x8765_4321, sport: 0x1234, last: 0xbeef, flow: 7, _pad: 0 };
        // SAFETY: as above, four words.
        assert_eq!(v6.words(), unsafe { core::mem::transmute::<SlotV6, [u64; 4]>(v6) });
        assert_eq!(v6.words()[SlotV6::KEY_WORD] as u32, v6.tag);
        let mut out = [u64::MAX; 4];
        // SAFETY: four writable aligned words.
        unsafe { store(out.as_mut_ptr(), v6.words(), SlotV6::KEY_WORD) };
        assert_eq!(out, v6.words());
    }

    #[test]
    fn sizes_are_two_slots_per_flow() {
        assert_eq!(buckets_for(1 << 20), 1 << 19);
        assert_eq!(buckets_for(1_000_000), 1 << 19);
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(u32::MAX), 1 << 30);
    }

    #[test]
    fn tags_are_never_zero_and_tell_services_apart() {
        let mut seen = std::collections::BTreeSet::new();
        for vip in 0..200u32 {
            for port in [80u16, 443, 53, 8080, 25] {
                for proto in [6u8, 17] {
                    let t = tag_v4(0x0a00_0000 | vip, u32::from(port.to_be()) << 16, proto);
                    assert_ne!(t, 0);
                    assert!(seen.insert(t), "tag collision at vip {vip} port {port} proto {proto}");
                }
            }
        }
        assert_ne!(tag_v6(0, 0, 0), 0);
    }

    #[test]
    fn expiry_follows_the_state_timeouts_and_wraps() {
        let t = Timeouts { tcp: 900, tcpfin: 120, udp: 300 };
        let est = pack(1, 1, ESTABLISHED);
        assert!(!expired(100, est, 1000, &t));
        assert!(expired(99, est, 1000, &t));
        assert!(expired(0, pack(1, 1, FIN_WAIT), 121, &t));
        assert!(!expired(0, pack(1, 1, FLOW_STATE_UDP), 300, &t));
        // Across the 16-bit wrap of the clock.
        assert!(!expired(65500, est, 100, &t));
        // Timeouts beyond what 16 bits measure are cut, not wrapped.
        let long = Timeouts { tcp: 1 << 20, ..t };
        assert!(!expired(0, est, 65534, &long) && expired(0, est, 65535, &long));
        assert_eq!(idle_limit(SYN_RECV, &t), tcp_state::timeout(SYN_RECV, &t));
    }

    #[test]
    fn placement_prefers_free_then_expired_then_the_idlest() {
        let t = Timeouts::DEFAULT;
        let live = |last: u16| SlotV4 { saddr: 1, tag: 3, sport: 1, last, flow: pack(0, 0, ESTABLISHED) };
        let free = SlotV4::default();
        let full = [live(2510), live(2511), live(2512), live(2513)];
        // A free way in the second bucket beats evicting from the first.
        assert_eq!(place(&full, &[live(1), free, live(1), live(1)], 20, &t), (true, 1));
        // The emptier bucket's free way wins; ties go to the first.
        assert_eq!(place(&[live(1), free, free, live(1)], &[free, free, free, live(1)], 20, &t), (true, 0));
        assert_eq!(place(&[free, free, free, free], &[free, free, free, free], 20, &t), (false, 0));
        // Both full: an expired flow's way, then the flow idle longest.
        assert_eq!(place(&full, &[live(2999), live(2000), live(2999), live(2999)], 3000, &t), (true, 1));
        assert_eq!(place(&full, &[live(2999), live(2999), live(2999), live(2999)], 3000, &t), (false, 0));
        assert_eq!(place(&full, &[live(2999), live(2505), live(2999), live(2999)], 3000, &t), (true, 1));
    }

    #[test]
    fn one_look_finds_the_flow_or_measures_the_room() {
        let flow = |saddr: u32, sport: u16| SlotV4 { saddr, tag: 9, sport, last: 1, flow: pack(0, 0, ESTABLISHED) };
        let free = SlotV4::default();
        let b = BucketV4 { ways: [free, flow(1, 80), free, flow(2, 80)] };
        assert_eq!(b.look(2, 80, 9), Ok(3));
        assert_eq!(b.look(2, 80, 9).ok(), b.find(2, 80, 9));
        assert_eq!(b.look(2, 81, 9), Err(Room { used: 2, free: 0 }));
        assert_eq!(b.look(2, 80, 7), Err(Room::of(&b.ways)));
        let full = BucketV4 { ways: [flow(1, 1), flow(1, 2), flow(1, 3), flow(1, 4)] };
        assert_eq!(full.look(1, 5, 9), Err(Room::FULL));
        let one = BucketV4 { ways: [flow(1, 1), flow(1, 2), free, flow(1, 4)] };
        // The emptier bucket's first free way, the first bucket's on ties; none when both are full.
        assert_eq!(free_way(Room::of(&one.ways), Room::of(&b.ways)), Some(WAYS as u32));
        assert_eq!(free_way(Room::of(&b.ways), Room::of(&b.ways)), Some(0));
        assert_eq!(free_way(Room::FULL, Room::of(&one.ways)), Some(WAYS as u32 + 2));
        assert_eq!(free_way(Room::of(&one.ways), Room::FULL), Some(2));
        assert_eq!(free_way(Room::FULL, Room::FULL), None);
    }

    #[test]
    fn a_full_table_keeps_its_flows() {
        // The default size holding a million flows, filled as the program fills it: live flows
        // are evicted at most once in 100,000 inserts (3 in this fill), and every flow left is
        // found again in one of its two buckets.
        let flows = 1_000_000u32;
        let n = buckets_for(1 << 20);
        let mask = n - 1;
        let mut table = vec![BucketV4::default(); n as usize];
        let t = Timeouts::DEFAULT;
        let mut evicted = 0;
        let key = |i: u32| (0xac10_0000 | (i & 0x000f_ffff), (1024 + (i >> 20)) as u16);
        let vip = 0x6401_4d0au32;
        let ports = |sport: u16| u32::from(sport) | u32::from(80u16.to_be()) << 16;
        let tag = tag_v4(vip, ports(0), 6);
        for i in 0..flows {
            let (saddr, sport) = key(i);
            let (b1, b2) = buckets(hash_v4(kw(saddr, vip, sport, 80u16.to_be())), mask);
            let (second, way) = place(&table[b1 as usize].ways, &table[b2 as usize].ways, 100, &t);
            let b = if second { b2 } else { b1 } as usize;
            evicted += usize::from(table[b].ways[way].tag != 0);
            table[b].ways[way] = SlotV4 { saddr, tag, sport, last: 100, flow: pack(1, 0, ESTABLISHED) };
        }
        assert!(evicted <= 10, "{evicted} live flows evicted from a table at half its slots");
        let mut found = 0;
        for i in (0..flows).step_by(97) {
            let (saddr, sport) = key(i);
            let (b1, b2) = buckets(hash_v4(kw(saddr, vip, sport, 80u16.to_be())), mask);
            let hit = table[b1 as usize].find(saddr, sport, tag).or(table[b2 as usize].find(saddr, sport, tag));
            found += usize::from(hit.is_some());
        }
        assert!(found + evicted >= (0..flows).step_by(97).count(), "{found} found");
        let used: Vec<usize> = table.iter().map(|b| b.ways.iter().filter(|s| s.tag != 0).count()).collect();
        assert_eq!(used.iter().sum::<usize>() + evicted, flows as usize);
    }
}
