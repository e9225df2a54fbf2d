//! Minimum and median of a small set of repetitions.

/// Sorts `samples` in place and returns (min, median). Empty input gives (0, 0).
pub fn min_median(samples: &mut [u64]) -> (u64, u64) {
    if samples.is_empty() {
        return (0, 0);
    }
    // Insertion sort: repetitions are few and the guest has no allocator.
    for i in 1..samples.len() {
        let mut j = i;
        while j > 0 && samples[j - 1] > samples[j] {
            samples.swap(j - 1, j);
            j -= 1;
        }
    }
    (samples[0], samples[samples.len() / 2])
}
