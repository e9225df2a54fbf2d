//! What both daemons' `VhostUserBackend`s keep around their per-thread workers: the worker
//! lock the control path can cut into, the completion eventfd's place in the thread's epoll
//! set, the exit events the library leaks, and a new memory table handed to every worker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vhost_user_backend::{VhostUserBackend, VringEpollHandler};
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::memory::{address_space, check_files};
use super::ring::Memory;

/// Locks `m`, taking the data of a poisoned lock as it is: a panicked worker pass must not
/// stop the control path.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queue thread's worker, shared with the control path (the frontend's messages). The
/// thread's poll loop checks [`Self::control_waiting`] and lets go of the lock when it is set.
pub struct SharedWorker<W> {
    worker: Mutex<W>,
    /// Control-path callers waiting for `worker`.
    waiting: AtomicU32,
}

impl<W> SharedWorker<W> {
    pub fn new(worker: W) -> Self {
        SharedWorker {
            worker: Mutex::new(worker),
            waiting: AtomicU32::new(0),
        }
    }

    /// Takes the worker from the queue thread.
    pub fn lock(&self) -> MutexGuard<'_, W> {
        lock(&self.worker)
    }

    /// Takes the worker from the control path: the poll loop sees it waiting and yields.
    pub fn control(&self) -> MutexGuard<'_, W> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let worker = lock(&self.worker);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        worker
    }

    /// Whether a control-path caller is waiting for the worker.
    pub fn control_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Lets a waiting control-path caller in, then takes the worker back.
    pub fn yield_to_control<'a>(&'a self, worker: MutexGuard<'a, W>) -> MutexGuard<'a, W> {
        drop(worker);
        std::thread::yield_now();
        lock(&self.worker)
    }
}

/// The epoll data of the completion eventfds; 0..=num_queues belong to the library.
pub fn completion_event(num_queues: usize) -> u64 {
    num_queues as u64 + 1
}

/// Puts each thread's completion eventfd (`fds`, in thread order) into that thread's epoll set.
pub fn register_completions<T: VhostUserBackend>(
    handlers: &[Arc<VringEpollHandler<T>>],
    fds: impl IntoIterator<Item = Option<RawFd>>,
    event: u64,
) -> io::Result<()> {
    for (fd, handler) in fds.into_iter().zip(handlers) {
        if let Some(fd) = fd {
            handler.register_listener(fd, EventSet::IN, event)?;
        }
    }
    Ok(())
}

/// The read ends of the queue threads' exit events. vhost-user-backend 0.24.0 takes them with
/// `into_raw_fd` into its epoll set and never closes them, which would leak one eventfd per
/// thread per connection (a daemon serves connection after connection); they are closed when
/// this is dropped, with the backend that holds it.
#[derive(Default)]
pub struct ExitEvents {
    fds: Mutex<Vec<RawFd>>,
}

impl ExitEvents {
    /// A new exit event for `VhostUserBackend::exit_event`, its read end kept for closing.
    pub fn create(&self) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => {
                lock(&self.fds).push(pair.0.as_raw_fd());
                Some(pair)
            }
            Err(e) => {
                log::error!("cannot create a queue thread's exit event: {e}");
                None
            }
        }
    }
}

impl Drop for ExitEvents {
    fn drop(&mut self) {
        for fd in lock(&self.fds).drain(..) {
            // SAFETY: the library (pinned at =0.24.0) owns these descriptors only in the epoll
            // set of a `VringEpollHandler`, never closes them, and every handler holds an `Arc`
            // of the backend that owns this: now that it is dropped, no handler and no epoll
            // set uses them.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// Gives the workers (through `set_space`) the address space of the memory table the library
/// has just made current for the rings. A table that would fault is replaced by no memory at
/// all, so nothing (rings or requests) touches it, and its error is returned.
pub fn update_memory(
    mem: &Memory,
    mut set_space: impl FnMut(Arc<iommu::AddressSpace>),
) -> io::Result<()> {
    if let Err(e) = check_files(&mem.memory()) {
        mem.lock()
            .map_err(|_| io::Error::other("memory lock poisoned"))?
            .replace(GuestMemoryMmap::new());
        set_space(Arc::new(iommu::AddressSpace::new()));
        return Err(e);
    }
    let space = address_space(mem.memory().into_inner()).map_err(io::Error::other)?;
    set_space(Arc::new(space));
    Ok(())
}
