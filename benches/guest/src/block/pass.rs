//! One pass of a block job: keep every slot busy until the op count or the deadline is
//! reached, then drain. This is the measured loop: no formatting and no device register reads
//! unless something went wrong.

use iopath_mailbox::offsets::Offsets;
use iopath_mailbox::{error, io, pattern, BlockResults};

use super::buffers::Buffers;
use super::device::{BlockQueue, Op};
use super::MAX_QUEUE_DEPTH;
use crate::{arch, log};

/// With I/O in flight, the device must complete something this often.
const STALL_TIMEOUT_MS: u64 = 10_000;

pub struct Pass {
    pub op: Op,
    pub offsets: Offsets,
    /// Stop submitting after this many I/Os (0: no limit).
    pub ops: u64,
    /// Stop submitting after this long (0: no limit).
    pub duration_ms: u64,
    /// Verify with this seed: writes carry the pattern, reads are checked against it, and a
    /// failed command or a mismatch fails the pass.
    pub verify: Option<u64>,
    pub tsc_khz: u64,
}

/// Slot bookkeeping: which slots are free, and when and where each busy one started.
struct Slots {
    free: [u16; MAX_QUEUE_DEPTH],
    free_count: usize,
    busy: [bool; MAX_QUEUE_DEPTH],
    started: [u64; MAX_QUEUE_DEPTH],
    offset: [u64; MAX_QUEUE_DEPTH],
}

impl Slots {
    fn new(depth: u16) -> Slots {
        let mut free = [0; MAX_QUEUE_DEPTH];
        let depth = usize::from(depth).min(MAX_QUEUE_DEPTH);
        // Popped from the end: slot 0 goes first.
        for (i, f) in free.iter_mut().take(depth).enumerate() {
            *f = (depth - 1 - i) as u16;
        }
        Slots {
            free,
            free_count: depth,
            busy: [false; MAX_QUEUE_DEPTH],
            started: [0; MAX_QUEUE_DEPTH],
            offset: [0; MAX_QUEUE_DEPTH],
        }
    }

    fn pop(&mut self) -> Option<u16> {
        self.free_count = self.free_count.checked_sub(1)?;
        Some(self.free[self.free_count])
    }

    fn start(&mut self, slot: u16, offset: u64, now: u64) {
        let s = usize::from(slot);
        self.busy[s] = true;
        self.offset[s] = offset;
        self.started[s] = now;
    }

    /// Frees `slot` (a value from the device) and returns when and where its I/O started, or
    /// `None` if it had no I/O in flight.
    fn complete(&mut self, slot: u16) -> Option<(u64, u64)> {
        let s = usize::from(slot);
        if !*self.busy.get(s)? {
            return None;
        }
        self.busy[s] = false;
        self.free[self.free_count] = slot;
        self.free_count += 1;
        Some((self.started[s], self.offset[s]))
    }
}

/// Runs `pass` on `q` with one buffer per slot, adding to `res`.
pub fn run<Q: BlockQueue>(
    q: &mut Q,
    bufs: &Buffers,
    depth: u16,
    mut pass: Pass,
    res: &mut BlockResults,
) -> Result<(), u32> {
    let mut slots = Slots::new(depth);
    let in_flight = |slots: &Slots| usize::from(depth) - slots.free_count;
    let len = bufs.size();
    let limit = if pass.ops == 0 { u64::MAX } else { pass.ops };
    let stall_ticks = STALL_TIMEOUT_MS.saturating_mul(pass.tsc_khz);
    let check = pass.verify.filter(|_| pass.op == Op::Read);
    let fill = pass.verify.filter(|_| pass.op == Op::Write);

    // Outside the timed span: the mark itself is an exit.
    arch::outl(io::MARK_PORT, io::MARK_BEGIN);
    let start = arch::rdtsc();
    let deadline = (pass.duration_ms != 0)
        .then(|| start.saturating_add(pass.duration_ms.saturating_mul(pass.tsc_khz)));
    let mut submitted = 0u64;
    let mut stopping = false;
    // The last completion (or the start): measures stalls and the pass's elapsed time.
    let mut last = start;
    let mut failed = 0u64;
    let mut mismatch: Option<u64> = None;
    let mut bogus: Option<u16> = None;

    loop {
        if !stopping {
            let mut batch = 0;
            while submitted < limit {
                let Some(slot) = slots.pop() else { break };
                let offset = pass.offsets.next_offset();
                if let Some(seed) = fill {
                    // SAFETY: the slot was free, so the device is done with its buffer.
                    pattern::fill(seed, offset, unsafe { bufs.bytes_mut(slot) });
                }
                slots.start(slot, offset, arch::rdtsc());
                q.submit(slot, pass.op, offset, len, bufs.addr(slot));
                submitted += 1;
                batch += 1;
            }
            if batch > 0 {
                q.ring();
            }
            stopping = submitted == limit;
        }
        if in_flight(&slots) == 0 {
            break;
        }

        let reaped = q.poll(|slot, ok| {
            let now = arch::rdtsc();
            let Some((started, offset)) = slots.complete(slot) else {
                bogus = Some(slot);
                return;
            };
            last = now;
            res.latency.record(now.saturating_sub(started));
            res.ops += 1;
            if !ok {
                res.errors += 1;
                failed += 1;
                return;
            }
            res.bytes += u64::from(len);
            if let Some(seed) = check {
                // SAFETY: the I/O on this slot has completed; nothing else refers to the buffer.
                let data = unsafe { bufs.bytes(slot) };
                if let Some(at) = pattern::first_mismatch(seed, offset, data) {
                    mismatch = Some(mismatch.map_or(at, |m| m.min(at)));
                }
            }
        });

        if let Some(slot) = bogus {
            log!(
                "block: the device completed slot {}, which has no I/O in flight",
                slot
            );
            q.log_state();
            return Err(error::DEVICE_ERROR);
        }
        let now = if reaped > 0 {
            last
        } else {
            let now = arch::rdtsc();
            if now.saturating_sub(last) > stall_ticks {
                log!(
                    "block: no completion for {} ms with {} I/Os in flight",
                    STALL_TIMEOUT_MS,
                    in_flight(&slots)
                );
                q.log_state();
                return Err(error::DEVICE_ERROR);
            }
            now
        };
        if deadline.is_some_and(|d| now >= d)
            || mismatch.is_some()
            || (pass.verify.is_some() && failed > 0)
        {
            stopping = true;
        }
    }
    res.elapsed_ticks += last.saturating_sub(start);
    arch::outl(io::MARK_PORT, io::MARK_END);

    if pass.verify.is_some() && failed > 0 {
        log!("block: verify: {} {:?} commands failed", failed, pass.op);
        q.log_state();
        return Err(error::DEVICE_ERROR);
    }
    if let Some(at) = mismatch {
        log!(
            "block: verify: data at byte offset {:#x} differs from what was written",
            at
        );
        return Err(error::VERIFY_FAILED);
    }
    Ok(())
}
