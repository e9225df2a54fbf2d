//! Used-buffer notifications from the device to the driver. The device signals a queue's call
//! eventfd; a thread drains it and, when the driver gave the queue an MSI-X vector, raises
//! that vector (KVM_SIGNAL_MSI). A queue with NO_VECTOR (the polling bench guest) is drained
//! and nothing else, so a backend's signals never pile up.
//!
//! This relays in userspace rather than wiring each call eventfd as a KVM irqfd: irqfds for
//! MSIs need a GSI routing table the VM does not manage yet. The cost is one host wake-up per
//! signal, which a polling guest avoids by suppressing signals (EVENT_IDX `used_event`).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::EventFd;

use super::NO_VECTOR;
use crate::pci::msix::{MsiSink, Msix};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the call relay's stop eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("spawning the call relay thread failed")]
    Spawn(#[source] std::io::Error),
}

/// One queue's call eventfd and the vector it is routed to.
pub struct Call {
    pub queue: u16,
    pub fd: EventFd,
}

pub struct CallRelay {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

/// Where relayed signals go.
pub struct Route {
    pub vectors: Arc<[AtomicU16]>,
    pub msix: Arc<Mutex<Msix>>,
    pub sink: Arc<dyn MsiSink>,
}

impl CallRelay {
    pub fn spawn(calls: Vec<Call>, route: Route) -> Result<CallRelay, Error> {
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let stop_fd = stop.try_clone().map_err(Error::EventFd)?;
        let handle = thread::Builder::new()
            .name("virtio-call".into())
            .spawn(move || relay(&calls, &stop_fd, &route))
            .map_err(Error::Spawn)?;
        Ok(CallRelay {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for CallRelay {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn relay(calls: &[Call], stop: &EventFd, route: &Route) {
    let mut fds: Vec<libc::pollfd> = calls
        .iter()
        .map(|c| c.fd.as_raw_fd())
        .chain([stop.as_raw_fd()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("virtio call relay: poll: {e}");
            return;
        }
        if fds[calls.len()].revents != 0 {
            return;
        }
        for (call, pfd) in calls.iter().zip(&fds) {
            if pfd.revents == 0 {
                continue;
            }
            // Non-blocking: a spurious wake-up reads EAGAIN and changes nothing.
            if call.fd.read().is_err() {
                continue;
            }
            let vector = route
                .vectors
                .get(usize::from(call.queue))
                .map_or(NO_VECTOR, |v| v.load(Ordering::Relaxed));
            if vector != NO_VECTOR {
                route
                    .msix
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .notify(vector, route.sink.as_ref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::pci::msix::MsiMessage;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MsiMessage>>);

    impl MsiSink for Recorder {
        fn signal(&self, msg: MsiMessage) {
            self.0.lock().unwrap().push(msg);
        }
    }

    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn signals_are_drained_and_routed_only_when_a_vector_is_set() {
        let sink = Arc::new(Recorder::default());
        let mut msix = Msix::new(2);
        // Enable MSI-X and program an unmasked vector 1.
        msix.set_message_control(1 << 15, sink.as_ref());
        msix.table_write(16, &0xfee0_0000u32.to_le_bytes(), sink.as_ref());
        msix.table_write(24, &0x31u32.to_le_bytes(), sink.as_ref());
        msix.table_write(28, &0u32.to_le_bytes(), sink.as_ref());
        let vectors: Arc<[AtomicU16]> = vec![AtomicU16::new(NO_VECTOR), AtomicU16::new(1)].into();
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let b = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let relay = CallRelay::spawn(
            vec![Call { queue: 0, fd: a }, Call { queue: 1, fd: b }],
            Route {
                vectors,
                msix: Arc::new(Mutex::new(msix)),
                sink: sink.clone(),
            },
        )
        .unwrap();
        a2.write(3).unwrap();
        b2.write(1).unwrap();
        assert!(wait_for(|| sink.0.lock().unwrap().len() == 1));
        assert_eq!(sink.0.lock().unwrap()[0].data, 0x31);
        // Queue 0 was signalled first, so it was handled no later than queue 1: drained, and
        // with NO_VECTOR it raised nothing.
        assert!(a2.read().is_err(), "queue 0's signal is drained");
        assert!(b2.read().is_err());
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        drop(relay);
    }
}
