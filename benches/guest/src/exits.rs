//! Exit microbenchmarks, after kvm-unit-tests' x86/vmexit.c: time N iterations of one
//! operation, repeat, keep the fastest and the median repetition.

use iopath_mailbox::io::{MMIO_IOEVENTFD_GPA, MMIO_PROBE_GPA, PIO_PROBE_PORT};
use iopath_mailbox::layout::TOUCH_GPA;
use iopath_mailbox::{error, ExitKind, ExitResults, Job, TickStats};

use crate::{arch, log, stats};

const MAX_REPETITIONS: usize = 64;
const PAGE: u64 = 4096;

pub fn run(job: &Job) -> Result<ExitResults, u32> {
    let p = job.exits;
    let reps = p.repetitions as usize;
    if p.iterations == 0 || reps == 0 || reps > MAX_REPETITIONS {
        log!(
            "exits: need iterations >= 1 and 1..={} repetitions",
            MAX_REPETITIONS
        );
        return Err(error::BAD_PARAMETER);
    }
    if p.touch_mib != 0 && !p.touch_mib.is_power_of_two() {
        log!("exits: touch_mib must be a power of two");
        return Err(error::BAD_PARAMETER);
    }
    let iters = p.iterations as u64;
    let mut r = ExitResults::default();
    r.kinds[ExitKind::PioWrite as usize] = measure(iters, reps, || arch::outl(PIO_PROBE_PORT, 0));
    // SAFETY (both MMIO closures): the probe pages are identity mapped; the VMM owns them.
    r.kinds[ExitKind::MmioRead as usize] = measure(iters, reps, || unsafe {
        arch::mmio_read32(MMIO_PROBE_GPA);
    });
    r.kinds[ExitKind::MmioWrite as usize] = measure(iters, reps, || unsafe {
        arch::mmio_write32(MMIO_PROBE_GPA, 0)
    });
    r.kinds[ExitKind::MmioIoeventfd as usize] = measure(iters, reps, || unsafe {
        arch::mmio_write32(MMIO_IOEVENTFD_GPA, 0)
    });
    r.kinds[ExitKind::Cpuid as usize] = measure(iters, reps, || {
        arch::cpuid(0);
    });
    if p.touch_mib != 0 {
        let (first, warm) = page_touch(p.touch_mib as u64, reps, job.seed);
        r.kinds[ExitKind::PageTouchFirst as usize] = first;
        r.kinds[ExitKind::PageTouchWarm as usize] = warm;
    }
    for k in ExitKind::ALL {
        let s = r.kinds[k as usize];
        log!(
            "exits: {:<17} min {} median {} ticks / {} iterations",
            k.name(),
            s.min_ticks,
            s.median_ticks,
            s.iterations
        );
    }
    Ok(r)
}

fn measure(iterations: u64, reps: usize, mut op: impl FnMut()) -> TickStats {
    let mut ticks = [0u64; MAX_REPETITIONS];
    // One untimed warm-up pass.
    op();
    for t in ticks.iter_mut().take(reps) {
        let start = arch::rdtsc();
        for _ in 0..iterations {
            op();
        }
        *t = arch::rdtsc() - start;
    }
    let (min_ticks, median_ticks) = stats::min_median(&mut ticks[..reps]);
    TickStats {
        iterations,
        min_ticks,
        median_ticks,
    }
}

/// Touches the pages of `mib` MiB in a random order: once (first touch: the host populates the
/// page) split into `reps` repetitions, then `reps` full passes (warm).
fn page_touch(mib: u64, reps: usize, seed: u64) -> (TickStats, TickStats) {
    let pages = mib * (1 << 20) / PAGE;
    // An odd stride is coprime to the power-of-two page count, so `i * stride` visits every
    // page once per pass, in an order the prefetcher cannot follow.
    let stride = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) % pages) | 1;
    let touch = |i: u64| {
        let page = i.wrapping_mul(stride) & (pages - 1);
        // SAFETY: the VMM gives the guest RAM up to TOUCH_GPA + touch_mib MiB, identity mapped.
        unsafe { core::ptr::write_volatile((TOUCH_GPA + page * PAGE) as *mut u64, i) };
    };
    let chunk = pages / reps as u64;
    let mut first = [0u64; MAX_REPETITIONS];
    for (r, t) in first.iter_mut().enumerate().take(reps) {
        let base = r as u64 * chunk;
        let start = arch::rdtsc();
        for i in base..base + chunk {
            touch(i);
        }
        *t = arch::rdtsc() - start;
    }
    let (min_ticks, median_ticks) = stats::min_median(&mut first[..reps]);
    let first = TickStats {
        iterations: chunk,
        min_ticks,
        median_ticks,
    };
    let warm = measure(pages, reps, {
        let mut i = 0u64;
        move || {
            touch(i);
            i += 1;
        }
    });
    (first, warm)
}
