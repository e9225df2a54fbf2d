//! A passthrough device's failed state, and the watch that notices a vfio-user server dying
//! while the guest is not touching a trapped register (its doorbells are mmapped, its
//! completions land in guest RAM: a polling guest may never exit to the VMM again).
//!
//! A failed device stays on the bus and answers like a surprise-removed PCI function: trapped
//! reads return all ones, writes are dropped. The guest's driver sees its commands time out
//! and the VM keeps running; the run's report names the failed device.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::EventFd;

/// Why a device failed, for the run's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFailure {
    /// The device as given on the command line (`vfio-user=SOCKET`).
    pub device: String,
    pub reason: String,
}

impl fmt::Display for DeviceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.device, self.reason)
    }
}

/// Set once, when the device is found gone; read by the device model on every access and by
/// the run's report.
#[derive(Debug)]
pub struct Health {
    device: String,
    failure: OnceLock<DeviceFailure>,
}

impl Health {
    pub fn new(device: String) -> Arc<Health> {
        Arc::new(Health {
            device,
            failure: OnceLock::new(),
        })
    }

    /// Marks the device failed. Only the first call logs (and its reason is kept): the watch
    /// and a vCPU may both find the server gone.
    pub fn fail(&self, reason: &str) {
        let mut first = false;
        self.failure.get_or_init(|| {
            first = true;
            DeviceFailure {
                device: self.device.clone(),
                reason: reason.to_string(),
            }
        });
        if first {
            log::error!(
                "{}: device failed: {reason}; it now reads as removed (all ones) and the \
                 guest's I/O to it fails",
                self.device
            );
        }
    }

    pub fn failure(&self) -> Option<&DeviceFailure> {
        self.failure.get()
    }

    pub fn failed(&self) -> bool {
        self.failure.get().is_some()
    }
}

/// A thread that waits for `fd` to hang up and then runs `on_hangup`, once. Dropping the
/// watch stops the thread (without running `on_hangup`) and waits for it.
pub struct HangupWatch {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl HangupWatch {
    pub fn spawn(
        name: &str,
        fd: BorrowedFd<'_>,
        on_hangup: impl FnOnce() + Send + 'static,
    ) -> io::Result<HangupWatch> {
        let fd = fd.try_clone_to_owned()?;
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop_fd = stop.try_clone()?;
        let thread = thread::Builder::new()
            .name(format!("watch {name}"))
            .spawn(move || {
                if wait_hangup(&fd, &stop_fd) {
                    on_hangup();
                }
            })?;
        Ok(HangupWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HangupWatch {
    fn drop(&mut self) {
        // An eventfd write fails only if the counter would overflow: it is already signalled.
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Blocks until `fd` hangs up (true) or `stop` is signalled (false). A poll error counts as
/// a stop: the watch ends, the accesses still find a dead server.
fn wait_hangup(fd: &OwnedFd, stop: &EventFd) -> bool {
    // POLLRDHUP: the peer closed its end. Replies arriving (POLLIN) are the vCPU's business,
    // so they are not asked for; POLLHUP and POLLERR are always reported.
    let mut fds = [
        libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call, and
        // both descriptors are owned by this thread's captures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_first_failure_is_kept() {
        let h = Health::new("vfio-user=/s".into());
        assert!(!h.failed());
        h.fail("the server hung up");
        h.fail("a later symptom");
        assert_eq!(
            h.failure().unwrap().to_string(),
            "vfio-user=/s failed: the server hung up"
        );
    }

    #[test]
    fn a_hangup_runs_the_callback() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let _watch = HangupWatch::spawn("t", ours.as_fd(), move || tx.send(()).unwrap()).unwrap();
        // Traffic is not a hangup.
        (&theirs).write_all(b"x").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(theirs);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("hangup seen");
    }

    #[test]
    fn dropping_the_watch_stops_it_without_a_callback() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let watch = HangupWatch::spawn("t", ours.as_fd(), move || tx.send(()).unwrap()).unwrap();
        drop(watch);
        // The sender went away with the thread, unused.
        assert_eq!(rx.recv(), Err(mpsc::RecvError));
    }
}
