//! The thread that notices a backend hang up and brings a new one in: it polls the socket
//! for hang-up, then retries [`Shared::reconnect`] with backoff until it takes, the device
//! fails, or the frontend is dropped. Each failed attempt is logged at debug, with a summary
//! at warn every [`SUMMARY_EVERY`] attempts.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::frontend::{Attempt, Shared};

/// Failed attempts between two warnings.
const SUMMARY_EVERY: u32 = 20;

pub(super) struct Watcher {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn spawn(shared: Arc<Shared>, stream: UnixStream) -> std::io::Result<Watcher> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop_fd = stop.try_clone()?;
        let handle = thread::Builder::new()
            .name("vhost-user-watch".into())
            .spawn(move || run(&shared, &stop_fd, stream))?;
        Ok(Watcher {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Stop,
    HangUp,
    Timeout,
}

/// Waits for `stop`, for `socket` to hang up (if given), or for `timeout` (if given).
fn wait(stop: &EventFd, socket: Option<RawFd>, timeout: Option<Duration>) -> Woken {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut fds = vec![libc::pollfd {
        fd: stop.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    if let Some(fd) = socket {
        // Only hang-up: replies are the requesting thread's to read.
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        });
    }
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_millis().min(i32::MAX as u128) as i32
            }
        };
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("vhost-user watcher: poll: {e}");
            return Woken::Stop;
        }
        if fds[0].revents != 0 {
            return Woken::Stop;
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            return Woken::HangUp;
        }
        if n == 0 {
            return Woken::Timeout;
        }
    }
}

fn run(shared: &Shared, stop: &EventFd, mut stream: UnixStream) {
    loop {
        if wait(stop, Some(stream.as_raw_fd()), None) == Woken::Stop {
            return;
        }
        shared.lost();
        match reconnect(shared, stop) {
            Some(s) => stream = s,
            None => return,
        }
    }
}

/// Retries until a new backend is in (its socket), the device fails or `stop` (None).
fn reconnect(shared: &Shared, stop: &EventFd) -> Option<UnixStream> {
    let socket = shared.socket().display();
    let since = Instant::now();
    let mut failures = 0u32;
    for delay in shared.backoff().delays() {
        if wait(stop, None, Some(delay)) == Woken::Stop {
            return None;
        }
        match shared.reconnect() {
            Ok(stream) => {
                log::warn!(
                    "vhost-user {socket}: reconnected after {} attempts ({:.1} s)",
                    failures + 1,
                    since.elapsed().as_secs_f64()
                );
                return Some(stream);
            }
            Err(Attempt::Fatal(e)) => {
                log::error!(
                    "vhost-user {socket}: device failed: {}",
                    crate::error_chain(&e)
                );
                shared.set_failed();
                let _ = wait(stop, None, None);
                return None;
            }
            Err(Attempt::Retry(e)) => {
                failures += 1;
                let e = crate::error_chain(&e);
                log::debug!("vhost-user {socket}: reconnection attempt {failures}: {e}");
                if failures.is_multiple_of(SUMMARY_EVERY) {
                    log::warn!(
                        "vhost-user {socket}: still disconnected after {failures} attempts \
                         ({:.0} s): {e}",
                        since.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    None
}
