//! How long to wait between reconnection attempts: exponential from `first`, doubling up to
//! `cap`, forever.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(3),
        }
    }
}

impl Backoff {
    /// The delays before attempt 1, 2, ...: never ends.
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        std::iter::successors(Some(self.first.min(self.cap)), move |d| {
            Some(d.saturating_mul(2).min(self.cap))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_and_stay_there() {
        let b = Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        let d: Vec<u64> = b.delays().take(8).map(|d| d.as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        assert_eq!(
            b.delays().nth(10_000),
            Some(Duration::from_millis(1000)),
            "retries never run out"
        );
    }

    #[test]
    fn a_first_delay_above_the_cap_is_capped() {
        let b = Backoff {
            first: Duration::from_secs(10),
            cap: Duration::from_secs(2),
        };
        assert_eq!(b.delays().next(), Some(Duration::from_secs(2)));
    }
}
