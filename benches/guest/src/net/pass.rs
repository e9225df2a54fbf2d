//! The measured loops of the net job. Frames are built once and only their header is patched per
//! frame, so the loop's own cost is a copy into the driver's buffer, whatever the path.

use iopath_mailbox::histogram::Histogram;
use iopath_mailbox::io;
use iopath_mailbox::net::{self, FrameError, NetResults, MAX_FRAME};

use super::device::NetQueue;
use super::{Params, MAX_DEPTH};
use crate::arch;
use crate::clock::Deadline;

/// Round trip: look for lost frames once per this many loop turns (it reads the TSC and scans
/// the slots).
const LOSS_SCAN_EVERY: u32 = 64;

/// Counts what came back: ours and intact, ours and damaged, or someone else's.
fn classify(frame: &[u8], len: usize, seed: u64, res: &mut NetResults) -> Option<net::FrameInfo> {
    match net::check(frame, Some(len), seed) {
        Ok(info) => Some(info),
        Err(FrameError::EtherType) => {
            res.foreign += 1;
            None
        }
        Err(_) => {
            res.bad += 1;
            None
        }
    }
}

/// When to stop sending: after `ops` frames or at the deadline.
struct Stop {
    ops: u64,
    deadline: Option<Deadline>,
}

impl Stop {
    fn new(p: &Params) -> Stop {
        Stop {
            ops: p.ops,
            deadline: (p.duration_ms != 0).then(|| Deadline::after_ms(p.tsc_khz, p.duration_ms)),
        }
    }

    fn ops_done(&self, sent: u64) -> bool {
        self.ops != 0 && sent >= self.ops
    }

    fn reached(&self, sent: u64, now: u64) -> bool {
        self.ops_done(sent) || self.deadline.is_some_and(|d| d.passed_at(now))
    }
}

/// Transmits as fast as the device takes frames, `depth` per notification; receives and checks
/// whatever comes back on the way, then waits up to the timeout for the rest.
pub fn tx<Q: NetQueue>(q: &mut Q, p: &Params, res: &mut NetResults) {
    let len = p.frame_bytes as usize;
    let mut frame = [0u8; MAX_FRAME as usize];
    let frame = &mut frame[..len];
    net::write(frame, p.dst, q.mac(), 0, 0, p.seed);
    let stop = Stop::new(p);
    let seed = p.seed;

    arch::outl(io::MARK_PORT, io::MARK_BEGIN);
    let start = arch::rdtsc();
    let mut now = start;
    while !stop.reached(res.sent, now) {
        let mut queued = 0;
        while queued < p.depth && !stop.ops_done(res.sent) {
            net::set_header(frame, res.sent, now);
            if !q.send(frame) {
                res.tx_full += 1;
                break;
            }
            res.sent += 1;
            queued += 1;
        }
        if queued > 0 {
            q.flush();
        }
        q.recv(|f| {
            if classify(f, len, seed, res).is_some() {
                res.received += 1;
            }
        });
        now = arch::rdtsc();
    }
    res.elapsed_ticks = now - start;
    arch::outl(io::MARK_PORT, io::MARK_END);
    res.bytes = res.sent * len as u64;

    // Reflections still on their way: not part of the rate, but part of the count.
    let drain = Deadline::after_ms(p.tsc_khz, p.timeout_ms);
    while res.received + res.bad < res.sent && !drain.passed() {
        q.recv(|f| {
            if classify(f, len, seed, res).is_some() {
                res.received += 1;
            }
        });
    }
}

/// A frame in flight: its sequence number and when it left.
#[derive(Clone, Copy)]
struct Slot {
    busy: bool,
    seq: u64,
    sent_at: u64,
}

/// Keeps `depth` frames in flight; each one's latency is from its send to its reflection.
/// Slot `s` carries sequence numbers `s`, `s + depth`, `s + 2 * depth`..., so a reflection names
/// its slot.
pub fn round_trip<Q: NetQueue>(q: &mut Q, p: &Params, res: &mut NetResults) {
    let len = p.frame_bytes as usize;
    let depth = u64::from(p.depth);
    let mut frame = [0u8; MAX_FRAME as usize];
    let frame = &mut frame[..len];
    net::write(frame, p.dst, q.mac(), 0, 0, p.seed);
    let stop = Stop::new(p);
    let seed = p.seed;
    let timeout = p.timeout_ms.saturating_mul(p.tsc_khz);
    let mut slots = [Slot {
        busy: false,
        seq: 0,
        sent_at: 0,
    }; MAX_DEPTH];
    let slots = &mut slots[..usize::from(p.depth)];
    let mut next_seq = [0u64; MAX_DEPTH];
    for (s, n) in next_seq.iter_mut().enumerate() {
        *n = s as u64;
    }
    let mut latency = Histogram::new();
    let mut busy = 0usize;
    let mut turns = 0u32;

    arch::outl(io::MARK_PORT, io::MARK_BEGIN);
    let start = arch::rdtsc();
    let mut now = start;
    let mut stopping = false;
    loop {
        if !stopping {
            stopping = stop.reached(res.sent, now);
        }
        if stopping && busy == 0 {
            break;
        }
        if !stopping {
            let mut queued = false;
            for (s, slot) in slots.iter_mut().enumerate() {
                if slot.busy || stop.ops_done(res.sent) {
                    continue;
                }
                let seq = next_seq[s];
                let at = arch::rdtsc();
                net::set_header(frame, seq, at);
                if !q.send(frame) {
                    res.tx_full += 1;
                    break;
                }
                next_seq[s] = seq + depth;
                *slot = Slot {
                    busy: true,
                    seq,
                    sent_at: at,
                };
                busy += 1;
                res.sent += 1;
                queued = true;
            }
            if queued {
                q.flush();
            }
        }
        q.recv(|f| {
            let Some(info) = classify(f, len, seed, res) else {
                return;
            };
            let slot = &mut slots[(info.seq % depth) as usize];
            if !slot.busy || slot.seq != info.seq {
                // A duplicate, or a frame already counted lost.
                res.bad += 1;
                return;
            }
            let back = arch::rdtsc();
            latency.record(back.saturating_sub(slot.sent_at));
            slot.busy = false;
            busy -= 1;
            res.received += 1;
        });
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(LOSS_SCAN_EVERY) || stopping {
            now = arch::rdtsc();
            for slot in slots.iter_mut() {
                if slot.busy && now.saturating_sub(slot.sent_at) > timeout {
                    slot.busy = false;
                    busy -= 1;
                    res.lost += 1;
                }
            }
        }
    }
    res.elapsed_ticks = arch::rdtsc() - start;
    arch::outl(io::MARK_PORT, io::MARK_END);
    res.bytes = res.sent * len as u64;
    res.latency = latency;
}
