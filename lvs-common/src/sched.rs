//! Scheduling: the one implementation of rr and wrr, shared by the agent and the host tests.
//!
//! IPVS's rr and wrr are deterministic walks over the destination list
//! (net/netfilter/ipvs/ip_vs_rr.c, ip_vs_wrr.c). The agent expands that walk into a ring of
//! destination slots with [`rr_sequence`] / [`wrr_sequence`]; the XDP program keeps a per-CPU
//! cursor per service and takes the next ring slot for each new flow ([`next_slot`]). So each
//! CPU reproduces IPVS's exact order, and the split over all CPUs follows the weights to within
//! one ring length per CPU.
//!
//! Differences from IPVS, on purpose:
//! - IPVS keeps one cursor per service under a lock; per-CPU cursors avoid a shared write per
//!   new flow. Proportions are the same.
//! - IPVS inserts each new destination at the head of the service's list (`list_add_rcu` in
//!   ip_vs_ctl.c), so its walk visits real servers in reverse configuration order. We walk in
//!   configuration order. Proportions are the same.
//! - The overload flag (upper threshold) is not modelled yet. A weight of 0 is honoured: the
//!   server gets no new flows, as in IPVS.
//! - A wrr ring longer than [`MAX_RING_PER_SERVICE`] (huge, coprime weights) is first scaled
//!   down by [`fit_weights`], which keeps every non-zero weight at least 1.

use crate::maps::MAX_RING_PER_SERVICE;

/// Greatest common divisor of the non-zero weights (IPVS `ip_vs_wrr_gcd_weight`); 0 if none.
#[must_use]
pub fn gcd_weight(weights: &[u32]) -> u32 {
    fn gcd(mut a: u32, mut b: u32) -> u32 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    weights.iter().filter(|w| **w > 0).fold(0, |g, &w| if g == 0 { w } else { gcd(g, w) })
}

/// Length of the wrr ring for `weights`: one full IPVS wrr period, `sum(w / gcd)`.
#[must_use]
pub fn wrr_len(weights: &[u32]) -> u64 {
    let g = gcd_weight(weights);
    if g == 0 {
        return 0;
    }
    weights.iter().map(|&w| u64::from(w / g)).sum()
}

/// Scales `weights` down in place so that their wrr ring fits in `cap` slots.
///
/// Weights are first divided by their gcd (which does not change the schedule). If the ring is
/// still too long, each non-zero weight becomes `max(1, w * (cap - n) / sum)`, which keeps the
/// sum within `cap`. Returns the number of non-zero weights that no longer fit (more servers
/// than slots); those keep weight 0.
pub fn fit_weights(weights: &mut [u32], cap: u32) -> usize {
    let g = gcd_weight(weights);
    if g == 0 {
        return 0;
    }
    for w in weights.iter_mut() {
        *w /= g;
    }
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if sum <= u64::from(cap) {
        return 0;
    }
    let n = weights.iter().filter(|w| **w > 0).count() as u64;
    let mut dropped = 0;
    if n > u64::from(cap) {
        // More servers than slots: keep the first `cap` at weight 1.
        let mut kept = 0u64;
        for w in weights.iter_mut().filter(|w| **w > 0) {
            if kept < u64::from(cap) {
                *w = 1;
                kept += 1;
            } else {
                *w = 0;
                dropped += 1;
            }
        }
        return dropped;
    }
    let budget = u64::from(cap) - n;
    for w in weights.iter_mut().filter(|w| **w > 0) {
        let scaled = u64::from(*w) * budget / sum;
        *w = u32::try_from(scaled.max(1)).unwrap_or(u32::MAX);
    }
    dropped
}

/// Writes the rr ring: each destination with a non-zero weight once, in order
/// (ip_vs_rr.c skips destinations whose weight is 0). Returns the ring length.
///
/// The ring holds positions into `weights`. `out` must have room for `weights.len()` entries.
pub fn rr_sequence(weights: &[u32], out: &mut [u32]) -> usize {
    let mut n = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0 {
            out[n] = i as u32;
            n += 1;
        }
    }
    n
}

/// Writes one period of IPVS's wrr walk (ip_vs_wrr.c `ip_vs_wrr_schedule`): the current
/// weight `cw` starts at the maximum weight and drops by the gcd after each pass over the list;
/// a destination is chosen when its weight is at least `cw`. Returns the ring length, which is
/// [`wrr_len`]; `out` must have room for it.
pub fn wrr_sequence(weights: &[u32], out: &mut [u32]) -> usize {
    let g = gcd_weight(weights);
    if g == 0 {
        return 0;
    }
    let max = weights.iter().copied().max().unwrap_or(0);
    let mut n = 0;
    let mut cw = max;
    while cw > 0 {
        for (i, &w) in weights.iter().enumerate() {
            if w > 0 && w >= cw {
                out[n] = i as u32;
                n += 1;
            }
        }
        cw = cw.saturating_sub(g);
    }
    n
}

/// Takes the next ring slot for a new flow: returns the ring offset to use and the cursor to
/// store. The cursor is kept below `len` so no division is needed; a cursor left over from a
/// longer ring (the agent shrank it) restarts at 0. `len` must be non-zero.
#[inline(always)]
#[must_use]
pub const fn next_slot(cursor: u32, len: u32) -> (u32, u32) {
    let at = if cursor >= len { 0 } else { cursor };
    let next = if at + 1 >= len { 0 } else { at + 1 };
    (at, next)
}

/// Upper bound on a service's ring length.
pub const RING_CAP: u32 = MAX_RING_PER_SERVICE;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;

    fn wrr(weights: &[u32]) -> Vec<u32> {
        let mut out = vec![0; wrr_len(weights) as usize];
        let n = wrr_sequence(weights, &mut out);
        assert_eq!(n, out.len());
        out
    }

    /// IPVS wrr written as the kernel does it (a stateful walk), to check the closed form.
    fn ipvs_wrr_walk(weights: &[u32], picks: usize) -> Vec<u32> {
        let (mw, di) = (weights.iter().copied().max().unwrap() as i64, gcd_weight(weights) as i64);
        let n = weights.len();
        let (mut cl, mut cw) = (n, 0i64); // cl == n: at the list head
        let mut out = Vec::new();
        while out.len() < picks {
            if cl == n {
                cl = 0;
                cw -= di;
                if cw <= 0 {
                    cw = mw;
                }
            } else {
                cl += 1;
            }
            if cl < n && i64::from(weights[cl]) >= cw && weights[cl] > 0 {
                out.push(cl as u32);
            }
        }
        out
    }

    #[test]
    fn wrr_matches_the_kernel_walk() {
        for weights in [&[1u32, 2, 3][..], &[4, 3, 2], &[5, 0, 5], &[100, 1], &[7, 7, 7], &[1]] {
            let ring = wrr(weights);
            let twice: Vec<u32> = ring.iter().chain(ring.iter()).copied().collect();
            assert_eq!(twice, ipvs_wrr_walk(weights, twice.len()), "weights {weights:?}");
        }
    }

    #[test]
    fn wrr_honours_weights_exactly_per_period() {
        let weights = [1u32, 2, 3, 0];
        let ring = wrr(&weights);
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(ring.iter().filter(|&&d| d == i as u32).count() as u32, w);
        }
        assert_eq!(ring, [2, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn rr_skips_zero_weights() {
        let mut out = [0; 4];
        assert_eq!(rr_sequence(&[1, 0, 9, 1], &mut out), 3);
        assert_eq!(&out[..3], &[0, 2, 3]);
    }

    #[test]
    fn all_zero_weights_give_an_empty_ring() {
        assert_eq!(wrr_len(&[0, 0]), 0);
        assert_eq!(wrr_sequence(&[0, 0], &mut []), 0);
        assert_eq!(rr_sequence(&[0, 0], &mut [0, 0]), 0);
    }

    #[test]
    fn fit_weights_keeps_rings_bounded() {
        let mut w = [65535u32, 65534, 1, 0];
        assert_eq!(fit_weights(&mut w, RING_CAP), 0);
        assert!(wrr_len(&w) <= u64::from(RING_CAP));
        assert!(w[2] >= 1 && w[3] == 0);
        assert!(w[0] > 30000 && w[1] > 30000);

        let mut small = [2u32, 4, 6];
        fit_weights(&mut small, RING_CAP);
        assert_eq!(small, [1, 2, 3]);

        let mut many = [1u32; 10];
        assert_eq!(fit_weights(&mut many, 4), 6, "ten servers cannot share four slots");
        assert_eq!(many.iter().sum::<u32>(), 4);
        let mut many = [3u32, 5, 3, 5, 3];
        assert_eq!(fit_weights(&mut many, 3), 2);
        assert_eq!(many, [1, 1, 1, 0, 0]);
    }

    #[test]
    fn cursor_walks_the_ring_and_wraps() {
        let mut c = 0;
        let mut seen = Vec::new();
        for _ in 0..7 {
            let (at, next) = next_slot(c, 3);
            seen.push(at);
            c = next;
        }
        assert_eq!(seen, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(next_slot(10, 3), (0, 1), "a cursor from a longer ring restarts");
        assert_eq!(next_slot(0, 1), (0, 0));
    }
}
