//! Map names, sizes and the layouts of their keys and values.
//!
//! Rules for every type here: `#[repr(C)]`, padding spelled out as `_pad` fields (the kernel
//! compares keys byte by byte, so implicit padding would make equal keys differ), no `bool`,
//! `Option` or enums, and a compile-time size assertion. Addresses and ports are stored exactly
//! as they appear on the wire (network byte order) so the BPF program never swaps bytes.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Map names as they appear in the BPF object.
pub mod names {
    pub const SERVICES_V4: &str = "SERVICES_V4";
    pub const SERVICES_V6: &str = "SERVICES_V6";
    pub const DESTS: &str = "DESTS";
    pub const RING: &str = "RING";
    pub const CURSORS: &str = "CURSORS";
    pub const FLOWS_V4: &str = "FLOWS_V4";
    pub const FLOW_CACHE_V4: &str = "FLOW_CACHE_V4";
    pub const FLOWS_V6: &str = "FLOWS_V6";
    pub const FLOW_CACHE_V6: &str = "FLOW_CACHE_V6";
    pub const PERSIST_V4: &str = "PERSIST_V4";
    pub const PERSIST_V6: &str = "PERSIST_V6";
    pub const FRAGS_V4: &str = "FRAGS_V4";
    pub const FRAGS_V6: &str = "FRAGS_V6";
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    pub const DEST_CONNS: &str = "DEST_CONNS";
    pub const DEST_EXPIRED: &str = "DEST_EXPIRED";
    pub const TIMEOUTS: &str = "TIMEOUTS";
    pub const CLOCK: &str = "CLOCK";
    pub const DEST_STATS: &str = "DEST_STATS";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// The program's global data: only the VIP pre-filter bitmap (`VIP_FILTER`), which the
    /// loader turns into a one-element array map of that name.
    pub const VIP_FILTER: &str = ".bss";
    /// The flow tables' bucket mask, a `.rodata` global the loader sets.
    pub const FLOW_MASK: &str = "FLOW_MASK";
}

/// Virtual services (one per VIP:port:protocol).
pub const MAX_SERVICES: u32 = 1 << 15;
/// Destination (real server) slots across all services.
pub const MAX_DESTS: u32 = 1 << 17;
/// Scheduling ring slots across all services (rings, bucket tables and destination lists).
pub const RING_SLOTS: u32 = 1 << 22;
/// Longest ring one service may use (see [`crate::sched::fit_weights`]).
pub const MAX_RING_PER_SERVICE: u32 = 1 << 16;
/// Default flow-table size (flows per address family; `--flows`): the table has two slots per
/// flow (see `flowtab::buckets_for`).
pub const DEFAULT_FLOWS: u32 = 1 << 20;
/// Fragmented datagrams in flight (per address family).
pub const MAX_FRAGS: u32 = 1 << 16;
/// Persistence templates (per address family).
pub const MAX_PERSIST: u32 = 1 << 18;
/// Slots of the per-CPU flow cache (a power of two; see [`FlowCacheEntry`]).
pub const FLOW_CACHE_SLOTS: u32 = 1 << 16;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 Fragment extension header (RFC 8200 4.5).
pub const IPPROTO_FRAGMENT: u8 = 44;

/// [`Dest::flags`]: the slot holds a real server that may receive packets.
pub const DEST_F_ACTIVE: u32 = 1;

/// [`Service::sched`]: how a new flow picks its real server from `RING[ring_off..][..ring_len]`.
pub mod sched_kind {
    /// rr, wrr: the next entry of the ring, by a per-CPU cursor.
    pub const RING: u8 = 0;
    /// sh: the bucket of the client's address (source hashing).
    pub const SH: u8 = 1;
    /// dh: the bucket of the packet's destination address.
    pub const DH: u8 = 2;
    /// mh: the Maglev bucket of the client's address (and port with `SVC_F_HASH_PORT`).
    pub const MH: u8 = 3;
    /// lc, wlc, sed, nq: the least loaded of the usable destinations listed in the range, by
    /// their connection counts (`DEST_CONNS` - `DEST_EXPIRED`).
    pub const LC: u8 = 4;
    pub const WLC: u8 = 5;
    pub const SED: u8 = 6;
    pub const NQ: u8 = 7;
}

/// The most destinations a connection-count scheduler compares per new flow (a bounded loop in
/// the program); the agent refuses larger services with those schedulers.
pub const MAX_CONN_DESTS: u32 = 256;

/// [`FlowEntry::state`] of a UDP flow (not a TCP state; its timeout is `Timeouts::udp`).
pub const FLOW_STATE_UDP: u8 = 15;

/// [`Service::flags`]: hash the client's port too (IPVS sh-port, mh-port).
pub const SVC_F_HASH_PORT: u8 = 1;

/// Key of `SERVICES_V4`: a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct ServiceKeyV4 {
    /// VIP, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKeyV4 {
    /// Builds a key from host-order values.
    #[must_use]
    pub const fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self { addr: u32::from_ne_bytes(addr.octets()), port: port.to_be(), proto, _pad: 0 }
    }

    #[must_use]
    pub const fn ip(&self) -> Ipv4Addr {
        let o = self.addr.to_ne_bytes();
        Ipv4Addr::new(o[0], o[1], o[2], o[3])
    }

    #[must_use]
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// Ordered as an operator reads them (address, port, protocol), not by wire bytes.
impl Ord for ServiceKeyV4 {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.ip(), self.port(), self.proto).cmp(&(other.ip(), other.port(), other.proto))
    }
}

impl PartialOrd for ServiceKeyV4 {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Value of `SERVICES_V4`.
///
/// The service's scheduling data is `RING[ring_off .. ring_off + ring_len]`, read as `sched`
/// says; an empty one means no usable real server, and new flows are dropped and counted in
/// `SERVICE_STATS[index]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Service {
    /// Index into the per-service arrays (`CURSORS`, `SERVICE_STATS`).
    pub index: u32,
    pub ring_off: u32,
    pub ring_len: u32,
    /// `sched_kind::*`.
    pub sched: u8,
    /// `SVC_F_*`.
    pub flags: u8,
    /// The configured scheduler (the agent's own numbering); the program reads `sched` only.
    /// Kept in the map so that a restarted agent can adopt the service as it is.
    pub algo: u8,
    pub _pad: u8,
    /// Persistence (`persistence_timeout`), in seconds; 0 for none.
    pub persist_timeout: u32,
    /// The sorry server's destination slot, or [`NO_SLOT`]: it takes new flows while the
    /// service has no usable real server.
    pub sorry: u32,
    /// Persistence granularity: the mask applied to the client's address (wire order; an IPv4
    /// service uses the first word).
    pub persist_mask: [u32; 4],
}

/// No destination slot (e.g. [`Service::sorry`] when there is no sorry server).
pub const NO_SLOT: u32 = u32::MAX;

/// Key of `PERSIST_V4`: a persistence template, as IPVS keeps them: the client's network
/// (address & granularity mask), the VIP, the virtual port and the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct PersistKeyV4 {
    pub client: u32,
    pub vip: u32,
    pub vport: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Key of `PERSIST_V6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct PersistKeyV6 {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    pub vport: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Key of `FRAGS_V4`: one fragmented datagram (RFC 791: source, destination, protocol and
/// identification name the fragments of one datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FragKeyV4 {
    pub saddr: u32,
    pub daddr: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Key of `FRAGS_V6` (RFC 8200 4.5: source, destination and the Fragment header's
/// identification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FragKeyV6 {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub id: u32,
}

/// Value of the per-CPU `GLOBAL_STATS` (one element): what the program did that belongs to no
/// service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct GlobalStats {
    /// Later fragments whose first fragment was never seen (passed to the kernel).
    pub orphan_fragments: u64,
    /// ICMP errors about a flow, forwarded to the flow's real server.
    pub icmp_forwarded: u64,
}

/// Value of `PERSIST_V4` / `PERSIST_V6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Persist {
    pub flow: Flow,
    /// When a connection last used the template (seconds of the kernel's coarse monotonic
    /// clock).
    pub last_used: u32,
    pub _pad: u32,
}

/// Key of `SERVICES_V6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct ServiceKeyV6 {
    /// VIP, as on the wire (four native-order words of network-order bytes).
    pub addr: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKeyV6 {
    #[must_use]
    pub const fn new(addr: Ipv6Addr, port: u16, proto: u8) -> Self {
        Self { addr: v6_words(addr), port: port.to_be(), proto, _pad: 0 }
    }

    #[must_use]
    pub const fn ip(&self) -> Ipv6Addr {
        v6_from_words(self.addr)
    }

    #[must_use]
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

impl Ord for ServiceKeyV6 {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.ip(), self.port(), self.proto).cmp(&(other.ip(), other.port(), other.proto))
    }
}

impl PartialOrd for ServiceKeyV6 {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An IPv6 address as the program loads it: four native `u32`s of network-order bytes.
#[must_use]
pub const fn v6_words(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

#[must_use]
pub const fn v6_from_words(w: [u32; 4]) -> Ipv6Addr {
    let (a, b, c, d) = (w[0].to_ne_bytes(), w[1].to_ne_bytes(), w[2].to_ne_bytes(), w[3].to_ne_bytes());
    Ipv6Addr::from_octets([
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3],
    ])
}

/// Value of `DESTS`, indexed by destination slot.
///
/// The two MACs come first and in Ethernet header order, so the program copies both into the
/// frame with three 32-bit moves: keep them so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Dest {
    /// The real server's MAC: the new Ethernet destination.
    pub mac: [u8; 6],
    /// The director interface's MAC: the new Ethernet source.
    pub src_mac: [u8; 6],
    /// Bumped each time the slot is given to another real server, so that flows pinned to the
    /// slot's previous owner are rescheduled instead of following the slot.
    pub generation: u32,
    /// `DEST_F_*`.
    pub flags: u32,
    /// The configured weight (the connection-count schedulers weigh by it).
    pub weight: u32,
    // Below: who owns the slot, never read by the program. A restarted agent reads them to
    // adopt the maps it finds pinned (so that flows keep their slots and generations).
    /// The real server's address, wire-order words (IPv4 in the first word).
    pub addr: [u32; 4],
    /// The real server's port, host order.
    pub port: u16,
    /// 4 or 6; 0 for a free slot.
    pub family: u8,
    /// `DEST_ROLE_*`.
    pub role: u8,
    /// The owning service's index (`Service::index`).
    pub owner: u32,
}

/// [`Dest::role`]: a real server in the service's ring.
pub const DEST_ROLE_MEMBER: u8 = 1;
/// [`Dest::role`]: the service's sorry server.
pub const DEST_ROLE_SORRY: u8 = 2;

/// An IPv4 connection 5-tuple, as on the wire: the two words the program hashes
/// (`flowtab::hash_v4`), as fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKeyV4 {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKeyV4 {
    /// The key from its two little-endian 64-bit words: `saddr | daddr << 32` and
    /// `sport | dport << 16 | proto << 32` (ports as on the wire). Building keys this way lets
    /// the BPF program compare and store them as two registers, with no byte-array padding to
    /// clear (which the compiler would lower to a memset call per packet).
    #[inline(always)]
    #[must_use]
    pub const fn from_words(w: [u64; 2]) -> Self {
        // SAFETY: 16 bytes of plain data either way (size asserted below).
        unsafe { core::mem::transmute::<[u64; 2], Self>(w) }
    }

    #[inline(always)]
    #[must_use]
    pub const fn words(&self) -> [u64; 2] {
        // SAFETY: as above.
        unsafe { core::mem::transmute::<Self, [u64; 2]>(*self) }
    }
}

/// Value of the per-CPU `FLOW_CACHE_V6` (see [`FlowCacheEntry`]): the key as five words
/// (source address, destination address, `ports | proto << 32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct FlowCacheEntryV6 {
    pub key: [u64; 5],
    pub flow: Flow,
    pub refreshed: u32,
    pub state: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

/// Value of the per-CPU `FLOW_CACHE_V4`: an exact-match cache in front of `FLOWS_V4`.
///
/// A direct-mapped array indexed by [`crate::filter::flow_slot_v4`]: a lookup is one array
/// access and a 16-byte compare, with no hashing of the flow table's kind. Open vSwitch's
/// datapath uses the same device (its "exact match cache"). The flow table stays the
/// authority: a hit serves a packet only if the entry was written this second with the state
/// the packet leaves unchanged; anything else (a miss, a collision, a state change, a new
/// second) goes to the table, which so sees every flow's activity once a second. Per-CPU, so
/// an entry is only ever written by the CPU that reads it: no torn reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct FlowCacheEntry {
    pub key: FlowKeyV4,
    pub flow: Flow,
    /// When the entry was written (seconds, the program's clock).
    pub refreshed: u32,
    /// The flow's state (`sched_ext::tcp_state`, or [`FLOW_STATE_UDP`]).
    pub state: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

/// A flow-table entry as the agent reads it (decoded from a `flowtab` slot): the flow's real
/// server, state and last activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct FlowEntry {
    pub flow: Flow,
    /// `sched_ext::tcp_state`, or [`FLOW_STATE_UDP`].
    pub state: u8,
    pub _pad0: u8,
    pub _pad1: u16,
    /// Last activity, seconds of the kernel's coarse monotonic clock (the slot keeps them
    /// modulo 2^16; the reader restores them from its own clock).
    pub last: u32,
}

/// Value of `DEST_CONNS` (updated by the program with atomic adds) and `DEST_EXPIRED`
/// (written by the agent only, for the flows its sweep expired): the destination's
/// connections are the difference, as ipvsadm's ActiveConn / InActConn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ConnCounts {
    pub active: u32,
    pub inactive: u32,
}

/// The destination slot a flow is pinned to, and the generation of the slot then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Flow {
    pub dest: u32,
    /// `Dest::generation` when the flow was scheduled.
    pub generation: u32,
}

/// Value of the per-CPU `DEST_STATS`, indexed by destination slot.
///
/// Per-service totals are the sum over the service's destinations plus `SERVICE_STATS`, so the
/// packet path updates one counter block per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct DestStats {
    pub packets: u64,
    /// IP bytes (Ethernet header excluded), as IPVS counts them.
    pub bytes: u64,
    /// New flows scheduled to this destination ("connections" in `ipvsadm --stats`).
    pub conns: u64,
}

/// Value of the per-CPU `SERVICE_STATS`, indexed by `Service::index`: what the service dropped
/// because it had no usable real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ServiceStats {
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

const _: () = assert!(size_of::<ServiceKeyV4>() == 8);
const _: () = assert!(size_of::<Service>() == 40);
const _: () = assert!(size_of::<PersistKeyV4>() == 12);
const _: () = assert!(size_of::<PersistKeyV6>() == 36);
const _: () = assert!(size_of::<Persist>() == 16);
const _: () = assert!(size_of::<FragKeyV4>() == 12);
const _: () = assert!(size_of::<FragKeyV6>() == 36);
const _: () = assert!(size_of::<GlobalStats>() == 16);
const _: () = assert!(size_of::<Dest>() == 48);
const _: () = assert!(size_of::<ServiceKeyV6>() == 20);
const _: () = assert!(core::mem::offset_of!(Dest, mac) == 0 && core::mem::offset_of!(Dest, src_mac) == 6);
const _: () = assert!(size_of::<FlowKeyV4>() == 16);
const _: () = assert!(size_of::<FlowCacheEntry>() == 32);
const _: () = assert!(size_of::<FlowCacheEntryV6>() == 56);
const _: () = assert!(size_of::<Flow>() == 8);
const _: () = assert!(size_of::<FlowEntry>() == 16);
const _: () = assert!(size_of::<ConnCounts>() == 8);
const _: () = assert!(size_of::<crate::sched_ext::tcp_state::Timeouts>() == 12);
const _: () = assert!(size_of::<DestStats>() == 24);
const _: () = assert!(size_of::<ServiceStats>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::{
        ConnCounts, Dest, DestStats, Flow, FlowCacheEntry, FlowCacheEntryV6, FlowEntry, FlowKeyV4, FragKeyV4,
        FragKeyV6, GlobalStats, Persist, PersistKeyV4, PersistKeyV6, Service, ServiceKeyV4, ServiceKeyV6, ServiceStats,
    };
    // SAFETY: all of these are repr(C), contain only integers and byte arrays, and have no
    // implicit padding (checked by the size assertions above).
    unsafe impl aya::Pod for ServiceKeyV4 {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Dest {}
    unsafe impl aya::Pod for FlowKeyV4 {}
    unsafe impl aya::Pod for FlowCacheEntry {}
    unsafe impl aya::Pod for FlowCacheEntryV6 {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for ServiceKeyV6 {}
    unsafe impl aya::Pod for PersistKeyV4 {}
    unsafe impl aya::Pod for PersistKeyV6 {}
    unsafe impl aya::Pod for Persist {}
    unsafe impl aya::Pod for FragKeyV4 {}
    unsafe impl aya::Pod for FragKeyV6 {}
    unsafe impl aya::Pod for GlobalStats {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for ConnCounts {}
    unsafe impl aya::Pod for crate::sched_ext::tcp_state::Timeouts {}
    unsafe impl aya::Pod for DestStats {}
    unsafe impl aya::Pod for ServiceStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn flow_key_words_match_the_fields() {
        let k = FlowKeyV4 {
            saddr: 0x0a00_000a,
            daddr: 0x0a00_0064,
            sport: 0x1234,
            dport: 0x5000,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let w = [0x0a00_0064_0a00_000a, 0x0000_0006_5000_1234];
        assert_eq!(k.words(), w);
        assert_eq!(FlowKeyV4::from_words(w), k);
    }

    #[test]
    fn v6_words_round_trip() {
        let a: Ipv6Addr = "fd00::77:100".parse().unwrap();
        assert_eq!(v6_from_words(v6_words(a)), a);
        let k = ServiceKeyV6::new(a, 443, IPPROTO_TCP);
        assert_eq!((k.ip(), k.port()), (a, 443));
        assert_eq!(v6_words(a)[3].to_ne_bytes(), [0, 0x77, 0x01, 0x00]);
    }

    #[test]
    fn service_key_is_wire_order() {
        let k = ServiceKeyV4::new(Ipv4Addr::new(10, 0, 0, 100), 80, IPPROTO_TCP);
        assert_eq!(k.addr.to_ne_bytes(), [10, 0, 0, 100]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
        assert_eq!(k.ip(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(k.port(), 80);
    }
}
