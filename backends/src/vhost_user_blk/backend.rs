//! The `VhostUserBackend` the vhost-user-backend crate drives: one worker thread per queue
//! (`queues_per_thread`), each with its own engine whose completion eventfd sits in that
//! thread's epoll set next to the kick.

use std::io;
use std::sync::{Arc, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringMutex, VringState, VringT};
use virtio_bindings::virtio_blk::VIRTIO_BLK_F_FLUSH;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use super::config::{config_window, BlkConfig, Device, WCE_OFFSET};
use super::inflight_region::{QueueRegion, Region, Tracker};
use super::queue::{Ring, Run, Stats, Worker, RUN_BUDGET};
use super::relay;
use crate::engine::BlockEngine;
use crate::vhost_user::queue_thread::{self, ExitEvents, SharedWorker};
use crate::vhost_user::ring::VringRing;

/// Guest memory as the vhost-user memory table describes it.
pub use crate::vhost_user::ring::Memory;
pub type Vring = VringMutex<Memory>;

/// The most queues: vhost-user-backend maps queues to threads with a 64-bit mask.
pub const MAX_QUEUES: u16 = 64;

/// How the daemon wants the device served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// After a run with work, keep polling the ring and the engine this long before going back
    /// to sleep in epoll (zero: never poll).
    pub poll: Duration,
}

struct Queue {
    worker: SharedWorker<Worker>,
    /// The queue's vring, learned from its first event; `stop_vring` needs it to post the
    /// completions it waits for.
    vring: OnceLock<Vring>,
}

/// See the module documentation.
pub struct BlkBackend {
    device: Arc<Device>,
    queues: Vec<Queue>,
    mem: Memory,
    options: ServeOptions,
    exit_events: ExitEvents,
}

impl BlkBackend {
    /// A backend over `engines`, one per queue. `mem` must be the memory the daemon is built
    /// with: the vrings read the rings through it.
    pub fn new(
        config: BlkConfig,
        engines: Vec<Box<dyn BlockEngine>>,
        mem: Memory,
        options: ServeOptions,
    ) -> Self {
        let device = Arc::new(Device::new(config));
        let queues = engines
            .into_iter()
            .map(|engine| Queue {
                worker: SharedWorker::new(Worker::new(engine, device.clone())),
                vring: OnceLock::new(),
            })
            .collect();
        BlkBackend {
            device,
            queues,
            mem,
            options,
            exit_events: ExitEvents::default(),
        }
    }

    /// The epoll data of the completion eventfds; 0..=num_queues belong to the library.
    pub fn completion_event(&self) -> u64 {
        queue_thread::completion_event(self.queues.len())
    }

    /// Puts every engine's completion eventfd into its queue thread's epoll set.
    pub fn register_completions(
        &self,
        handlers: &[Arc<VringEpollHandler<Arc<BlkBackend>>>],
    ) -> io::Result<()> {
        let fds = self.queues.iter().map(|q| q.worker.lock().completion_fd());
        queue_thread::register_completions(handlers, fds, self.completion_event())
    }

    /// Completes everything in flight on every queue.
    pub fn drain(&self) {
        for queue in &self.queues {
            self.drain_queue(queue);
        }
    }

    /// Counters summed over the queues.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for queue in &self.queues {
            let s = queue.worker.lock().stats();
            total.chains += s.chains;
            total.dropped += s.dropped;
            total.rejected += s.rejected;
            total.lost += s.lost;
            total.backlogged += s.backlogged;
            total.resubmitted += s.resubmitted;
        }
        total
    }

    fn ring<'a>(&'a self, state: &'a mut VringState<Memory>) -> VringRing<'a> {
        VringRing {
            state,
            mem: &self.mem,
        }
    }

    fn drain_queue(&self, queue: &Queue) {
        let mut worker = queue.worker.control();
        // No event yet means nothing was ever started on this queue.
        let Some(vring) = queue.vring.get() else {
            return;
        };
        worker.drain(&mut self.ring(&mut vring.get_mut()));
    }

    fn process(&self, queue: &Queue, vring: &Vring) {
        let (mut worker, worked) = self.run_until_idle(queue, queue.worker.lock(), vring);
        if worked && !self.options.poll.is_zero() {
            self.poll(queue, &mut worker, vring);
            // Re-arms notifications and picks up what raced with that.
            let (_worker, _) = self.run_until_idle(queue, worker, vring);
        }
    }

    /// Runs the worker until it is idle; `true` if there was work. Between budgets of a busy
    /// guest the locks are let go, so the frontend's control messages get through.
    fn run_until_idle<'a>(
        &self,
        queue: &'a Queue,
        mut worker: MutexGuard<'a, Worker>,
        vring: &Vring,
    ) -> (MutexGuard<'a, Worker>, bool) {
        let mut worked = false;
        loop {
            match worker.run(&mut self.ring(&mut vring.get_mut())) {
                Run::Idle { worked: w } => return (worker, worked | w),
                Run::More => worked = true,
            }
            if queue.worker.control_waiting() {
                worker = queue.worker.yield_to_control(worker);
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Busy-polls the ring and the engine with notifications off until nothing has happened
    /// for the poll interval (the caller re-arms them). The vring lock is taken only around passes
    /// with work, so the frontend's control messages are not held up; a control-path caller
    /// waiting for the worker ends the poll.
    fn poll(&self, queue: &Queue, worker: &mut Worker, vring: &Vring) {
        self.ring(&mut vring.get_mut()).disable_notification();
        let mut deadline = Instant::now() + self.options.poll;
        while !queue.worker.control_waiting() {
            if worker.has_work() {
                let mut state = vring.get_mut();
                let mut ring = self.ring(&mut state);
                let mut progress = false;
                for _ in 0..RUN_BUDGET {
                    if !worker.step(&mut ring) {
                        break;
                    }
                    progress = true;
                }
                worker.signal(&mut ring);
                // Chains on a disabled ring are work we cannot do: they must not keep the
                // poller spinning.
                if progress {
                    deadline = Instant::now() + self.options.poll;
                    continue;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            std::hint::spin_loop();
        }
    }
}

/// What the relay in front of the crate tells the device.
impl relay::Device for BlkBackend {
    fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    fn max_queue_size(&self) -> u16 {
        self.device.config.queue_size
    }

    fn set_inflight(&self, region: Arc<Region>) {
        for (i, queue) in self.queues.iter().enumerate() {
            let tracker = QueueRegion::new(region.clone(), i as u16).map(Tracker::new);
            queue.worker.control().set_tracker(tracker);
        }
    }

    fn vring_starting(&self, index: u16) {
        if let Some(queue) = self.queues.get(usize::from(index)) {
            queue.worker.control().restart_tracking();
        }
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.device.config.queue_size)
    }

    fn features(&self) -> u64 {
        self.device.config.features()
    }

    fn acked_features(&self, features: u64) {
        // Without a flush command the driver cannot make writes durable: write through.
        self.device
            .set_writeback(features & (1 << VIRTIO_BLK_F_FLUSH) != 0);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        BlkConfig::protocol_features()
    }

    fn reset_device(&self) {
        self.drain();
        self.device.set_writeback(true);
    }

    /// virtio-queue tracks EVENT_IDX per queue (set by the library on SET_FEATURES).
    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = self.device.config.config_space(self.device.writeback());
        config_window(&space, offset, size)
    }

    /// Only `wce` is writable; writes to the rest of the space are ignored, as on hardware.
    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        let at = (WCE_OFFSET as u64).wrapping_sub(u64::from(offset));
        if let Some(&wce) = usize::try_from(at).ok().and_then(|at| buf.get(at)) {
            self.device.set_writeback(wce != 0);
        }
        Ok(())
    }

    fn update_memory(&self, mem: Memory) -> io::Result<()> {
        queue_thread::update_memory(&mem, |space| {
            for queue in &self.queues {
                queue.worker.control().set_space(space.clone());
            }
        })
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.queues.len()).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit_events.create()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let queue = self
            .queues
            .get(queue_index as usize)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.drain_queue(queue);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        // One queue per thread: the thread's only vring is event 0 and the queue's index is
        // the thread's.
        let (Some(queue), Some(vring)) = (self.queues.get(thread_id), vrings.first()) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let vring = queue.vring.get_or_init(|| vring.clone());
        if u64::from(device_event) == self.completion_event() {
            queue.worker.lock().clear_completion_fd();
        } else if device_event != 0 {
            log::warn!("queue {thread_id}: unexpected event {device_event}");
            return Ok(());
        }
        self.process(queue, vring);
        Ok(())
    }
}
