//! A log-linear latency histogram small enough for the mailbox and cheap enough for the guest's
//! hot loop: 16 sub-buckets per power of two, so any value is within 1/16 (6.25 %) of its
//! bucket's lower bound. Values are TSC ticks.

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^48 ticks (over a day at 3 GHz) get their own bucket; larger ones share the
/// last.
const MAX_EXP: u32 = 48;
pub const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS) as u64 * SUB) as usize;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    pub counts: [u64; BUCKETS],
    pub min: u64,
    pub max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The bucket a value falls in.
pub fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + (exp - SUB_BITS) as u64 * SUB + sub) as usize
}

/// The smallest value in bucket `i`.
pub fn bucket_floor(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + SUB_BITS as u64;
    let sub = (i - SUB) % SUB;
    (1 << exp) | (sub << (exp - SUB_BITS as u64))
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [0; BUCKETS],
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }

    /// Samples recorded. The host reads histograms back from guest memory, so counts may be
    /// anything: the sum saturates rather than overflows.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |n, &c| n.saturating_add(c))
    }

    /// Adds another histogram's samples (repetitions, queues).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0.0..=1.0): the floor of the bucket holding it, clamped to
    /// the recorded min and max (unless they contradict each other: a histogram read back
    /// from guest memory need not be one `record` built). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64) as u64).clamp(1, n);
        let mut seen: u64 = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                let floor = bucket_floor(i);
                return Some(if self.min <= self.max {
                    floor.clamp(self.min, self.max)
                } else {
                    floor
                });
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, (1 << 20) + 1, 3 << 30, (1 << 48) - 1]) {
            let b = bucket(v);
            assert!(b >= last || v < 100_000, "bucket order at {v}");
            let floor = bucket_floor(b);
            assert!(floor <= v, "{v} below its floor {floor}");
            assert!(v - floor <= v / 16, "{v} too far from its floor {floor}");
            last = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5).unwrap();
        assert!((46_875..=50_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((92_000..=99_000).contains(&p99), "{p99}");
        let p100 = h.quantile(1.0).unwrap();
        assert!((93_750..=100_000).contains(&p100), "{p100}");
        assert_eq!(h.quantile(0.0), Some(100));
        assert_eq!(Histogram::new().quantile(0.5), None);
    }

    #[test]
    fn merge_adds_counts_and_extremes() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(5000);
        b.record(7);
        a.merge(&b);
        assert_eq!((a.count(), a.min, a.max), (3, 7, 5000));
    }

    /// Regression (found by `fuzz/` target `bench_mailbox`): the host reads histograms back
    /// from guest memory; one whose min is above its max, or whose counts overflow a u64 when
    /// summed, panicked in `quantile`, `count` and `merge`.
    #[test]
    fn histograms_from_guest_memory_never_panic() {
        let mut h = Histogram::new();
        h.counts[3] = 1;
        h.min = 10;
        h.max = 2;
        assert_eq!(h.quantile(0.5), Some(3));
        h.counts[0] = u64::MAX;
        assert_eq!(h.count(), u64::MAX);
        assert_eq!(h.quantile(1.0), Some(0));
        let copy = h;
        h.merge(&copy);
        assert_eq!(h.counts[0], u64::MAX);
    }
}
