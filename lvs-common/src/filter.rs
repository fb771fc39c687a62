//! The VIP pre-filter: a bitmap indexed by a hash of the destination address.
//!
//! Most traffic a director sees is not for a VIP, and a BPF hash-map lookup costs more than
//! the whole MAC rewrite. An array lookup is inlined by the verifier into a bounds check and a
//! load, so testing one bit of a bitmap is close to free. A clear bit proves the address is not
//! a VIP; a set bit only says "maybe" (two addresses may share a bit), and the flow and service
//! lookups that follow decide.

/// Number of bits in the filter (a power of two).
pub const FILTER_BITS: u32 = 1 << 16;
/// Number of `u64` words in the filter array map.
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;

/// The bit for an IPv4 address, given as the four octets in network order read as a native
/// (little-endian) `u32`, exactly as the BPF program loads it from the header.
///
/// The bit is the address's last two octets: no arithmetic beyond a shift on the path every
/// packet takes, and VIPs, which sit in one or a few prefixes, still land on distinct bits.
/// Other addresses that share a VIP's last two octets only cost a lookup.
#[inline(always)]
#[must_use]
pub const fn bit_v4(addr_raw: u32) -> u32 {
    addr_raw >> 16
}

/// The bit for an IPv6 address, from its last word (as loaded from the header): the last two
/// octets, as for IPv4. Both families share the bitmap; a shared bit only costs a lookup.
#[inline(always)]
#[must_use]
pub const fn bit_v6(last_word_raw: u32) -> u32 {
    last_word_raw >> 16
}

/// Word index and mask for a filter bit.
#[inline(always)]
#[must_use]
pub const fn word_and_mask(bit: u32) -> (u32, u64) {
    (bit >> 6, 1u64 << (bit & 63))
}

/// The flow-cache slot of an IPv4 5-tuple (fields as on the wire). Cheap rather than strong:
/// a collision only costs a flow-table lookup, never a wrong answer (the cache compares the
/// whole key). `slots` must be a power of two.
#[inline(always)]
#[must_use]
pub const fn flow_slot_v4(saddr: u32, daddr: u32, ports: u32, proto: u8, slots: u32) -> u32 {
    let h = (saddr.wrapping_mul(0x9E37_79B1) ^ daddr).wrapping_mul(0x85EB_CA6B)
        ^ ports.wrapping_mul(0xC2B2_AE35)
        ^ proto as u32;
    (h ^ (h >> 15)) & (slots - 1)
}

/// The flow-cache slot of an IPv6 5-tuple: the addresses folded to one word each, then as
/// [`flow_slot_v4`].
#[inline(always)]
#[must_use]
pub const fn flow_slot_v6(saddr: [u32; 4], daddr: [u32; 4], ports: u32, proto: u8, slots: u32) -> u32 {
    flow_slot_v4(
        saddr[0] ^ saddr[1] ^ saddr[2] ^ saddr[3],
        daddr[0] ^ daddr[1] ^ daddr[2] ^ daddr[3],
        ports,
        proto,
        slots,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_stay_in_range_and_spread() {
        let mut seen = [0u8; (FILTER_BITS / 8) as usize];
        let mut distinct = 0;
        for host in 0u32..4096 {
            let addr = u32::from_ne_bytes([10, 0, (host >> 8) as u8, host as u8]);
            let bit = bit_v4(addr);
            assert!(bit < FILTER_BITS);
            let (w, m) = word_and_mask(bit);
            assert!(w < FILTER_WORDS);
            assert_eq!(m.count_ones(), 1);
            let byte = &mut seen[(bit / 8) as usize];
            if *byte & (1 << (bit % 8)) == 0 {
                distinct += 1;
            }
            *byte |= 1 << (bit % 8);
        }
        // Addresses within a /16 never share a bit.
        assert_eq!(distinct, 4096);
    }

    #[test]
    fn flow_slots_spread_over_source_ports() {
        // One client, one VIP, many source ports: the common case must not collide much.
        let slots = 1u32 << 12;
        let mut used = [false; 1 << 12];
        let (s, d) = (u32::from_ne_bytes([10, 0, 0, 10]), u32::from_ne_bytes([10, 0, 0, 100]));
        for sport in 30000u16..34096 {
            let ports = u32::from(sport.to_be()) | (u32::from(80u16.to_be()) << 16);
            used[flow_slot_v4(s, d, ports, 6, slots) as usize] = true;
        }
        let filled = used.iter().filter(|u| **u).count();
        // A uniform hash fills about 63% of the slots with as many keys as slots.
        assert!(filled > 2400, "{filled} of 4096 slots used");
    }
}
