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
/// `u32` (exactly how the BPF program loads it from the header, with no byte swap).
#[inline(always)]
#[must_use]
pub const fn bit_v4(addr_raw: u32) -> u32 {
    // Fibonacci hashing: the top 16 bits of the product mix every input bit.
    addr_raw.wrapping_mul(0x9E37_79B1) >> (32 - 16)
}

/// Word index and mask for a filter bit.
#[inline(always)]
#[must_use]
pub const fn word_and_mask(bit: u32) -> (u32, u64) {
    (bit >> 6, 1u64 << (bit & 63))
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
        // A /20 of consecutive addresses must not collapse onto a few bits.
        assert!(distinct > 3900, "only {distinct} distinct bits for 4096 addresses");
    }
}
