//! The `VhostUserBackend` the vhost-user-backend crate drives: one worker thread per queue
//! pair (its RX and TX rings, and the control ring on pair 0), each with its own engine whose
//! completion eventfd sits in that thread's epoll set next to the kicks.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringMutex, VringT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use super::config::{config_window, NetConfig};
use super::worker::{Ring, Rings, Stats, Worker};
use crate::net::{guest_offloads, NetEngine};
use crate::vhost_user::queue_thread::{self, lock, ExitEvents, SharedWorker};
use crate::vhost_user::ring::VringRing;

pub use crate::vhost_user::ring::Memory;
pub type Vring = VringMutex<Memory>;

/// Passes one run makes before giving the locks back.
const RUN_BUDGET: u32 = 64;

/// How the daemon wants the device served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// After a run with work, keep polling this long before sleeping in epoll (zero: never).
    pub poll: Duration,
}

struct Pair {
    worker: SharedWorker<Worker>,
    /// The pair's vrings, learned from its first event, for draining from the control path.
    vrings: Mutex<Option<Vec<Vring>>>,
}

/// See the module documentation.
pub struct NetBackend {
    config: NetConfig,
    pairs: Vec<Pair>,
    mem: Memory,
    options: ServeOptions,
    acked: AtomicU64,
    exit_events: ExitEvents,
}

impl NetBackend {
    /// A backend over `engines`, one per queue pair.
    pub fn new(
        config: NetConfig,
        engines: Vec<Box<dyn NetEngine>>,
        mem: Memory,
        options: ServeOptions,
    ) -> Self {
        let limits = config.limits(0);
        let pairs = engines
            .into_iter()
            .map(|engine| Pair {
                worker: SharedWorker::new(Worker::new(engine, limits, config.queue_pairs)),
                vrings: Mutex::new(None),
            })
            .collect();
        NetBackend {
            config,
            pairs,
            mem,
            options,
            acked: AtomicU64::new(0),
            exit_events: ExitEvents::default(),
        }
    }

    /// The epoll data of the completion eventfds; 0..=num_queues belong to the library.
    pub fn completion_event(&self) -> u64 {
        queue_thread::completion_event(self.config.num_queues())
    }

    pub fn register_completions(
        &self,
        handlers: &[Arc<VringEpollHandler<Arc<NetBackend>>>],
    ) -> io::Result<()> {
        let fds = self.pairs.iter().map(|p| p.worker.lock().completion_fd());
        queue_thread::register_completions(handlers, fds, self.completion_event())
    }

    pub fn drain(&self) {
        for pair in &self.pairs {
            self.drain_pair(pair);
        }
    }

    /// Counters summed over the pairs.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for pair in &self.pairs {
            total.add(&pair.worker.lock().stats());
        }
        total
    }

    fn with_rings<T>(
        &self,
        vrings: &[Vring],
        f: impl FnOnce(&mut Rings<'_, VringRing<'_>>) -> T,
    ) -> T {
        let mut rx_state = vrings[0].get_mut();
        let mut tx_state = vrings[1].get_mut();
        let mut ctrl_state = vrings.get(2).map(|v| v.get_mut());
        let mut rx = VringRing {
            state: &mut rx_state,
            mem: &self.mem,
        };
        let mut tx = VringRing {
            state: &mut tx_state,
            mem: &self.mem,
        };
        let mut ctrl = ctrl_state.as_mut().map(|s| VringRing {
            state: s,
            mem: &self.mem,
        });
        let mut rings = Rings {
            rx: &mut rx,
            tx: &mut tx,
            ctrl: ctrl.as_mut(),
        };
        f(&mut rings)
    }

    fn drain_pair(&self, pair: &Pair) {
        let mut worker = pair.worker.control();
        let Some(vrings) = lock(&pair.vrings).clone() else {
            return;
        };
        self.with_rings(&vrings, |rings| worker.drain(rings));
    }

    /// Runs the worker until it is idle with notifications armed; `true` if there was work.
    /// Between budgets of a busy guest the locks are let go for the control path.
    fn run_until_idle<'a>(
        &self,
        pair: &'a Pair,
        mut worker: MutexGuard<'a, Worker>,
        vrings: &[Vring],
    ) -> (MutexGuard<'a, Worker>, bool) {
        let mut worked = false;
        loop {
            let (w, idle) = self.with_rings(vrings, |rings| worker.run(rings, RUN_BUDGET));
            worked |= w;
            if idle {
                return (worker, worked);
            }
            if pair.worker.control_waiting() {
                worker = pair.worker.yield_to_control(worker);
            }
        }
    }

    fn process(&self, pair: &Pair, vrings: &[Vring]) {
        let (mut worker, worked) = self.run_until_idle(pair, pair.worker.lock(), vrings);
        if !worked || self.options.poll.is_zero() {
            return;
        }
        // Busy-poll with notifications off until nothing happened for the poll interval; a
        // control-path caller waiting for the worker ends it.
        let mut deadline = Instant::now() + self.options.poll;
        while !pair.worker.control_waiting() && Instant::now() < deadline {
            let progress = self.with_rings(vrings, |rings| {
                rings.rx.disable_notification();
                rings.tx.disable_notification();
                let p = worker.step(rings);
                worker.signal(rings);
                p
            });
            if progress {
                deadline = Instant::now() + self.options.poll;
            } else {
                std::hint::spin_loop();
            }
        }
        drop(self.run_until_idle(pair, worker, vrings));
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.config.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.config.queue_size)
    }

    fn features(&self) -> u64 {
        self.config.features()
    }

    fn acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::SeqCst);
        let limits = self.config.limits(features);
        for pair in &self.pairs {
            pair.worker
                .control()
                .set_limits(limits, guest_offloads(features));
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        NetConfig::protocol_features()
    }

    fn reset_device(&self) {
        self.drain();
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_window(&self.config.config_space(), offset, size)
    }

    fn update_memory(&self, mem: Memory) -> io::Result<()> {
        queue_thread::update_memory(&mem, |space| {
            for pair in &self.pairs {
                pair.worker.control().set_space(space.clone());
            }
        })
    }

    /// Pair `i` is queues `2i` (RX) and `2i + 1` (TX); the control queue joins pair 0.
    fn queues_per_thread(&self) -> Vec<u64> {
        let mut masks: Vec<u64> = (0..self.pairs.len()).map(|i| 0b11 << (2 * i)).collect();
        if self.config.multiqueue() {
            masks[0] |= 1 << (2 * self.pairs.len());
        }
        masks
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit_events.create()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let index = queue_index as usize;
        let pair = if index == 2 * self.pairs.len() {
            self.pairs.first()
        } else {
            self.pairs.get(index / 2)
        };
        let pair = pair.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.drain_pair(pair);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        let (Some(pair), true) = (self.pairs.get(thread_id), vrings.len() >= 2) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        lock(&pair.vrings).get_or_insert_with(|| vrings.to_vec());
        if u64::from(device_event) == self.completion_event() {
            pair.worker.lock().clear_completion_fd();
        } else if usize::from(device_event) >= vrings.len() {
            log::warn!("pair {thread_id}: unexpected event {device_event}");
            return Ok(());
        }
        self.process(pair, vrings);
        Ok(())
    }
}
