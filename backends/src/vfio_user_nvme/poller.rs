//! The doorbell poller: a dedicated thread that watches the shared doorbell page and drives
//! the controller, so the data path needs no message and no exit.
//!
//! Busy: each pass scans the page without a lock and, while work is about, takes the
//! controller lock to apply changed doorbells and post completions. Idle passes spin briefly,
//! then yield the CPU between passes (the guest's vCPU may share the core); after `spin`
//! without work it sleeps in `ppoll` on the engine's completion eventfd, with a timeout that doubles from
//! `min_sleep` to `max_sleep` (a doorbell store wakes nobody, so the timeout bounds the latency
//! of the first command after an idle period).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::doorbells::DoorbellPage;
use crate::nvme::Controller;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the poller's stop eventfd")]
    EventFd(#[source] io::Error),
    #[error("cannot spawn the doorbell poller thread")]
    Spawn(#[source] io::Error),
}

/// What the message thread and the poller share.
pub struct Shared {
    pub ctrl: Mutex<Controller>,
    pub doorbells: DoorbellPage,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Controller> {
        self.ctrl.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How the poller trades CPU for latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollTuning {
    /// Keep polling this long after the last work before sleeping.
    pub spin: Duration,
    pub min_sleep: Duration,
    pub max_sleep: Duration,
}

impl Default for PollTuning {
    fn default() -> Self {
        PollTuning {
            spin: Duration::from_micros(500),
            min_sleep: Duration::from_micros(20),
            max_sleep: Duration::from_millis(1),
        }
    }
}

/// Idle passes between clock reads while spinning.
const CLOCK_EVERY: u32 = 64;

/// The running poller thread; stopped and joined on drop.
pub struct Poller {
    stop: Arc<AtomicBool>,
    wake: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Poller {
    pub fn spawn(
        shared: Arc<Shared>,
        completion_fd: Option<RawFd>,
        tuning: PollTuning,
    ) -> Result<Poller, Error> {
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = State {
            shared,
            seen: Vec::new(),
            epoch: 0,
            completion_fd,
            wake_fd: wake.as_raw_fd(),
        };
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name("nvme-doorbells".into())
            .spawn(move || state.run(&flag, tuning))
            .map_err(Error::Spawn)?;
        Ok(Poller {
            stop,
            wake,
            handle: Some(handle),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct State {
    shared: Arc<Shared>,
    /// The value of each slot the controller was last told.
    seen: Vec<u32>,
    /// The doorbell page epoch `seen` belongs to.
    epoch: u64,
    completion_fd: Option<RawFd>,
    wake_fd: RawFd,
}

impl State {
    fn run(&mut self, stop: &AtomicBool, mut tuning: PollTuning) {
        tuning.min_sleep = tuning.min_sleep.min(tuning.max_sleep);
        self.seen = vec![0; self.shared.doorbells.slots()];
        self.epoch = self.shared.doorbells.epoch();
        let mut idle_passes = 0u32;
        let mut idle_since = Instant::now();
        let mut spinning = true;
        let mut sleep = tuning.min_sleep;
        while !stop.load(Ordering::Relaxed) {
            let rung = self.rung();
            if (rung || spinning) && self.service() {
                idle_passes = 0;
                spinning = true;
                sleep = tuning.min_sleep;
                continue;
            }
            if spinning {
                if idle_passes == 0 {
                    idle_since = Instant::now();
                }
                idle_passes += 1;
                if !idle_passes.is_multiple_of(CLOCK_EVERY) || idle_since.elapsed() < tuning.spin {
                    if idle_passes < CLOCK_EVERY {
                        std::hint::spin_loop();
                    } else {
                        // On an oversubscribed host the guest's vCPU may be waiting for this
                        // core; spinning would keep it off for a whole time slice.
                        thread::yield_now();
                    }
                    continue;
                }
                spinning = false;
            }
            // Clear the eventfd, then catch what completed before the clear: whatever
            // completes later signals it again and ends the sleep.
            drain(self.completion_fd);
            if self.service() {
                idle_passes = 0;
                spinning = true;
                sleep = tuning.min_sleep;
                continue;
            }
            self.sleep(sleep);
            sleep = (sleep * 2).min(tuning.max_sleep);
        }
    }

    /// Whether any slot differs from what the controller was told (no lock taken).
    fn rung(&self) -> bool {
        let page = &self.shared.doorbells;
        self.seen
            .iter()
            .enumerate()
            .any(|(i, &v)| page.load(i) != v)
    }

    /// Applies changed doorbells and posts completions; returns whether anything happened.
    fn service(&mut self) -> bool {
        let shared = self.shared.clone();
        let mut ctrl = shared.lock();
        let page = &shared.doorbells;
        // The page is cleared under the lock: values read from now on belong to this epoch.
        let epoch = page.epoch();
        if epoch != self.epoch {
            self.seen.fill(0);
            self.epoch = epoch;
        }
        let mut rang = false;
        let mut admin = false;
        for (i, seen) in self.seen.iter_mut().enumerate() {
            let value = page.load(i);
            if value == *seen {
                continue;
            }
            *seen = value;
            rang = true;
            // `i` < 2 * MAX_PAIRS, so the queue id fits.
            let qid = (i / 2) as u16;
            if i % 2 == 0 {
                admin |= qid == 0;
                ctrl.sq_doorbell(qid, value as u16);
            } else {
                ctrl.cq_doorbell(qid, value as u16);
            }
        }
        if admin {
            self.retire_deleted_queues(&ctrl);
        }
        let posted = ctrl.process_completions();
        rang || posted > 0
    }

    /// Zeroes the slots of queues that do not exist (after admin commands ran): a queue
    /// created again starts at 0, and a guest writing the value a stale slot still holds
    /// would otherwise go unseen. A queue cannot be rung before its Create command
    /// completes, which only this thread can make happen, so no live write is lost.
    fn retire_deleted_queues(&mut self, ctrl: &Controller) {
        let page = &self.shared.doorbells;
        for (i, seen) in self.seen.iter_mut().enumerate().skip(2) {
            let qid = (i / 2) as u16;
            let exists = match i % 2 {
                0 => ctrl.sq_exists(qid),
                _ => ctrl.cq_exists(qid),
            };
            if !exists && *seen != 0 {
                page.store(i, 0);
                *seen = 0;
            }
        }
    }

    fn sleep(&self, timeout: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.wake_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.completion_fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: two valid pollfds (a negative fd is ignored) and a valid timespec for the
        // duration of the call; no signal mask.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
    }
}

/// Empties an eventfd (non-blocking; nothing to read is fine).
fn drain(fd: Option<RawFd>) {
    if let Some(fd) = fd {
        let mut v = 0u64;
        // SAFETY: reads at most 8 bytes into `v` from a non-blocking eventfd.
        unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    }
}
