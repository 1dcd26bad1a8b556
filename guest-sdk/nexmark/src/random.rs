//! SplitMix64, the generator behind Java's `SplittableRandom`: a new stream
//! per event, seeded with the event id, costs two words. Implemented from
//! the published algorithm (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", 2014), with `SplittableRandom`'s
//! bounded draws so that a Java port seeded alike draws the same values.

/// A SplitMix64 stream.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// The stream Java's `new SplittableRandom(seed)` produces.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_seed(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        self.state
    }

    /// A uniform 64-bit value (`nextLong`).
    pub fn next_u64(&mut self) -> u64 {
        let mut z = self.next_seed();
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform 32-bit value (`nextInt()`), signed as Java's.
    pub fn next_i32(&mut self) -> i32 {
        let mut z = self.next_seed();
        z = (z ^ (z >> 33)).wrapping_mul(0x62A9_D9ED_7997_05F5);
        ((z ^ (z >> 28)).wrapping_mul(0xCB24_D0A5_C88C_35B3) >> 32) as u32 as i32
    }

    /// Uniform in `0..bound` (`nextInt(bound)`); `bound` must be positive.
    pub fn below(&mut self, bound: u32) -> u32 {
        debug_assert!(bound > 0 && bound <= i32::MAX as u32);
        let m = bound - 1;
        let r = self.next_i32() as u32;
        if bound & m == 0 {
            return r & m;
        }
        // Rejection of the overflowing tail, as SplittableRandom does.
        let mut u = r >> 1;
        loop {
            let r = u % bound;
            if (u.wrapping_add(m).wrapping_sub(r) as i32) >= 0 {
                return r;
            }
            u = (self.next_i32() as u32) >> 1;
        }
    }

    /// Uniform in `0..bound` for a 64-bit bound (Nexmark's `nextLong(n)`:
    /// a bounded int draw below 2^31 - 1, a skewed remainder above).
    pub fn below_u64(&mut self, bound: u64) -> u64 {
        if bound < i32::MAX as u64 {
            u64::from(self.below(bound as u32))
        } else {
            ((self.next_u64() as i64) % (bound as i64)).unsigned_abs()
        }
    }

    /// Uniform in `[0, 1)` (`nextDouble`).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn seed_zero_gives_the_published_splitmix64_outputs() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn bounded_draws_stay_in_range_and_cover_it() {
        let mut r = SplitMix64::new(7);
        for bound in [1u32, 2, 3, 4, 10, 13, 26, 10_000, 1_000_000_007] {
            let mut seen_top = false;
            for _ in 0..2000 {
                let v = r.below(bound);
                assert!(v < bound, "{v} of {bound}");
                seen_top |= bound <= 26 && v == bound - 1;
            }
            assert!(bound > 26 || seen_top, "{bound}");
        }
        for _ in 0..1000 {
            let d = r.next_f64();
            assert!((0.0..1.0).contains(&d));
            assert!(r.below_u64(u64::MAX / 3) < u64::MAX / 3);
        }
    }
}
