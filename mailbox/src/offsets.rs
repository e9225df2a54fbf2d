//! Where each I/O of a block pass goes: block-aligned offsets inside the job's region. The
//! guest and the native runner use this one generator, so both paths see the same offsets.

/// Offsets for one pass over `region` bytes in steps of `step` (which divides it).
pub enum Offsets {
    /// From 0 upwards, wrapping at the end of the region.
    Sequential { next: u64, region: u64, step: u64 },
    /// Uniform over the region's blocks, from a splitmix64 stream.
    Random { state: u64, blocks: u64, step: u64 },
}

impl Offsets {
    pub fn sequential(region: u64, step: u64) -> Offsets {
        Offsets::Sequential {
            next: 0,
            region,
            step,
        }
    }

    pub fn random(region: u64, step: u64, seed: u64) -> Offsets {
        Offsets::Random {
            state: seed,
            blocks: region / step,
            step,
        }
    }

    pub fn next_offset(&mut self) -> u64 {
        match self {
            Offsets::Sequential { next, region, step } => {
                let at = *next;
                *next += *step;
                if *next >= *region {
                    *next = 0;
                }
                at
            }
            Offsets::Random {
                state,
                blocks,
                step,
            } => {
                *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let r = splitmix64(*state);
                // Multiply-shift maps r onto 0..blocks without a division.
                let block = ((u128::from(r) * u128::from(*blocks)) >> 64) as u64;
                block * *step
            }
        }
    }
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_wraps_at_the_region_end() {
        let mut o = Offsets::sequential(3 * 4096, 4096);
        let got: [u64; 4] = core::array::from_fn(|_| o.next_offset());
        assert_eq!(got, [0, 4096, 8192, 0]);
    }

    #[test]
    fn random_stays_aligned_inside_the_region_and_covers_it() {
        let mut o = Offsets::random(64 * 512, 512, 7);
        let mut seen = [false; 64];
        for _ in 0..4096 {
            let at = o.next_offset();
            assert_eq!(at % 512, 0);
            assert!(at < 64 * 512);
            seen[(at / 512) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "every block is reached");
        let a: [u64; 8] = {
            let mut o = Offsets::random(1 << 30, 4096, 1);
            core::array::from_fn(|_| o.next_offset())
        };
        let b: [u64; 8] = {
            let mut o = Offsets::random(1 << 30, 4096, 1);
            core::array::from_fn(|_| o.next_offset())
        };
        assert_eq!(a, b, "a seed gives one sequence");
    }
}
