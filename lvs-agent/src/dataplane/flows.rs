//! The flow tables as the agent sees them: the program's `FLOWS_V4` / `FLOWS_V6` arrays
//! (layout and rules in `lvs_common::flowtab`) mapped into the agent's memory, for listing,
//! the idle sweep and the benchmark's fill. Through the mapping a million flows are read in
//! milliseconds; BPF_MAP_LOOKUP_ELEM would take a syscall per bucket.
//!
//! The program writes slots while the agent reads them: the agent reads a slot's words
//! between two reads of its key word (a slot changing under it is read as either flow, never
//! a mix, or as a free slot), and frees an expired slot with a compare-and-swap on its key
//! word, so that a slot the program reused meanwhile is left alone.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Map, MapData, MapError};
use lvs_common::{
    flowtab::{self, BucketV4, BucketV6, SlotV4, SlotV6, WAYS, Way},
    maps::{FlowKeyV4, v6_from_words},
    sched_ext::tcp_state::Timeouts,
};

use super::DataplaneError;

/// What differs between the IPv4 and the IPv6 table.
pub trait Layout: Copy + 'static {
    type Slot: Copy + Way;
    /// Bytes per slot.
    const SLOT: usize = size_of::<Self::Slot>();
    /// The slot's key word: the tag in its low half, the port and the last activity above.
    const KEY_WORD: usize;
    /// The client (address, port in host order) of an occupied slot.
    fn client(slot: &Self::Slot) -> (IpAddr, u16);
}

impl Layout for BucketV4 {
    type Slot = SlotV4;
    const KEY_WORD: usize = SlotV4::KEY_WORD;
    fn client(s: &SlotV4) -> (IpAddr, u16) {
        (IpAddr::V4(Ipv4Addr::from(s.saddr.to_ne_bytes())), u16::from_be(s.sport))
    }
}

impl Layout for BucketV6 {
    type Slot = SlotV6;
    const KEY_WORD: usize = SlotV6::KEY_WORD;
    fn client(s: &SlotV6) -> (IpAddr, u16) {
        (IpAddr::V6(v6_from_words(s.saddr)), u16::from_be(s.sport))
    }
}

/// One occupied slot, as read.
#[derive(Debug, Clone, Copy)]
pub struct Entry<S> {
    pub bucket: u32,
    pub way: usize,
    pub slot: S,
}

/// A flow table, mapped.
pub struct FlowTable<B: Layout> {
    name: &'static str,
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
    base: NonNull<u8>,
    len: usize,
    buckets: u32,
    _layout: std::marker::PhantomData<B>,
}

// SAFETY: the mapping is shared memory the kernel also writes; every access goes through
// volatile reads or atomics, never through references the compiler could cache.
unsafe impl<B: Layout> Send for FlowTable<B> {}
// SAFETY: as above.
unsafe impl<B: Layout> Sync for FlowTable<B> {}

impl<B: Layout> FlowTable<B> {
    /// Maps the array `map` (named `name`), which must have `B`-sized values.
    pub fn new(map: Map, name: &'static str) -> Result<Self, DataplaneError> {
        let err = |source| DataplaneError::Map { name, source };
        let Map::Array(data) = map else {
            return Err(err(MapError::InvalidName { name: format!("{name} (not an array map)") }));
        };
        let info = data.info().map_err(err)?;
        let bucket = size_of::<B>();
        if info.value_size() as usize != bucket {
            return Err(err(MapError::InvalidValueSize { size: bucket, expected: info.value_size() as usize }));
        }
        let buckets = info.max_entries();
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (buckets as usize * bucket).div_ceil(page) * page;
        // SAFETY: a shared mapping of an mmapable BPF array, of the array's size; unmapped in
        // Drop, never aliased by a Rust reference.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(err(MapError::IoError(std::io::Error::last_os_error())));
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| err(MapError::IoError(std::io::Error::other("mmap"))))?;
        Ok(Self { name, _map: data, base, len, buckets, _layout: std::marker::PhantomData })
    }

    /// Buckets in the table (a power of two).
    #[must_use]
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    fn slot_ptr(&self, bucket: u32, way: usize) -> *mut u8 {
        debug_assert!(bucket < self.buckets && way < WAYS);
        // SAFETY: within the mapping (bucket < buckets, way < WAYS).
        unsafe { self.base.as_ptr().add(bucket as usize * size_of::<B>() + way * B::SLOT) }
    }

    /// A slot, read word by word, between two reads of its key word: the program clears the
    /// key word before it writes the others and sets it last, so (stores and loads in order,
    /// as on x86) an unchanged key word means the words between belong to that key. A slot
    /// rewritten under every attempt reads as free.
    fn read(&self, bucket: u32, way: usize) -> B::Slot {
        let p = self.slot_ptr(bucket, way).cast::<u64>();
        for _ in 0..4 {
            let mut out = std::mem::MaybeUninit::<B::Slot>::zeroed();
            let to = out.as_mut_ptr().cast::<u64>();
            let key = self.tag_word(bucket, way).load(Ordering::Acquire);
            for i in 0..B::SLOT / 8 {
                // SAFETY: 8-aligned words inside the slot; the copy is plain data of the
                // slot's size.
                unsafe { to.add(i).write(p.add(i).read_volatile()) };
            }
            if self.tag_word(bucket, way).load(Ordering::Acquire) == key {
                // SAFETY: as above; the key word is the one read twice.
                unsafe { to.add(B::KEY_WORD).write(key) };
                // SAFETY: every byte written above; any bit pattern is a valid slot.
                return unsafe { out.assume_init() };
            }
        }
        // SAFETY: all zeroes is a free slot.
        unsafe { std::mem::MaybeUninit::<B::Slot>::zeroed().assume_init() }
    }

    fn tag_word(&self, bucket: u32, way: usize) -> &AtomicU64 {
        // SAFETY: an 8-aligned word of the mapping, which lives as long as self.
        unsafe { AtomicU64::from_ptr(self.slot_ptr(bucket, way).cast::<u64>().add(B::KEY_WORD)) }
    }

    /// Every occupied slot.
    pub fn entries(&self) -> impl Iterator<Item = Entry<B::Slot>> + '_ {
        self.entries_in(0..self.buckets)
    }

    /// The occupied slots of buckets `range`.
    fn entries_in(&self, range: std::ops::Range<u32>) -> impl Iterator<Item = Entry<B::Slot>> + '_ {
        range.flat_map(move |bucket| {
            (0..WAYS).filter_map(move |way| {
                let slot = self.read(bucket, way);
                (slot.tag() != 0).then_some(Entry { bucket, way, slot })
            })
        })
    }

    /// How many slots hold a flow.
    #[must_use]
    pub fn occupied(&self) -> usize {
        self.entries().count()
    }

    /// The buckets of part `part` of `parts` equal parts of the table.
    #[must_use]
    pub fn part(&self, part: u32, parts: u32) -> std::ops::Range<u32> {
        part_of(self.buckets, part, parts)
    }

    /// Frees the slots of buckets `range` whose flow is idle past its timeout at `now` (the
    /// program's clock, in seconds) and returns them. A slot the program changed since it was
    /// read is kept.
    pub fn expire(&self, range: std::ops::Range<u32>, now: u32, t: &Timeouts) -> Vec<B::Slot> {
        self.idle(range, now, t).into_iter().filter(|e| self.free(e)).map(|e| e.slot).collect()
    }

    /// The occupied slots of buckets `range` whose flow is idle past its timeout at `now`, as
    /// read.
    pub fn idle(&self, range: std::ops::Range<u32>, now: u32, t: &Timeouts) -> Vec<Entry<B::Slot>> {
        let now = now as u16;
        self.entries_in(range).filter(|e| flowtab::expired(e.slot.last(), e.slot.flow(), now, t)).collect()
    }

    /// Frees the slot of `e` if it still holds exactly what was read: the program rewrites the
    /// key word (with a newer `last`) whenever it refreshes the flow or places another there,
    /// and then the exchange fails and the slot is kept.
    pub fn free(&self, e: &Entry<B::Slot>) -> bool {
        // SAFETY: a slot is plain data of whole 8-aligned words.
        let key = unsafe { core::ptr::from_ref(&e.slot).cast::<u64>().add(B::KEY_WORD).read() };
        let freed = key & !u64::from(u32::MAX);
        self.tag_word(e.bucket, e.way).compare_exchange(key, freed, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

impl FlowTable<BucketV4> {
    /// Enters a flow as the program would (same buckets, same placement), for the benchmark's
    /// fill. Returns whether it evicted a live flow.
    pub fn insert_v4(&self, key: FlowKeyV4, flow: u32, now: u32, t: &Timeouts) -> bool {
        let now = now as u16;
        let kw = key.words();
        let (saddr, daddr, proto) = (key.saddr, key.daddr, key.proto);
        let ports = u32::from(key.sport) | u32::from(key.dport) << 16;
        let (b1, b2) = flowtab::buckets(flowtab::hash_v4(kw), self.buckets - 1);
        let ways = |b: u32| std::array::from_fn::<SlotV4, WAYS, _>(|w| self.read(b, w));
        let (second, way) = flowtab::place(&ways(b1), &ways(b2), now, t);
        let bucket = if second { b2 } else { b1 };
        let old = self.read(bucket, way);
        let written = SlotV4 { tag: flowtab::tag_v4(daddr, ports, proto), sport: ports as u16, last: now, saddr, flow };
        // SAFETY: an 8-aligned slot of the mapping, written as the program writes it.
        unsafe { flowtab::store(self.slot_ptr(bucket, way).cast(), written.words(), SlotV4::KEY_WORD) };
        old.tag != 0 && !flowtab::expired(old.last, old.flow, now, t)
    }
}

/// Part `part` of `parts` near-equal, consecutive parts of `0..buckets`; parts beyond the last
/// are empty.
#[must_use]
pub fn part_of(buckets: u32, part: u32, parts: u32) -> std::ops::Range<u32> {
    let parts = parts.max(1);
    let at = |p: u32| (u64::from(buckets) * u64::from(p.min(parts)) / u64::from(parts)) as u32;
    at(part)..at(part + 1)
}

impl<B: Layout> Drop for FlowTable<B> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) } != 0 {
            tracing::warn!(map = self.name, "munmap: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::part_of;

    #[test]
    fn parts_cover_every_bucket_once() {
        for (buckets, parts) in [(1u32 << 19, 64u32), (1, 64), (100, 7), (1 << 30, 64), (5, 1)] {
            let mut next = 0;
            for p in 0..parts {
                let r = part_of(buckets, p, parts);
                assert_eq!(r.start, next, "{buckets} buckets, part {p} of {parts}");
                next = r.end;
            }
            assert_eq!(next, buckets);
            assert!(part_of(buckets, parts, parts).is_empty());
        }
        assert_eq!(part_of(1 << 19, 3, 64), 3 * 8192..4 * 8192);
    }
}
