//! Where the NIC's frames go and come from: a host TAP device, or a reflector that sends every
//! frame back with its MACs swapped. TX calls [`FrameBackend::send`] on the vCPU thread; the RX
//! thread waits on [`FrameBackend::rx_fd`] and drains [`FrameBackend::recv`].

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use backends::net::Tap;
use vmm_sys_util::eventfd::EventFd;

use crate::lock;

/// The frames of one NIC, without FCS.
pub trait FrameBackend: Send + Sync {
    /// Sends one frame. Never blocks: a full backend is an error the model counts.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// Takes one waiting frame into `buf`; `None` when there is none. A frame longer than
    /// `buf` may be cut short (the caller treats a full buffer as oversized).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Readable while [`FrameBackend::recv`] may have a frame.
    fn rx_fd(&self) -> RawFd;
}

impl FrameBackend for Tap {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        Tap::send(self, frame).map(|_| ())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match Tap::recv(self, buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn rx_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

/// Frames reflected but not yet received, at most: a guest that stops receiving loses the
/// rest, as it would on a wire.
pub const REFLECT_QUEUE_FRAMES: usize = 1024;

/// Sends every frame back, MACs swapped ([`iopath_mailbox::net::reflect`]).
pub struct Reflector {
    queue: Mutex<VecDeque<Vec<u8>>>,
    /// Counts up while the queue is non-empty; drained under the queue lock, so a wake-up is
    /// never lost between an empty `recv` and the next `send`.
    ready: EventFd,
}

impl Reflector {
    pub fn new() -> io::Result<Reflector> {
        Ok(Reflector {
            queue: Mutex::new(VecDeque::new()),
            ready: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }
}

impl FrameBackend for Reflector {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut q = lock(&self.queue);
        if q.len() >= REFLECT_QUEUE_FRAMES {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let mut back = frame.to_vec();
        iopath_mailbox::net::reflect(&mut back);
        q.push_back(back);
        self.ready.write(1)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut q = lock(&self.queue);
        let Some(frame) = q.pop_front() else {
            match self.ready.read() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            return Ok(None);
        };
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(Some(n))
    }

    fn rx_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn reflector_swaps_macs_and_signals() {
        let r = Reflector::new().unwrap();
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[1; 6]);
        f[6..12].copy_from_slice(&[2; 6]);
        f[40] = 9;
        assert!(!readable(r.rx_fd()));
        r.send(&f).unwrap();
        assert!(readable(r.rx_fd()));
        let mut buf = [0u8; 2048];
        assert_eq!(r.recv(&mut buf).unwrap(), Some(60));
        assert_eq!(&buf[..6], &[2; 6]);
        assert_eq!(&buf[6..12], &[1; 6]);
        assert_eq!(buf[40], 9);
        assert_eq!(r.recv(&mut buf).unwrap(), None);
        assert!(!readable(r.rx_fd()), "an empty recv clears the signal");
    }

    #[test]
    fn reflector_queue_is_bounded() {
        let r = Reflector::new().unwrap();
        for _ in 0..REFLECT_QUEUE_FRAMES {
            r.send(&[0; 60]).unwrap();
        }
        assert_eq!(
            r.send(&[0; 60]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
