//! CPU time this process used (all threads, user and system), for "host CPU per I/O".

use std::time::Duration;

/// User plus system time of every thread of this process so far, including io_uring workers
/// and the vCPU threads (whose guest time counts as this process's).
pub fn process_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; CLOCK_PROCESS_CPUTIME_ID needs
    // nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_advances_process_time() {
        let before = process_time();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = process_time() - before;
        assert!(used >= Duration::from_millis(10), "{used:?}");
    }
}
