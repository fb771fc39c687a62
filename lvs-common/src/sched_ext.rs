//! More IPVS schedulers: source/destination hashing (sh, dh), Maglev (mh), the
//! connection-count family (lc, wlc, sed, nq), and the inbound-only TCP state table that feeds
//! the connection counts.
//!
//! As in [`crate::sched`], the agent builds every table here (no allocation: callers pass the
//! output slices), and the BPF program only does what must happen per new flow: one hash and
//! one table index, or one bounded walk over a service's destinations. Everything the program
//! calls is `#[inline(always)]`, loop-free (or with a constant bound) and integer-only.
//!
//! Differences from IPVS that apply to every scheduler here, on purpose:
//! - IPVS walks destinations in reverse configuration order (`list_add_rcu` at the head, see
//!   [`crate::sched`]); every "list order" below is our `&[..]` order. Callers that want
//!   IPVS-identical tables pass destinations newest first.
//! - The overload flag (upper threshold) is not modelled.
//! - IPVS keeps a destination whose weight dropped to 0 in its hash tables and refuses it at
//!   lookup ("no destination available", or a rehash with the `*-fallback` flags). Our table
//!   builders leave weight-0 destinations out, so their share moves to the others instead of
//!   being dropped.

use crate::sched::gcd_weight;

// ---------------------------------------------------------------------------------------------
// Source and destination hashing (ip_vs_sh.c, ip_vs_dh.c)
// ---------------------------------------------------------------------------------------------

/// Bits of the sh/dh bucket index (IPVS `CONFIG_IP_VS_SH_TAB_BITS` / `CONFIG_IP_VS_DH_TAB_BITS`
/// default 8).
pub const SH_TAB_BITS: u32 = 8;
/// Buckets in an sh or dh table.
pub const SH_TAB_SIZE: u32 = 1 << SH_TAB_BITS;
/// Multiplier of the kernel's `hash_32()` (include/linux/hash.h `GOLDEN_RATIO_32`).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
/// Multiplier of ip_vs_dh.c's hash (Knuth's 2654435761).
const DH_MULT: u32 = 2_654_435_761;

/// Fills the sh bucket table as `ip_vs_sh_reassign` does: destinations are taken round-robin
/// in list order, and each takes `weight` consecutive buckets per turn before the walk moves
/// on. Entries are positions into `weights`. Returns false (and leaves `out` alone) when no
/// destination has a non-zero weight.
///
/// As in IPVS, a weight of 256 or more lets one destination take every remaining bucket, and
/// a destination can get no bucket at all when the weights before it add up to 256: sh
/// weights are meant to be small. Difference: IPVS gives a weight-0 destination one bucket
/// per turn and then refuses it at lookup; we skip it.
pub fn sh_table(weights: &[u32], out: &mut [u32; 256]) -> bool {
    fill_buckets(weights, out, true)
}

/// Fills the dh bucket table as `ip_vs_dh_reassign` does: one bucket per destination per turn,
/// whatever its weight (ip_vs_dh.c reads weights only to refuse weight 0 at lookup, and does
/// not even rebuild its table when a weight changes). Weight-0 destinations are skipped, as
/// for [`sh_table`]. Returns false when no destination has a non-zero weight.
pub fn dh_table(weights: &[u32], out: &mut [u32; 256]) -> bool {
    fill_buckets(weights, out, false)
}

fn fill_buckets(weights: &[u32], out: &mut [u32; 256], weighted: bool) -> bool {
    let next_live = |from: usize| (from..weights.len()).chain(0..from).find(|&i| weights[i] > 0);
    let Some(mut d) = next_live(0) else {
        return false;
    };
    let mut taken = 0;
    for slot in out.iter_mut() {
        *slot = d as u32;
        taken += 1;
        if !weighted || taken >= weights[d] {
            taken = 0;
            d = next_live(d + 1).unwrap_or(d);
        }
    }
    true
}

/// The kernel's `hash_32(key, 8)`: the top 8 bits of `key * GOLDEN_RATIO_32`.
#[inline(always)]
#[must_use]
pub const fn sh_hash(key: u32) -> u32 {
    key.wrapping_mul(GOLDEN_RATIO_32) >> (32 - SH_TAB_BITS)
}

/// Folds an IPv6 address as IPVS does (`ip6[0] ^ ip6[1] ^ ip6[2] ^ ip6[3]`, then `ntohl`).
/// `words` are the address as the program loads it (see [`crate::maps::v6_words`]).
#[inline(always)]
#[must_use]
pub const fn fold_v6(words: [u32; 4]) -> u32 {
    u32::from_be(words[0] ^ words[1] ^ words[2] ^ words[3])
}

/// sh bucket of an IPv4 client (ip_vs_sh.c `ip_vs_sh_hashkey` with port 0 and offset 0):
/// `hash_32(ntohl(saddr), 8)`.
///
/// `saddr_raw` is the address's four octets in network order read as a native `u32` (how the
/// program loads it); `u32::from_be` is the `ntohl` (a byte swap on little-endian hosts).
///
/// Older kernels (before the sh-port and sh-fallback flags, around 3.18) hashed
/// `(ntohl(saddr) * 2654435761) & 255`, the hash dh still uses; we follow the current kernel.
#[inline(always)]
#[must_use]
pub const fn sh_bucket_v4(saddr_raw: u32) -> u32 {
    sh_hash(u32::from_be(saddr_raw))
}

/// sh bucket with the `sh-port` flag: `hash_32(ntohs(sport) + ntohl(saddr), 8)`. `sport_raw`
/// is the port as loaded from the header (network order).
#[inline(always)]
#[must_use]
pub const fn sh_bucket_v4_port(saddr_raw: u32, sport_raw: u16) -> u32 {
    sh_hash(u32::from_be(saddr_raw).wrapping_add(u16::from_be(sport_raw) as u32))
}

/// sh bucket of an IPv6 client: the folded address, then as for IPv4.
#[inline(always)]
#[must_use]
pub const fn sh_bucket_v6(addr_words: [u32; 4]) -> u32 {
    sh_hash(fold_v6(addr_words))
}

/// dh bucket of an IPv4 destination address (ip_vs_dh.c `ip_vs_dh_hashkey`):
/// `(ntohl(daddr) * 2654435761) & 255`. That is IPVS's hash, kept as is: the low 8 bits of a
/// product depend only on the low 8 bits of the address, so the bucket is a permutation of
/// the address's last octet.
///
/// dh keys on the packet's *destination*: on an ordinary service (one VIP) every flow hashes
/// to the same bucket and so goes to one real server. That is IPVS's semantics; dh is meant
/// for fwmark services that cover many destination addresses (transparent cache clusters).
#[inline(always)]
#[must_use]
pub const fn dh_bucket_v4(daddr_raw: u32) -> u32 {
    u32::from_be(daddr_raw).wrapping_mul(DH_MULT) & (SH_TAB_SIZE - 1)
}

/// dh bucket of an IPv6 destination address: the folded address, then as for IPv4.
#[inline(always)]
#[must_use]
pub const fn dh_bucket_v6(addr_words: [u32; 4]) -> u32 {
    fold_v6(addr_words).wrapping_mul(DH_MULT) & (SH_TAB_SIZE - 1)
}

// ---------------------------------------------------------------------------------------------
// Maglev hashing (ip_vs_mh.c)
// ---------------------------------------------------------------------------------------------

/// Table sizes IPVS allows (ip_vs_mh.c `primes[]`, chosen by `CONFIG_IP_VS_MH_TAB_INDEX`
/// 8..=17 as `primes[index - 8]`).
pub const MH_PRIMES: [u32; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];
/// Our Maglev table size: IPVS's default (`CONFIG_IP_VS_MH_TAB_INDEX=12`, 4093 entries). A
/// larger table would keep shares closer for hundreds of servers, at 16x the ring space per
/// service; the default is what operators' IPVS directors run.
pub const MH_TAB_SIZE: u32 = 4093;
/// Most destinations [`mh_table`] accepts per service (its scratch space lives on the stack).
/// Maglev wants `M` about 100 times the number of servers, so this is not a practical limit.
pub const MH_MAX_DESTS: usize = 1024;

/// `hsiphash_key_t` of ip_vs_mh.c `generate_hash_secret`: fixed, so that every director
/// computes the same table.
const MH_KEY1: [u64; 2] = [2_654_435_761, 2_654_435_761];
const MH_KEY2: [u64; 2] = [2_654_446_892, 2_654_446_892];

/// A Maglev destination. Address and port as on the wire, like every map type: `addr` is four
/// native `u32`s of network-order bytes (IPv4: the address in `addr[0]`, the rest 0), `port`
/// the network-order port as loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MhDest {
    pub addr: [u32; 4],
    pub port: u16,
    pub weight: u32,
}

/// One SipHash round (lib/siphash.c `SIPROUND`).
#[inline(always)]
const fn sip_round(mut v: [u64; 4]) -> [u64; 4] {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
    v
}

/// SipHash-C-D of the 4-byte little-endian message `m`, 64-bit result.
#[inline(always)]
const fn siphash_u32<const C: usize, const D: usize>(m: u32, key: [u64; 2]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key[0],
        0x646f_7261_6e64_6f6d ^ key[1],
        0x6c79_6765_6e65_7261 ^ key[0],
        0x7465_6462_7974_6573 ^ key[1],
    ];
    let b = (4u64 << 56) | m as u64;
    v[3] ^= b;
    let mut i = 0;
    while i < C {
        v = sip_round(v);
        i += 1;
    }
    v[0] ^= b;
    v[2] ^= 0xff;
    let mut i = 0;
    while i < D {
        v = sip_round(v);
        i += 1;
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The kernel's `hsiphash(&v, 4, key)` on 64-bit hosts, where it is SipHash-1-3 truncated to
/// 32 bits (lib/siphash.c). `v` is hashed as the little-endian host stores it.
#[inline(always)]
#[must_use]
const fn hsiphash_u32(v: u32, key: [u64; 2]) -> u32 {
    siphash_u32::<1, 3>(v, key) as u32
}

/// The value ip_vs_mh.c `ip_vs_mh_hashkey` hashes: `ntohs(port) + ntohl(folded address)`.
#[inline(always)]
#[must_use]
pub const fn mh_key(addr_words: [u32; 4], port_raw: u16) -> u32 {
    fold_v6(addr_words).wrapping_add(u16::from_be(port_raw) as u32)
}

/// Fills a Maglev lookup table as `ip_vs_mh_permutate` + `ip_vs_mh_populate` do. `out.len()`
/// is the table size `M` and must be one of [`MH_PRIMES`] (normally [`MH_TAB_SIZE`]). Entries
/// are positions into `dests`.
///
/// Per destination: `offset = hash1 % M`, `skip = hash2 % (M - 1) + 1` over [`mh_key`], and
/// `turns = (weight / gcd) >> rshift` (at least 1 for a non-zero weight), where `rshift`
/// brings the largest `weight / gcd` down to `CONFIG_IP_VS_MH_TAB_INDEX / 2` bits. Then, until
/// the table is full, each destination in list order claims `turns` entries, each the next
/// free one of its permutation `offset, offset + skip, ...` (mod `M`).
///
/// Returns false, leaving `out` alone, when `M` is not an allowed prime, there are more than
/// [`MH_MAX_DESTS`] or `M` destinations, or no weight is non-zero.
///
/// The table depends on the order of `dests`, as in IPVS: who claims first wins contested
/// entries. Every director must pass the same list in the same order (the agent keeps
/// configuration order). Differences from IPVS:
/// - hashes are IPVS's (SipHash-1-3 with ip_vs_mh.c's fixed keys, as on 64-bit kernels;
///   written from lib/siphash.c, not checked against a kernel-built table), so with the list
///   in IPVS order the table should match IPVS's;
/// - IPVS builds from `last_weight`, the last non-zero weight, so quiescing a server (weight
///   0) keeps the table and only refuses that server at lookup. We use `weight` as given:
///   weight 0 takes no entry. The agent can pass the last non-zero weight to get IPVS's
///   behaviour.
pub fn mh_table(dests: &[MhDest], out: &mut [u32]) -> bool {
    #[derive(Clone, Copy)]
    struct Setup {
        perm: u32,
        skip: u32,
        turns: u32,
    }
    const EMPTY: u32 = u32::MAX;

    let m = out.len() as u32;
    let Some(index) = MH_PRIMES.iter().position(|&p| p == m) else {
        return false;
    };
    if dests.len() > MH_MAX_DESTS || dests.len() > out.len() {
        return false;
    }
    let mut weights = [0u32; MH_MAX_DESTS];
    for (w, d) in weights.iter_mut().zip(dests) {
        *w = d.weight;
    }
    let weights = &weights[..dests.len()];
    let gcd = gcd_weight(weights);
    if gcd == 0 {
        return false;
    }
    // ip_vs_mh_shift_weight: IP_VS_MH_TAB_BITS is CONFIG_IP_VS_MH_TAB_INDEX / 2.
    let tab_bits = (index as u32 + 8) / 2;
    let max = weights.iter().copied().max().unwrap_or(0) / gcd;
    let rshift = (32 - max.leading_zeros()).saturating_sub(tab_bits);

    let mut setup = [Setup { perm: 0, skip: 0, turns: 0 }; MH_MAX_DESTS];
    for (s, d) in setup.iter_mut().zip(dests) {
        let key = mh_key(d.addr, d.port);
        s.perm = hsiphash_u32(key, MH_KEY1) % m;
        s.skip = hsiphash_u32(key, MH_KEY2) % (m - 1) + 1;
        s.turns = match (d.weight / gcd) >> rshift {
            0 => u32::from(d.weight != 0),
            t => t,
        };
    }
    let setup = &mut setup[..dests.len()];

    out.fill(EMPTY);
    let mut filled = 0;
    loop {
        for (i, s) in setup.iter_mut().enumerate() {
            for _ in 0..s.turns {
                // M is prime and 0 < skip < M, so the permutation reaches every free entry.
                let mut c = s.perm;
                while out[c as usize] != EMPTY {
                    c += s.skip;
                    if c >= m {
                        c -= m;
                    }
                }
                s.perm = c;
                out[c as usize] = i as u32;
                filled += 1;
                if filled == m {
                    return true;
                }
            }
        }
    }
}

/// Maglev entry for an IPv4 client (ip_vs_mh.c `ip_vs_mh_get`): `hash1(ntohs(sport) +
/// ntohl(saddr)) % m`, with the source port only when the service has the `mh-port` flag.
/// `m` is the table length; one (unsigned) modulo per new flow is cheap in BPF. `m == 0`
/// gives 0.
///
/// The `mh-fallback` flag (rehash when the entry's server is unavailable) is not provided:
/// our tables never hold unavailable servers.
#[inline(always)]
#[must_use]
pub const fn mh_bucket_v4(saddr_raw: u32, sport_raw: u16, with_port: bool, m: u32) -> u32 {
    mh_lookup(u32::from_be(saddr_raw), sport_raw, with_port, m)
}

/// Maglev entry for an IPv6 client: the folded address, then as for IPv4.
#[inline(always)]
#[must_use]
pub const fn mh_bucket_v6(addr_words: [u32; 4], sport_raw: u16, with_port: bool, m: u32) -> u32 {
    mh_lookup(fold_v6(addr_words), sport_raw, with_port, m)
}

#[inline(always)]
const fn mh_lookup(addr: u32, sport_raw: u16, with_port: bool, m: u32) -> u32 {
    let port = if with_port { u16::from_be(sport_raw) as u32 } else { 0 };
    match hsiphash_u32(addr.wrapping_add(port), MH_KEY1).checked_rem(m) {
        Some(r) => r,
        None => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Connection-count schedulers (ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c)
// ---------------------------------------------------------------------------------------------

/// A destination's load as the connection-count schedulers see it: ipvsadm's ActiveConn and
/// InActConn (see [`tcp_state::is_active`]) and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnLoad {
    pub active: u32,
    pub inactive: u32,
    pub weight: u32,
}

/// Whether a destination may get new flows (IPVS also checks the overload flag; not modelled).
#[inline(always)]
#[must_use]
pub const fn usable(d: &ConnLoad) -> bool {
    d.weight > 0
}

/// `ip_vs_dest_conn_overhead`: `(active << 8) + inactive`. IPVS computes it in an `int`, which
/// wraps past 2^23 active connections; we saturate at `u32::MAX` instead, which keeps the
/// weighted products below within `u64`.
#[inline(always)]
#[must_use]
pub const fn lc_overhead(d: &ConnLoad) -> u64 {
    let oh = ((d.active as u64) << 8) + d.inactive as u64;
    if oh > u32::MAX as u64 { u32::MAX as u64 } else { oh }
}

/// sed/nq overhead (`ip_vs_sed_dest_overhead`): `active + 1`; inactive connections are ignored.
#[inline(always)]
#[must_use]
pub const fn sed_overhead(d: &ConnLoad) -> u64 {
    d.active as u64 + 1
}

/// `h1 / w1 > h2 / w2` without division, as the kernel writes it: `h1 * w2 > h2 * w1`.
#[inline(always)]
const fn heavier(best_oh: u64, best_w: u32, cand_oh: u64, cand_w: u32) -> bool {
    best_oh * cand_w as u64 > cand_oh * best_w as u64
}

/// lc step: `cand` replaces the current `best` (ip_vs_lc.c: `doh < loh`; weight only matters
/// as 0 = skip). Strictly less, so ties keep the first in list order.
#[inline(always)]
#[must_use]
pub const fn better_lc(cand: &ConnLoad, best: &ConnLoad) -> bool {
    usable(cand) && lc_overhead(cand) < lc_overhead(best)
}

/// wlc step (ip_vs_wlc.c): `loh * cand.weight > doh * best.weight`.
#[inline(always)]
#[must_use]
pub const fn better_wlc(cand: &ConnLoad, best: &ConnLoad) -> bool {
    usable(cand) && heavier(lc_overhead(best), best.weight, lc_overhead(cand), cand.weight)
}

/// sed step (ip_vs_sed.c): as wlc with overhead `active + 1`.
#[inline(always)]
#[must_use]
pub const fn better_sed(cand: &ConnLoad, best: &ConnLoad) -> bool {
    usable(cand) && heavier(sed_overhead(best), best.weight, sed_overhead(cand), cand.weight)
}

/// nq step (ip_vs_nq.c): the first idle destination (no active connection) wins outright,
/// otherwise as sed. The kernel returns from its loop at the first idle destination; here an
/// idle `best` is simply never replaced, and an idle `cand` replaces any busy `best`, so a
/// loop without early exit gives the same answer.
#[inline(always)]
#[must_use]
pub const fn better_nq(cand: &ConnLoad, best: &ConnLoad) -> bool {
    usable(cand) && best.active != 0 && (cand.active == 0 || better_sed(cand, best))
}

/// The kernel's walk, shared by all four: the first usable destination, then every later one
/// that is `better`. The BPF program runs the same loop over its bounded destination array:
/// `if best is none { if usable(d) { best = i } } else if better(d, best) { best = i }`.
#[inline(always)]
fn select(loads: &[ConnLoad], better: impl Fn(&ConnLoad, &ConnLoad) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, d) in loads.iter().enumerate() {
        best = match best {
            None if usable(d) => Some(i),
            Some(b) if better(d, &loads[b]) => Some(i),
            keep => keep,
        };
    }
    best
}

/// Least-connection (ip_vs_lc.c). `None` when no destination has a non-zero weight.
#[must_use]
pub fn select_lc(loads: &[ConnLoad]) -> Option<usize> {
    select(loads, better_lc)
}

/// Weighted least-connection (ip_vs_wlc.c).
#[must_use]
pub fn select_wlc(loads: &[ConnLoad]) -> Option<usize> {
    select(loads, better_wlc)
}

/// Shortest expected delay (ip_vs_sed.c).
#[must_use]
pub fn select_sed(loads: &[ConnLoad]) -> Option<usize> {
    select(loads, better_sed)
}

/// Never queue (ip_vs_nq.c).
#[must_use]
pub fn select_nq(loads: &[ConnLoad]) -> Option<usize> {
    select(loads, better_nq)
}

// ---------------------------------------------------------------------------------------------
// Inbound-only TCP state tracking (ip_vs_proto_tcp.c)
// ---------------------------------------------------------------------------------------------

/// TCP connection states as IPVS tracks them when it sees only client-to-server packets (DR
/// and TUN: `IP_VS_CONN_F_NOOUTPUT`, the `INPUT-ONLY` rows of `tcp_states[]`; the
/// `secure_tcp` rows of `tcp_states_dos[]` are not modelled).
///
/// State numbers are IPVS's (`IP_VS_TCP_S_*`), so `ipvsadm -lc` names map one to one. Only the
/// states the input-only rows reach from `NONE` have names here; `next` still follows the
/// kernel's row for any IPVS state number, and leaves numbers past `SYNACK` unchanged.
///
/// Deliberate difference: a connection first seen mid-stream (no SYN; `NONE` + ACK) is
/// accepted as `ESTABLISHED`. The table says so too, but IPVS only creates such a connection
/// with `sloppy_tcp` set; we always do, so that flows keep going after a director failover.
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const TIME_WAIT: u8 = 5;
    pub const CLOSE: u8 = 6;

    // Unreachable from NONE in the input-only rows; named for the table only. (SYNACK, 10,
    // is never a next state in these rows.)
    const SYN_SENT: u8 = 2;
    const CLOSE_WAIT: u8 = 7;
    const LAST_ACK: u8 = 8;
    const LISTEN: u8 = 9;
    /// Number of IPVS TCP states (`IP_VS_TCP_S_LAST`).
    const COUNT: u8 = 11;

    pub const TCP_FIN: u8 = 0x01;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_RST: u8 = 0x04;
    pub const TCP_ACK: u8 = 0x10;

    const S_ES: u8 = ESTABLISHED;
    const S_SS: u8 = SYN_SENT;
    const S_SR: u8 = SYN_RECV;
    const S_FW: u8 = FIN_WAIT;
    const S_TW: u8 = TIME_WAIT;
    const S_CL: u8 = CLOSE;
    const S_CW: u8 = CLOSE_WAIT;
    const S_LA: u8 = LAST_ACK;
    const S_LI: u8 = LISTEN;

    // INPUT-ONLY rows of ip_vs_proto_tcp.c `tcp_states[]`, copied as they are; columns are
    //         sNO,  sES,  sSS,  sSR,  sFW,  sTW,  sCL,  sCW,  sLA,  sLI,  sSA
    const SYN: [u8; 11] = [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR];
    const FIN: [u8; 11] = [S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW];
    const ACK: [u8; 11] = [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES];
    const RST: [u8; 11] = [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL];

    /// A row packed as 4-bit next states, so a transition is a shift and a mask, no load.
    const fn pack(row: [u8; 11]) -> u64 {
        let mut packed = 0;
        let mut i = 0;
        while i < row.len() {
            packed |= (row[i] as u64) << (4 * i);
            i += 1;
        }
        packed
    }
    const SYN_ROW: u64 = pack(SYN);
    const FIN_ROW: u64 = pack(FIN);
    const ACK_ROW: u64 = pack(ACK);
    const RST_ROW: u64 = pack(RST);

    /// The state after a client-to-server segment with TCP flags byte `flags`. One flag picks
    /// the row, in `tcp_state_idx` priority: RST, then SYN, then FIN, then ACK; a segment with
    /// none of them leaves the state unchanged, as in IPVS.
    #[inline(always)]
    #[must_use]
    pub const fn next(state: u8, flags: u8) -> u8 {
        let row = if flags & TCP_RST != 0 {
            RST_ROW
        } else if flags & TCP_SYN != 0 {
            SYN_ROW
        } else if flags & TCP_FIN != 0 {
            FIN_ROW
        } else if flags & TCP_ACK != 0 {
            ACK_ROW
        } else {
            return state;
        };
        if state >= COUNT {
            return state;
        }
        ((row >> (4 * state as u32)) & 0xf) as u8
    }

    /// The state's name as `ipvsadm -lnc` prints it (IPVS's `tcp_state_name_table`).
    #[must_use]
    pub const fn name(state: u8) -> &'static str {
        match state {
            NONE => "NONE",
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT => "FIN_WAIT",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            10 => "SYNACK",
            _ => "ERR!",
        }
    }

    /// Whether the connection counts in ActiveConn (IPVS: only `ESTABLISHED`); every other
    /// live state counts in InActConn.
    #[inline(always)]
    #[must_use]
    pub const fn is_active(state: u8) -> bool {
        state == ESTABLISHED
    }

    /// IPVS's default `tcp_timeouts[]` in seconds, by state number.
    pub const DEFAULT_TIMEOUTS: [u32; 11] = [
        2,       // NONE
        15 * 60, // ESTABLISHED: `ipvsadm --set` tcp
        2 * 60,  // SYN_SENT
        60,      // SYN_RECV
        2 * 60,  // FIN_WAIT: `ipvsadm --set` tcpfin
        2 * 60,  // TIME_WAIT
        10,      // CLOSE
        60,      // CLOSE_WAIT
        30,      // LAST_ACK
        2 * 60,  // LISTEN
        2 * 60,  // SYNACK
    ];
    /// IPVS's default UDP timeout (ip_vs_proto_udp.c `IP_VS_UDP_S_NORMAL`), seconds.
    pub const UDP_TIMEOUT: u32 = 5 * 60;

    /// The three timeouts `ipvsadm --set tcp tcpfin udp` changes, in seconds (ip_vs_ctl.c
    /// `ip_vs_set_timeout`: tcp is ESTABLISHED, tcpfin is FIN_WAIT, udp is UDP's only state).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(C)]
    pub struct Timeouts {
        pub tcp: u32,
        pub tcpfin: u32,
        pub udp: u32,
    }

    impl Timeouts {
        /// IPVS defaults: `ipvsadm --set 900 120 300`.
        pub const DEFAULT: Self = Self { tcp: DEFAULT_TIMEOUTS[1], tcpfin: DEFAULT_TIMEOUTS[4], udp: UDP_TIMEOUT };
    }

    impl Default for Timeouts {
        fn default() -> Self {
            Self::DEFAULT
        }
    }

    /// Idle timeout of a TCP connection in `state`, in seconds. Unknown states get CLOSE's.
    #[inline(always)]
    #[must_use]
    pub const fn timeout(state: u8, t: &Timeouts) -> u32 {
        match state {
            ESTABLISHED => t.tcp,
            FIN_WAIT => t.tcpfin,
            // The defaults as bytes packed in two words, read with shifts: an indexed load
            // from a table is an access the BPF verifier cannot always bound.
            s if s < 8 => ((DEFAULTS_LO >> (8 * s as u32)) & 0xff) as u32,
            s if s < COUNT => ((DEFAULTS_HI >> (8 * (s - 8) as u32)) & 0xff) as u32,
            _ => DEFAULT_TIMEOUTS[CLOSE as usize],
        }
    }

    /// [`DEFAULT_TIMEOUTS`] packed a byte each. ESTABLISHED (900 s) and FIN_WAIT are never
    /// read from here (they come from [`Timeouts`]) and pack as 0; every other default fits.
    const fn pack_bytes(from: usize, to: usize) -> u64 {
        let mut packed = 0u64;
        let mut i = from;
        while i < to {
            let v = if i == ESTABLISHED as usize || i == FIN_WAIT as usize { 0 } else { DEFAULT_TIMEOUTS[i] };
            assert!(v < 256);
            packed |= (v as u64) << (8 * (i - from));
            i += 1;
        }
        packed
    }
    const DEFAULTS_LO: u64 = pack_bytes(0, 8);
    const DEFAULTS_HI: u64 = pack_bytes(8, COUNT as usize);
}

// Compile-time checks.
const _: () = {
    assert!(MH_PRIMES[12 - 8] == MH_TAB_SIZE);
    assert!(MH_MAX_DESTS < MH_TAB_SIZE as usize);
    assert!(sh_hash(u32::MAX) < SH_TAB_SIZE);
    assert!(tcp_state::next(tcp_state::NONE, tcp_state::TCP_SYN) == tcp_state::SYN_RECV);
    assert!(tcp_state::next(tcp_state::SYN_RECV, tcp_state::TCP_ACK) == tcp_state::ESTABLISHED);
};

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::tcp_state::*;
    use super::*;

    const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_ne_bytes([a, b, c, d])
    }

    // --- sh / dh

    #[test]
    fn sh_table_gives_weight_buckets_per_turn() {
        let mut t = [0; 256];
        assert!(sh_table(&[1, 2, 0, 3], &mut t));
        assert_eq!(&t[..12], &[0, 1, 1, 3, 3, 3, 0, 1, 1, 3, 3, 3]);
        // 256 = 42 * 6 + 4: the last partial turn is 0, 1, 1, 3.
        assert_eq!(&t[252..], &[0, 1, 1, 3]);
        assert!(!t.contains(&2));

        assert!(sh_table(&[0, 300, 1], &mut t), "a weight >= 256 takes every bucket, as in IPVS");
        assert!(t.iter().all(|&d| d == 1));
        assert!(!sh_table(&[0, 0], &mut t));
        assert!(!sh_table(&[], &mut t));
    }

    #[test]
    fn dh_table_ignores_weights() {
        let mut t = [9; 256];
        assert!(dh_table(&[5, 0, 1], &mut t));
        assert!(t.chunks(2).all(|c| c == [0, 2]));
        assert!(!dh_table(&[0], &mut t));
        assert_eq!(t[0], 0, "a failed build leaves the table alone");
    }

    #[test]
    fn sh_and_dh_hashes_match_the_kernel_formulas() {
        // hash_32(0x0a000001, 8): 0x0a000001 * 0x61c88647 = 0x27c88647 (mod 2^32) -> 0x27.
        assert_eq!(sh_bucket_v4(v4(10, 0, 0, 1)), 0x27);
        assert_eq!(sh_bucket_v4_port(v4(10, 0, 0, 1), 0), 0x27);
        let port = 80u16.to_be();
        assert_eq!(sh_bucket_v4_port(v4(10, 0, 0, 1), port), sh_hash(0x0a00_0001 + 80));
        // dh: low byte of last octet * 0xb1.
        assert_eq!(dh_bucket_v4(v4(10, 0, 0, 1)), 0xb1);
        assert_eq!(dh_bucket_v4(v4(192, 168, 7, 2)), 0x62);
        // IPv6 folds to the IPv4 formula.
        let w = crate::maps::v6_words("2001:db8::1".parse().unwrap());
        let folded = u32::from_ne_bytes(0x2001_0db8u32.to_be_bytes()) ^ u32::from_ne_bytes(1u32.to_be_bytes());
        assert_eq!(sh_bucket_v6(w), sh_bucket_v4(folded));
        assert_eq!(dh_bucket_v6(w), dh_bucket_v4(folded));
        assert_eq!(sh_bucket_v6([v4(10, 0, 0, 1), 0, 0, 0]), 0x27);
    }

    #[test]
    fn sh_spreads_clients() {
        let mut hits = [0u32; 256];
        for i in 0..65536u32 {
            hits[sh_bucket_v4(v4(10, 1, (i >> 8) as u8, i as u8)) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| h > 128 && h < 384), "{hits:?}");
    }

    // --- mh

    fn dest(i: u32, weight: u32) -> MhDest {
        MhDest { addr: [v4(10, 0, (i >> 8) as u8, i as u8), 0, 0, 0], port: 80u16.to_be(), weight }
    }

    fn mh(dests: &[MhDest]) -> Vec<u32> {
        let mut t = vec![0; MH_TAB_SIZE as usize];
        assert!(mh_table(dests, &mut t));
        t
    }

    fn shares(t: &[u32], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &d in t {
            c[d as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / t.len() as f64).collect()
    }

    #[test]
    fn siphash_matches_std_siphash_2_4() {
        // The same code with 2-4 rounds must be standard SipHash-2-4; IPVS uses 1-3.
        #[allow(deprecated)]
        use std::hash::{Hasher, SipHasher};
        for (m, k0, k1) in [(0u32, 0u64, 0u64), (0x0a00_0050, 2_654_435_761, 2_654_435_761), (u32::MAX, 1, 2)] {
            #[allow(deprecated)]
            let mut h = SipHasher::new_with_keys(k0, k1);
            h.write(&m.to_le_bytes());
            assert_eq!(siphash_u32::<2, 4>(m, [k0, k1]), h.finish());
        }
    }

    #[test]
    fn hsiphash_known_answers() {
        // SipHash-1-3 of the 4-byte LE message with ip_vs_mh.c's keys, truncated to 32 bits,
        // computed with an independent implementation (PyPI `siphash24`, `siphash13`).
        assert_eq!(hsiphash_u32(0, MH_KEY1), 0x1d5a_77c2);
        assert_eq!(hsiphash_u32(0x0a00_0001, MH_KEY1), 0x0308_0ce4);
        assert_eq!(hsiphash_u32(0xdead_beef, MH_KEY1), 0xf605_cd1f);
        assert_eq!(hsiphash_u32(0x0a00_0001, MH_KEY2), 0x48f9_d0c1);
        assert_eq!(mh_bucket_v4(v4(10, 0, 0, 1), 0, false, MH_TAB_SIZE), 0x0308_0ce4 % MH_TAB_SIZE);
    }

    #[test]
    fn mh_fills_every_entry_in_proportion() {
        let dests = [dest(1, 1), dest(2, 2), dest(3, 0), dest(4, 3), dest(5, 4)];
        let t = mh(&dests);
        assert!(t.iter().all(|&d| (d as usize) < dests.len()));
        let s = shares(&t, dests.len());
        for (d, share) in dests.iter().zip(&s) {
            assert!((share - f64::from(d.weight) / 10.0).abs() < 0.01, "{s:?}");
        }
        assert_eq!(s[2], 0.0);
        assert_eq!(t, mh(&dests), "deterministic");
    }

    #[test]
    fn mh_disrupts_about_one_nth() {
        let n = 10;
        let all: Vec<MhDest> = (0..n).map(|i| dest(i, 1)).collect();
        let before = mh(&all);
        let mut fewer = all.clone();
        fewer.remove(3);
        let after = mh(&fewer);
        // Compare servers, not positions (positions shift after the removed one).
        let changed = before.iter().zip(&after).filter(|&(&b, &a)| all[b as usize] != fewer[a as usize]).count();
        let frac = changed as f64 / f64::from(MH_TAB_SIZE);
        assert!(frac < 1.0 / f64::from(n) + 0.02, "{frac}");
        assert!(frac >= 1.0 / f64::from(n) - 0.01, "the removed server's share must move: {frac}");
    }

    #[test]
    fn mh_depends_on_list_order() {
        let a: Vec<MhDest> = (0..5).map(|i| dest(i, 1)).collect();
        let mut b = a.clone();
        b.reverse();
        let (ta, tb) = (mh(&a), mh(&b));
        let differ = ta.iter().zip(&tb).filter(|&(&x, &y)| a[x as usize] != b[y as usize]).count();
        // Same set, other order: a different (equally balanced) table.
        assert!(differ > 0);
        assert!(differ < ta.len() / 2, "{differ}");
    }

    #[test]
    fn mh_scales_down_huge_weights_like_ipvs() {
        // Index 12: 6 bits of weight/gcd. 1000 needs 10, so rshift = 4 and turns are 1 and 62.
        let t = mh(&[dest(1, 1), dest(2, 1000)]);
        let s = shares(&t, 2);
        assert!((s[0] - 1.0 / 63.0).abs() < 0.001, "{s:?}");
    }

    #[test]
    fn mh_rejects_bad_input() {
        assert!(!mh_table(&[dest(1, 1)], &mut vec![0; 1000]), "M must be an IPVS prime");
        assert!(!mh_table(&[dest(1, 0)], &mut vec![0; 251]));
        assert!(!mh_table(&[], &mut vec![0; 251]));
        let many: Vec<MhDest> = (0..252).map(|i| dest(i, 1)).collect();
        assert!(!mh_table(&many, &mut vec![0; 251]), "more servers than entries");
        assert!(mh_table(&many[..251], &mut vec![0; 251]));
    }

    #[test]
    fn mh_lookup_spreads_and_uses_the_port_only_when_asked() {
        let m = MH_TAB_SIZE;
        let mut hits = vec![0u32; 16];
        for i in 0..65536u32 {
            let b = mh_bucket_v4(v4(172, 16, (i >> 8) as u8, i as u8), 0, false, m);
            assert!(b < m);
            hits[(b * 16 / m) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| h > 3700 && h < 4500), "{hits:?}");
        let c = v4(172, 16, 0, 9);
        assert_eq!(mh_bucket_v4(c, 1234u16.to_be(), false, m), mh_bucket_v4(c, 0, false, m));
        assert_ne!(mh_bucket_v4(c, 1234u16.to_be(), true, m), mh_bucket_v4(c, 0, true, m));
        assert_eq!(mh_bucket_v6([c, 0, 0, 0], 0, false, m), mh_bucket_v4(c, 0, false, m));
        assert_eq!(mh_bucket_v4(c, 0, false, 0), 0);
    }

    // --- lc, wlc, sed, nq

    const fn load(active: u32, inactive: u32, weight: u32) -> ConnLoad {
        ConnLoad { active, inactive, weight }
    }

    #[test]
    fn lc_counts_connections_and_ignores_weights() {
        // Overheads: 2*256+0 = 512, 1*256+300 = 556, 1*256+10 = 266.
        assert_eq!(select_lc(&[load(2, 0, 1), load(1, 300, 1), load(1, 10, 100)]), Some(2));
        assert_eq!(select_lc(&[load(1, 0, 1), load(1, 0, 5)]), Some(0), "tie: first wins");
        assert_eq!(select_lc(&[load(0, 0, 0), load(5, 5, 1)]), Some(1), "weight 0 is skipped");
        assert_eq!(select_lc(&[load(0, 0, 0)]), None);
        assert_eq!(select_lc(&[]), None);
    }

    #[test]
    fn wlc_divides_by_weight() {
        // 512/1 vs 768/3 = 256 vs 256/1: the second is lighter, the third ties with it.
        assert_eq!(select_wlc(&[load(2, 0, 1), load(3, 0, 3), load(1, 0, 1)]), Some(1));
        // Inactive connections count 1/256 of an active one.
        assert_eq!(select_wlc(&[load(1, 10, 2), load(1, 0, 2)]), Some(1));
        assert_eq!(select_wlc(&[load(0, 0, 0), load(9, 0, 1), load(9, 0, 0)]), Some(1));
        assert_eq!(select_wlc(&[load(0, 0, 0), load(0, 0, 0)]), None);
        // Saturated overheads still compare without overflow.
        assert_eq!(select_wlc(&[load(u32::MAX, u32::MAX, u32::MAX), load(u32::MAX, 0, 1)]), Some(0));
    }

    #[test]
    fn sed_uses_active_plus_one() {
        // (0+1)/1 = 1 vs (2+1)/4 = 0.75: sed picks the weighted one; lc would pick the idle one.
        let loads = [load(0, 0, 1), load(2, 0, 4)];
        assert_eq!(select_sed(&loads), Some(1));
        assert_eq!(select_lc(&loads), Some(0));
        // Inactive connections do not count; (1+1)/2 ties with (0+1)/1: first wins.
        assert_eq!(select_sed(&[load(1, 1000, 2), load(0, 0, 1)]), Some(0));
    }

    #[test]
    fn nq_takes_the_first_idle_server() {
        // sed would pick index 1 (0.75 < 1); nq takes the idle one.
        assert_eq!(select_nq(&[load(0, 0, 1), load(2, 0, 4)]), Some(0));
        assert_eq!(select_nq(&[load(2, 0, 4), load(0, 50, 1), load(0, 0, 9)]), Some(1), "first idle");
        assert_eq!(select_nq(&[load(0, 0, 0), load(3, 0, 1), load(1, 0, 1)]), Some(2), "else sed");
        assert_eq!(select_nq(&[load(1, 0, 1), load(1, 0, 1)]), Some(0));
    }

    /// The kernel's nq loop, with its early return, against the per-element form.
    #[test]
    fn nq_step_form_matches_the_early_return_loop() {
        fn kernel_nq(l: &[ConnLoad]) -> Option<usize> {
            let mut least: Option<usize> = None;
            for (i, d) in l.iter().enumerate() {
                if d.weight == 0 {
                    continue;
                }
                if d.active == 0 {
                    return Some(i);
                }
                if least.is_none_or(|b| {
                    sed_overhead(&l[b]) * u64::from(d.weight) > sed_overhead(d) * u64::from(l[b].weight)
                }) {
                    least = Some(i);
                }
            }
            least
        }
        let mut x = 12345u32;
        let mut rnd = |n: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        for _ in 0..2000 {
            let l: Vec<ConnLoad> = (0..rnd(6)).map(|_| load(rnd(4), rnd(3), rnd(4))).collect();
            assert_eq!(select_nq(&l), kernel_nq(&l), "{l:?}");
        }
    }

    // --- TCP states

    fn walk(flags: &[u8]) -> Vec<u8> {
        let mut s = NONE;
        flags
            .iter()
            .map(|&f| {
                s = next(s, f);
                s
            })
            .collect()
    }

    const PSH: u8 = 0x08;

    #[test]
    fn normal_connection() {
        let fin_ack = TCP_FIN | TCP_ACK;
        let states = walk(&[TCP_SYN, TCP_ACK, TCP_ACK | PSH, TCP_ACK, fin_ack, TCP_ACK]);
        assert_eq!(states, [SYN_RECV, ESTABLISHED, ESTABLISHED, ESTABLISHED, FIN_WAIT, FIN_WAIT]);
        assert!(is_active(ESTABLISHED));
        assert!(!is_active(SYN_RECV) && !is_active(FIN_WAIT) && !is_active(NONE));
    }

    #[test]
    fn rst_paths() {
        assert_eq!(next(ESTABLISHED, TCP_RST), CLOSE);
        assert_eq!(next(ESTABLISHED, TCP_RST | TCP_ACK), CLOSE, "RST beats ACK");
        assert_eq!(next(FIN_WAIT, TCP_RST), CLOSE);
        assert_eq!(next(NONE, TCP_RST), CLOSE);
        // IPVS quirk: a RST during the handshake keeps SYN_RECV (and its 60 s timeout).
        assert_eq!(next(SYN_RECV, TCP_RST), SYN_RECV);
        assert_eq!(next(SYN_RECV, TCP_RST | TCP_SYN), SYN_RECV);
    }

    #[test]
    fn syn_retransmit_and_reuse() {
        assert_eq!(walk(&[TCP_SYN, TCP_SYN, TCP_SYN]), [SYN_RECV; 3]);
        assert_eq!(next(ESTABLISHED, TCP_SYN), ESTABLISHED);
        assert_eq!(next(TIME_WAIT, TCP_SYN), SYN_RECV, "port reuse");
        assert_eq!(next(CLOSE, TCP_SYN), SYN_RECV);
        assert_eq!(next(FIN_WAIT, TCP_SYN | TCP_FIN), SYN_RECV, "SYN beats FIN");
        assert_eq!(next(SYN_RECV, TCP_FIN), TIME_WAIT);
    }

    #[test]
    fn mid_stream_and_odd_segments() {
        assert_eq!(next(NONE, TCP_ACK), ESTABLISHED, "picked up after a failover");
        assert_eq!(next(NONE, TCP_FIN | TCP_ACK), CLOSE);
        assert_eq!(next(ESTABLISHED, 0), ESTABLISHED, "no SYN/FIN/RST/ACK: unchanged");
        assert_eq!(next(CLOSE, TCP_ACK), CLOSE);
        assert_eq!(next(TIME_WAIT, TCP_ACK | TCP_FIN), TIME_WAIT);
        assert_eq!(next(200, TCP_ACK), 200);
        // Every state reachable from NONE is one of the named ones.
        let named = [NONE, ESTABLISHED, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE];
        for s in named {
            for f in 0..=0x1f {
                assert!(named.contains(&next(s, f)), "{s} {f:#x}");
            }
        }
    }

    #[test]
    fn timeouts_follow_ipvsadm_set() {
        let d = Timeouts::default();
        assert_eq!((d.tcp, d.tcpfin, d.udp), (900, 120, 300));
        assert_eq!(timeout(ESTABLISHED, &d), 900);
        assert_eq!(timeout(SYN_RECV, &d), 60);
        assert_eq!(timeout(TIME_WAIT, &d), 120);
        assert_eq!(timeout(CLOSE, &d), 10);
        assert_eq!(timeout(NONE, &d), 2);
        let t = Timeouts { tcp: 7200, tcpfin: 30, udp: 60 };
        assert_eq!((timeout(ESTABLISHED, &t), timeout(FIN_WAIT, &t), timeout(TIME_WAIT, &t)), (7200, 30, 120));
        assert_eq!(timeout(99, &t), 10);
    }
}
