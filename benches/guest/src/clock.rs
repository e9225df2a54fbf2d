//! Time in TSC ticks: deadlines so that no wait on a device lasts forever, and conversions for
//! the log.

use crate::arch;

/// A point in TSC time.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// `ms` milliseconds from now at `tsc_khz` ticks per millisecond.
    pub fn after_ms(tsc_khz: u64, ms: u64) -> Deadline {
        Deadline(arch::rdtsc().saturating_add(ms.saturating_mul(tsc_khz)))
    }

    /// Whether the deadline has passed at TSC value `now`.
    pub fn passed_at(self, now: u64) -> bool {
        now >= self.0
    }

    pub fn passed(self) -> bool {
        self.passed_at(arch::rdtsc())
    }
}

/// Polls `done` until it returns true or `ms` milliseconds pass; returns whether it did.
pub fn wait_until(tsc_khz: u64, ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Deadline::after_ms(tsc_khz, ms);
    loop {
        if done() {
            return true;
        }
        if deadline.passed() {
            // One last look: the condition may have come true while the deadline passed.
            return done();
        }
    }
}

/// Microseconds in `ticks` (0 when the TSC rate is unknown).
pub fn ticks_to_us(ticks: u64, tsc_khz: u64) -> u64 {
    if tsc_khz == 0 {
        return 0;
    }
    (u128::from(ticks) * 1000 / u128::from(tsc_khz)) as u64
}
