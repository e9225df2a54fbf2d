//! A bound on how long the frontend waits for a backend's replies. The vhost crate retries a
//! socket read that times out (SO_RCVTIMEO surfaces as EAGAIN, which it treats as "try
//! again"), so a receive timeout alone would not end the wait. Instead a watchdog thread
//! shuts the socket down when an armed deadline passes: the blocked read then sees
//! end-of-stream, the request fails, and the hang-up watcher treats the backend as gone.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cloning the vhost-user socket for the reply watchdog failed")]
    Clone(#[source] std::io::Error),
    #[error("spawning the vhost-user reply watchdog failed")]
    Spawn(#[source] std::io::Error),
}

#[derive(Default)]
struct Armed {
    /// The socket to shut down and when, while a request is outstanding.
    deadline: Option<(Instant, UnixStream)>,
    stop: bool,
}

#[derive(Default)]
struct Inner {
    armed: Mutex<Armed>,
    changed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Armed> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ReplyDeadline {
    inner: Arc<Inner>,
    timeout: Duration,
    handle: Option<JoinHandle<()>>,
}

/// Disarms the deadline when dropped.
pub struct ArmedGuard<'a>(&'a ReplyDeadline);

impl ReplyDeadline {
    pub fn spawn(timeout: Duration) -> Result<ReplyDeadline, Error> {
        let inner = Arc::new(Inner::default());
        let worker = inner.clone();
        let handle = thread::Builder::new()
            .name("vhost-user-deadline".into())
            .spawn(move || watch(&worker, timeout))
            .map_err(Error::Spawn)?;
        Ok(ReplyDeadline {
            inner,
            timeout,
            handle: Some(handle),
        })
    }

    /// Shuts `stream` down unless the returned guard is dropped within the timeout.
    pub fn arm(&self, stream: &UnixStream) -> Result<ArmedGuard<'_>, Error> {
        let clone = stream.try_clone().map_err(Error::Clone)?;
        self.inner.lock().deadline = Some((Instant::now() + self.timeout, clone));
        self.inner.changed.notify_one();
        Ok(ArmedGuard(self))
    }
}

impl Drop for ArmedGuard<'_> {
    fn drop(&mut self) {
        self.0.inner.lock().deadline = None;
        self.0.inner.changed.notify_one();
    }
}

impl Drop for ReplyDeadline {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.changed.notify_one();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn watch(inner: &Inner, timeout: Duration) {
    let mut armed = inner.lock();
    loop {
        if armed.stop {
            return;
        }
        let wait = match &armed.deadline {
            None => None,
            Some((at, stream)) => {
                let now = Instant::now();
                if now >= *at {
                    log::warn!(
                        "vhost-user backend sent no reply within {timeout:?}: dropping the \
                         connection"
                    );
                    let _ = stream.shutdown(Shutdown::Both);
                    armed.deadline = None;
                    continue;
                }
                Some(*at - now)
            }
        };
        armed = match wait {
            None => inner.changed.wait(armed).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                inner
                    .changed
                    .wait_timeout(armed, d)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_silent_peer_is_cut_off_at_the_deadline() {
        let (mut ours, _theirs) = UnixStream::pair().unwrap();
        let deadline = ReplyDeadline::spawn(Duration::from_millis(50)).unwrap();
        let _armed = deadline.arm(&ours).unwrap();
        let mut b = [0u8; 1];
        // Without the watchdog this read blocks for as long as the peer stays silent.
        assert_eq!(ours.read(&mut b).unwrap(), 0, "shut down: end of stream");
    }

    #[test]
    fn a_disarmed_deadline_leaves_the_socket_alone() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let deadline = ReplyDeadline::spawn(Duration::from_millis(20)).unwrap();
        drop(deadline.arm(&ours).unwrap());
        thread::sleep(Duration::from_millis(100));
        let (mut ours, mut theirs) = (ours, theirs);
        std::io::Write::write_all(&mut theirs, b"x").unwrap();
        let mut b = [0u8; 1];
        ours.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
