//! Frames between guest buffers and one TAP queue, on an io_uring of its own: a transmit is a
//! `writev` of the chain's buffers (vnet header first), a receive a `readv` into the guest's
//! buffers. Every request owns a slot of a fixed slab, indexed by the SQE's `user_data`, that
//! keeps its iovec array alive while the kernel may use it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types, IoUring};

use super::tap::Tap;
use super::{Dir, EngineStats, FrameCompletion, FrameRequest, NetEngine};

/// `user_data` of cancel requests, whose own completions are not frames.
const CANCEL: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue depth {0} is not in 1..=4096")]
    QueueDepth(u32),
    #[error("cannot make the TAP queue blocking for io_uring")]
    Blocking(#[source] io::Error),
    #[error("cannot set up the io_uring")]
    Setup(#[source] io::Error),
    #[error("cannot create the completion eventfd")]
    EventFd(#[source] io::Error),
    #[error("cannot register the completion eventfd")]
    RegisterEventFd(#[source] io::Error),
}

/// An iovec array the kernel reads while the request is in flight.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the iovecs are plain addresses into memory the engine's caller vouched for (the
// `push` contract); moving them to another thread with the engine changes nothing about that.
unsafe impl Send for IoVecs {}

struct Slot {
    request: Option<(u64, Dir)>,
    iovecs: IoVecs,
}

/// See the module documentation.
pub struct TapEngine {
    ring: IoUring,
    tap: Tap,
    eventfd: OwnedFd,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Cancel requests the kernel has not completed yet.
    cancels: usize,
    stats: EngineStats,
}

impl TapEngine {
    /// Takes over `tap` (one queue of the device). The fd is switched to blocking: io_uring
    /// answers a read on a non-blocking fd with `EAGAIN` instead of waiting for a frame.
    pub fn new(tap: Tap, queue_depth: u32) -> Result<Self, Error> {
        if queue_depth == 0 || queue_depth > 4096 {
            return Err(Error::QueueDepth(queue_depth));
        }
        tap.set_nonblocking(false).map_err(Error::Blocking)?;
        // Room for a cancel per request on top of the requests.
        let ring = IoUring::new(queue_depth * 2).map_err(Error::Setup)?;
        // SAFETY: plain FFI call; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::EventFd(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh eventfd that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(Error::RegisterEventFd)?;
        let depth = queue_depth as usize;
        Ok(TapEngine {
            ring,
            tap,
            eventfd,
            slots: (0..depth)
                .map(|_| Slot {
                    request: None,
                    iovecs: IoVecs(Vec::new()),
                })
                .collect(),
            free: (0..depth).rev().collect(),
            cancels: 0,
            stats: EngineStats::default(),
        })
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    fn busy(&self) -> usize {
        self.slots.len() - self.free.len() + self.cancels
    }

    /// Pushes an SQE, making room by submitting if the SQ is full.
    fn push_sqe(&mut self, entry: &io_uring::squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: every buffer the entry names lives in a slab slot (or is the guest memory
            // the caller vouched for) until its completion is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return true;
            }
            if let Err(e) = self.ring.submit() {
                log::warn!("io_uring submit failed: {e}");
            }
        }
        false
    }

    fn drain_cq(&mut self, out: &mut Vec<FrameCompletion>) -> usize {
        let mut n = 0;
        let done: Vec<_> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in done {
            if user_data == CANCEL {
                self.cancels -= 1;
                continue;
            }
            let index = user_data as usize;
            let Some((tag, dir)) = self.slots.get_mut(index).and_then(|s| s.request.take()) else {
                log::error!("completion for unknown slot {index}");
                continue;
            };
            self.free.push(index);
            let result = if result < 0 {
                Err(-result)
            } else {
                match dir {
                    Dir::Tx => self.stats.tx_frames += 1,
                    Dir::Rx => self.stats.rx_frames += 1,
                }
                Ok(result as usize)
            };
            out.push(FrameCompletion { tag, dir, result });
            n += 1;
        }
        n
    }
}

impl NetEngine for TapEngine {
    fn queue_depth(&self) -> usize {
        self.slots.len()
    }

    unsafe fn push(&mut self, request: FrameRequest) -> Result<(), FrameRequest> {
        let Some(index) = self.free.pop() else {
            return Err(request);
        };
        let slot = &mut self.slots[index];
        slot.iovecs.0.clear();
        slot.iovecs
            .0
            .extend(request.segments.iter().map(|s| libc::iovec {
                iov_base: s.as_ptr().cast(),
                iov_len: s.len(),
            }));
        let fd = types::Fd(self.tap.as_raw_fd());
        let (ptr, len) = (slot.iovecs.0.as_ptr(), slot.iovecs.0.len() as u32);
        let entry = match request.dir {
            Dir::Tx => opcode::Writev::new(fd, ptr, len).build(),
            Dir::Rx => opcode::Readv::new(fd, ptr, len).build(),
        }
        .user_data(index as u64);
        slot.request = Some((request.tag, request.dir));
        if !self.push_sqe(&entry) {
            self.slots[index].request = None;
            self.free.push(index);
            return Err(request);
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    fn reap(&mut self, out: &mut Vec<FrameCompletion>) -> usize {
        self.drain_cq(out)
    }

    fn wait(&mut self) -> io::Result<()> {
        if self.busy() == 0 {
            return Ok(());
        }
        match self.ring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn cancel_rx(&mut self) {
        let receives: Vec<u64> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.request, Some((_, Dir::Rx))))
            .map(|(i, _)| i as u64)
            .collect();
        for user_data in receives {
            let entry = opcode::AsyncCancel::new(user_data)
                .build()
                .user_data(CANCEL);
            if self.push_sqe(&entry) {
                self.cancels += 1;
            }
        }
        if let Err(e) = self.ring.submit() {
            log::warn!("io_uring submit failed: {e}");
        }
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.tap.set_offloads(flags).map_err(io::Error::other)
    }

    fn completion_fd(&self) -> Option<RawFd> {
        Some(self.eventfd.as_raw_fd())
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn stats(&self) -> EngineStats {
        self.stats
    }
}

impl Drop for TapEngine {
    /// Ends pending receives and waits for every request the kernel owns: the caller may free
    /// the guest buffers as soon as the engine is gone.
    fn drop(&mut self) {
        self.cancel_rx();
        let mut sink = Vec::new();
        loop {
            self.drain_cq(&mut sink);
            let busy = self.busy();
            if busy == 0 {
                return;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    // Returning would let the kernel write into memory the caller is about to
                    // free.
                    log::error!("cannot wait for {busy} in-flight io_uring requests: {e}");
                    std::process::abort();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use iommu::{Access, AddressSpace};

    use super::*;
    use crate::net::header::HDR_LEN;
    use crate::vhost_user::testing::Mem;

    fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
        std::thread::spawn(move || {
            // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "unshare: {}", io::Error::last_os_error());
            f();
        })
        .join()
        .expect("test thread panicked");
    }

    fn ip(args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("run ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    /// An ARP request for 10.78.0.1 from 02:00:00:00:00:02 / 10.78.0.2, vnet header first.
    fn arp_request() -> Vec<u8> {
        let mut f = vec![0u8; HDR_LEN];
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 10, 78, 0, 2]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 78, 0, 1]);
        f
    }

    fn wait_for(engine: &mut TapEngine, out: &mut Vec<FrameCompletion>, dir: Dir) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out.iter().any(|c| c.dir == dir) {
            assert!(Instant::now() < deadline, "no {dir:?} completion");
            engine.submit().unwrap();
            engine.reap(out);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn slices(space: &AddressSpace, bufs: &[(u64, usize)]) -> Vec<iommu::DmaSlice> {
        bufs.iter()
            .map(|&(a, l)| space.translate(a, l, Access::Write).unwrap())
            .collect()
    }

    #[test]
    fn transmit_and_receive_through_the_host_stack() {
        if !Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: /dev/net/tun absent");
            return;
        }
        in_netns(|| {
            let tap = Tap::open("iopeng0", 1, true).unwrap().remove(0);
            ip(&[
                "link",
                "set",
                "dev",
                "iopeng0",
                "address",
                "02:00:00:00:00:01",
            ]);
            ip(&["addr", "add", "10.78.0.1/24", "dev", "iopeng0"]);
            ip(&["link", "set", "dev", "iopeng0", "up"]);
            let mem = Mem::new();
            let space = mem.space();
            let mut engine = TapEngine::new(tap, 16).unwrap();
            let req = arp_request();
            mem.write(0x1000, &req[..HDR_LEN]);
            mem.write(0x2000, &req[HDR_LEN..]);
            let mut out = Vec::new();
            // Receives first: the reply may come at any time after the request.
            for i in 0..4u64 {
                let at = 0x4000 + i * 0x1000;
                // SAFETY: `mem` outlives the engine.
                unsafe {
                    engine.push(FrameRequest {
                        dir: Dir::Rx,
                        segments: slices(&space, &[(at, 20), (at + 0x100, 2000)]),
                        tag: 100 + i,
                    })
                }
                .unwrap();
            }
            // SAFETY: as above.
            unsafe {
                engine.push(FrameRequest {
                    dir: Dir::Tx,
                    segments: slices(&space, &[(0x1000, HDR_LEN), (0x2000, req.len() - HDR_LEN)]),
                    tag: 1,
                })
            }
            .unwrap();
            wait_for(&mut engine, &mut out, Dir::Tx);
            let tx = out.iter().find(|c| c.dir == Dir::Tx).unwrap();
            assert_eq!(tx.result, Ok(req.len()));
            // The host may send its own frames (IPv6 chatter): look for the ARP reply.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut replied = false;
            while !replied {
                assert!(Instant::now() < deadline, "no ARP reply");
                wait_for(&mut engine, &mut out, Dir::Rx);
                for c in out.drain(..).filter(|c| c.dir == Dir::Rx) {
                    let n = c.result.expect("receive");
                    let at = 0x4000 + (c.tag - 100) * 0x1000;
                    let mut frame = vec![0u8; 20];
                    space.read(at, &mut frame).unwrap();
                    let mut rest = vec![0u8; n - 20];
                    space.read(at + 0x100, &mut rest).unwrap();
                    frame.extend(rest);
                    let eth = &frame[HDR_LEN..];
                    if eth[12..14] == [0x08, 0x06] && eth[20..22] == [0, 2] {
                        assert_eq!(&eth[0..6], &[2, 0, 0, 0, 0, 2]);
                        replied = true;
                    } else {
                        // SAFETY: as above.
                        unsafe {
                            engine.push(FrameRequest {
                                dir: Dir::Rx,
                                segments: slices(&space, &[(at, 20), (at + 0x100, 2000)]),
                                tag: c.tag,
                            })
                        }
                        .unwrap();
                    }
                }
            }
            assert!(engine.stats().rx_frames >= 1);
            // Pending receives end on cancel, and the engine drops cleanly.
            engine.cancel_rx();
            let deadline = Instant::now() + Duration::from_secs(10);
            while engine.in_flight() > 0 {
                assert!(Instant::now() < deadline, "receives not cancelled");
                engine.wait().unwrap();
                engine.reap(&mut out);
            }
            assert!(out.iter().all(|c| c.dir == Dir::Rx));
        });
    }
}
