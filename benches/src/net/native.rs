//! The native path: the net workload on the host, no VM, through io_uring: on a TAP device
//! whose far side is a reflector in a network namespace, or (`reflect`) on one end of a
//! `SOCK_SEQPACKET` socket pair whose other end a thread of this process turns around. The
//! frames, the slots and the loss rule are the bench guest's, so only the path differs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use backends::net::tap::Tap;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use iopath_mailbox::histogram::Histogram;
use iopath_mailbox::net::{self, FrameError, NetResults, NetWorkload, BROADCAST, MAX_FRAME};

use super::{NetSample, NetWork};
use crate::cpu;

/// The source MAC of native frames (locally administered).
const MAC: [u8; 6] = [0x02, 0x10, 0x9a, 0x7b, 0x00, 0x01];
/// Receive buffers: room for a frame longer than any we send, so it shows up as bad.
const RX_BUF: usize = 2048;
/// How long one wait for completions lasts before the loop looks at the clock.
const WAIT: Duration = Duration::from_millis(5);
/// Bit of `user_data` that marks a receive.
const READ: u64 = 1 << 63;
/// `user_data` of a cancel request.
const CANCEL: u64 = 1 << 62;

/// What the native runner sends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeLink {
    /// TAP device `name`, attached in the calling thread's namespace.
    Tap(String),
    /// A socket pair with a reflector thread on the far end.
    Reflect,
}

#[derive(Clone, Debug)]
pub struct NativeJob {
    pub link: NativeLink,
    pub work: NetWork,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("depth {0} is not 1..=256")]
    Depth(u16),
    #[error("{0} needs a frame count or a duration")]
    Unbounded(&'static str),
    #[error("opening the TAP device")]
    Tap(#[source] backends::net::tap::Error),
    #[error("making the TAP device blocking")]
    Blocking(#[source] io::Error),
    #[error("creating the socket pair")]
    SocketPair(#[source] io::Error),
    #[error("starting the reflector thread")]
    Thread(#[source] io::Error),
    #[error("setting up io_uring")]
    Ring(#[source] io::Error),
    #[error("io_uring submission")]
    Submit(#[source] io::Error),
    #[error("a send failed")]
    Send(#[source] io::Error),
    #[error("a receive failed")]
    Recv(#[source] io::Error),
}

pub fn run(job: &NativeJob) -> Result<NetSample, Error> {
    let w = &job.work;
    if w.depth == 0 || w.depth > 256 {
        return Err(Error::Depth(w.depth));
    }
    if w.ops == 0 && w.duration.is_zero() {
        return Err(Error::Unbounded(w.workload.name()));
    }
    let (fd, reflector) = match &job.link {
        NativeLink::Tap(name) => {
            let mut taps = Tap::open(name, 1, false).map_err(Error::Tap)?;
            let tap = taps.remove(0);
            // io_uring waits on a blocking fd by polling it; a non-blocking one would make
            // every receive complete at once with EAGAIN.
            tap.set_nonblocking(false).map_err(Error::Blocking)?;
            (Link::Tap(tap), None)
        }
        NativeLink::Reflect => {
            let (ours, theirs) = socket_pair()?;
            let thread = std::thread::Builder::new()
                .name("native-reflect".into())
                .spawn(move || reflect(&theirs))
                .map_err(Error::Thread)?;
            (Link::Socket(ours), Some(thread))
        }
    };
    let cpu0 = cpu::process_time();
    let res = Runner::new(fd.raw(), w)?.run();
    let cpu_s = (cpu::process_time() - cpu0).as_secs_f64();
    // Closing our end ends the reflector: its next read sees end of file.
    drop(fd);
    if let Some(t) = reflector {
        let _ = t.join();
    }
    let res = res?;
    Ok(NetSample::from_results(
        &res,
        w.workload,
        1000.0,
        None,
        vec![("process".into(), cpu_s)],
    ))
}

enum Link {
    Tap(Tap),
    Socket(OwnedFd),
}

impl Link {
    fn raw(&self) -> RawFd {
        match self {
            Link::Tap(t) => t.as_raw_fd(),
            Link::Socket(s) => s.as_raw_fd(),
        }
    }
}

fn socket_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into `fds`, which outlives the call.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return Err(Error::SocketPair(io::Error::last_os_error()));
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The far end of a socket pair: every message back with its MACs swapped, until the other
/// end closes.
fn reflect(fd: &OwnedFd) {
    let mut buf = [0u8; RX_BUF];
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`, which outlives the call.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        let frame = &mut buf[..n as usize];
        net::reflect(frame);
        // SAFETY: write reads `frame.len()` bytes of `frame`, which outlives the call.
        let w = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if w < 0 {
            return;
        }
    }
}

/// A frame in flight: its sequence number, when it left, and whether its send is still
/// in the ring (its buffer is the kernel's until then).
#[derive(Clone, Copy, Default)]
struct Slot {
    busy: bool,
    sending: bool,
    seq: u64,
    sent_at: u64,
}

struct Runner<'a> {
    work: &'a NetWork,
    fd: RawFd,
    // Declared before the buffers: dropped first. Every operation has completed or been
    // cancelled and reaped before `run` returns, so no buffer is used after it goes.
    ring: IoUring,
    tx: Vec<Vec<u8>>,
    rx: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    reads_posted: usize,
    /// Set once the receives are being cancelled: none is posted again.
    cancelling: bool,
    start: Instant,
    res: NetResults,
    latency: Histogram,
}

impl<'a> Runner<'a> {
    fn new(fd: RawFd, work: &'a NetWork) -> Result<Self, Error> {
        let depth = usize::from(work.depth);
        let reads = depth.clamp(8, 64);
        let ring =
            IoUring::new(((depth + reads) * 2).next_power_of_two() as u32).map_err(Error::Ring)?;
        let len = work.frame_bytes as usize;
        let mut frame = vec![0u8; len.min(MAX_FRAME as usize)];
        net::write(&mut frame, BROADCAST, MAC, 0, 0, work.seed);
        Ok(Runner {
            work,
            fd,
            ring,
            tx: vec![frame; depth],
            rx: vec![vec![0u8; RX_BUF]; reads],
            slots: vec![Slot::default(); depth],
            reads_posted: 0,
            cancelling: false,
            start: Instant::now(),
            res: NetResults::default(),
            latency: Histogram::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn push(&mut self, sqe: &squeue::Entry) -> Result<(), Error> {
        // SAFETY: every entry points at a buffer of `self.tx` or `self.rx`, which stays put
        // (never resized) and outlives the operation: `run` reaps every one before returning.
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            self.ring.submit().map_err(Error::Submit)?;
        }
        Ok(())
    }

    fn post_read(&mut self, i: usize) -> Result<(), Error> {
        let buf = &mut self.rx[i];
        let sqe = opcode::Read::new(Fd(self.fd), buf.as_mut_ptr(), buf.len() as u32)
            .build()
            .user_data(READ | i as u64);
        self.push(&sqe)?;
        self.reads_posted += 1;
        Ok(())
    }

    fn send(&mut self, slot: usize, seq: u64) -> Result<(), Error> {
        let at = self.now();
        let buf = &mut self.tx[slot];
        net::set_header(buf, seq, at);
        let sqe = opcode::Write::new(Fd(self.fd), buf.as_ptr(), buf.len() as u32)
            .build()
            .user_data(slot as u64);
        self.push(&sqe)?;
        let s = &mut self.slots[slot];
        s.sending = true;
        s.busy = true;
        s.seq = seq;
        s.sent_at = at;
        self.res.sent += 1;
        Ok(())
    }

    /// Submits, waits up to [`WAIT`] for one completion, and hands every completion to
    /// `on_read` (a receive: buffer index and length) or marks the send done.
    fn reap(&mut self, mut on_read: impl FnMut(&mut Self, usize, usize)) -> Result<(), Error> {
        let ts = Timespec::new().nsec(WAIT.as_nanos() as u32);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(Error::Submit(e)),
        }
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut retry = Vec::new();
        for (data, result) in done {
            if data == CANCEL {
                continue;
            }
            if data & READ != 0 {
                self.reads_posted -= 1;
                let i = (data & !READ) as usize;
                match result {
                    n if n >= 0 => on_read(self, i, n as usize),
                    n if -n == libc::ECANCELED => {}
                    // Interrupted before a frame came: wait again.
                    n if -n == libc::EINTR || -n == libc::EAGAIN => retry.push(i),
                    n => return Err(Error::Recv(io::Error::from_raw_os_error(-n))),
                }
            } else {
                let slot = &mut self.slots[data as usize];
                slot.sending = false;
                let want = self.tx[data as usize].len() as i32;
                if result != want {
                    return Err(Error::Send(if result < 0 {
                        io::Error::from_raw_os_error(-result)
                    } else {
                        io::Error::new(io::ErrorKind::WriteZero, "short frame send")
                    }));
                }
            }
        }
        if !self.cancelling {
            for i in retry {
                self.post_read(i)?;
            }
        }
        Ok(())
    }

    /// Checks a received frame; returns its sequence number if it is ours and intact.
    fn classify(&mut self, i: usize, n: usize) -> Option<u64> {
        let len = self.work.frame_bytes as usize;
        match net::check(&self.rx[i][..n], Some(len), self.work.seed) {
            Ok(info) => Some(info.seq),
            Err(FrameError::EtherType) => {
                self.res.foreign += 1;
                None
            }
            Err(_) => {
                self.res.bad += 1;
                None
            }
        }
    }

    fn stop_reached(&self, now: u64) -> bool {
        let w = self.work;
        (w.ops != 0 && self.res.sent >= w.ops)
            || (!w.duration.is_zero() && now >= w.duration.as_nanos() as u64)
    }

    fn run(mut self) -> Result<NetResults, Error> {
        for i in 0..self.rx.len() {
            self.post_read(i)?;
        }
        self.start = Instant::now();
        let res = match self.work.workload {
            NetWorkload::Tx => self.tx_loop(),
            NetWorkload::RoundTrip => self.round_trip_loop(),
        };
        let cleanup = self.cancel_all();
        res.and(cleanup)?;
        self.res.bytes = self.res.sent * u64::from(self.work.frame_bytes);
        self.res.latency = self.latency;
        self.res.mac = net::mac_to_u64(MAC);
        Ok(self.res)
    }

    /// Every receive handled, reposted.
    fn on_tx_read(&mut self, i: usize, n: usize) {
        if self.classify(i, n).is_some() {
            self.res.received += 1;
        }
    }

    fn tx_loop(&mut self) -> Result<(), Error> {
        let mut now = 0;
        let mut repost = Vec::new();
        while !self.stop_reached(now) {
            for slot in 0..self.slots.len() {
                if !self.slots[slot].sending && !self.stop_reached(now) {
                    let seq = self.res.sent;
                    self.send(slot, seq)?;
                }
            }
            self.reap(|r, i, n| {
                r.on_tx_read(i, n);
                repost.push(i);
            })?;
            for i in repost.drain(..) {
                self.post_read(i)?;
            }
            now = self.now();
        }
        self.res.elapsed_ticks = now;
        // Reflections still on their way: not part of the rate, but part of the count.
        let drain = Instant::now() + self.work.timeout;
        while (self.slots.iter().any(|s| s.sending)
            || self.res.received + self.res.bad < self.res.sent)
            && Instant::now() < drain
        {
            self.reap(|r, i, n| {
                r.on_tx_read(i, n);
                repost.push(i);
            })?;
            for i in repost.drain(..) {
                self.post_read(i)?;
            }
        }
        Ok(())
    }

    fn round_trip_loop(&mut self) -> Result<(), Error> {
        let depth = self.slots.len() as u64;
        let timeout = self.work.timeout.as_nanos() as u64;
        let mut next_seq: Vec<u64> = (0..depth).collect();
        let mut stopping = false;
        let mut repost = Vec::new();
        loop {
            let now = self.now();
            stopping = stopping || self.stop_reached(now);
            let busy = self.slots.iter().filter(|s| s.busy || s.sending).count();
            if stopping && busy == 0 {
                break;
            }
            if !stopping {
                for (slot, seq) in next_seq.iter_mut().enumerate() {
                    let s = self.slots[slot];
                    if s.busy || s.sending || self.stop_reached(now) {
                        continue;
                    }
                    self.send(slot, *seq)?;
                    *seq += depth;
                }
            }
            self.reap(|r, i, n| {
                repost.push(i);
                let Some(seq) = r.classify(i, n) else { return };
                let at = r.now();
                let slot = &mut r.slots[(seq % depth) as usize];
                if !slot.busy || slot.seq != seq {
                    // A duplicate, or a frame already counted lost.
                    r.res.bad += 1;
                    return;
                }
                slot.busy = false;
                r.latency.record(at.saturating_sub(slot.sent_at));
                r.res.received += 1;
            })?;
            for i in repost.drain(..) {
                self.post_read(i)?;
            }
            let now = self.now();
            for slot in self.slots.iter_mut() {
                if slot.busy && now.saturating_sub(slot.sent_at) > timeout {
                    slot.busy = false;
                    self.res.lost += 1;
                }
            }
        }
        self.res.elapsed_ticks = self.now();
        Ok(())
    }

    /// Cancels the posted receives and waits for every operation to complete, so no buffer
    /// is still the kernel's when the runner goes.
    fn cancel_all(&mut self) -> Result<(), Error> {
        self.cancelling = true;
        for i in 0..self.rx.len() {
            let sqe = opcode::AsyncCancel::new(READ | i as u64)
                .build()
                .user_data(CANCEL);
            self.push(&sqe)?;
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while (self.reads_posted > 0 || self.slots.iter().any(|s| s.sending))
            && Instant::now() < give_up
        {
            self.reap(|_, _, _| {})?;
        }
        if self.reads_posted > 0 {
            // The kernel still owns receive buffers: leak them rather than free them under it.
            log::warn!(
                "{} receives did not cancel; leaking their buffers",
                self.reads_posted
            );
            std::mem::forget(std::mem::take(&mut self.rx));
        }
        Ok(())
    }
}
