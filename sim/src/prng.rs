//! A small seeded PRNG of our own (SplitMix64), so that one seed reproduces a run on
//! any machine and any version of any crate. Integer-only helpers; no global state.
//! Components get their own stream via [`Prng::fork`], so adding a component does not
//! reshuffle the others.

#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng { state: seed }
    }

    /// A child stream named by `label`: depends only on this stream's seed and the label.
    pub fn fork(&self, label: &str) -> Prng {
        let mut h = self.state ^ 0x9E37_79B9_7F4A_7C15;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        Prng::new(mix(h))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias worth caring about at 64 bits.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_never_change() {
        // SplitMix64 reference outputs for seed 0; a change here changes every trace.
        let mut p = Prng::new(0);
        assert_eq!(p.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(p.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let a = Prng::new(7).fork("fs").next_u64();
        assert_eq!(a, Prng::new(7).fork("fs").next_u64());
        assert_ne!(a, Prng::new(7).fork("host").next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut p = Prng::new(1);
        for n in 1..50 {
            assert!(p.below(n) < n);
        }
        assert!((0..1000).all(|_| p.range(3, 5) >= 3));
    }
}
