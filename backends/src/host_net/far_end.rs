//! The far end of a network path: a thread with an `AF_PACKET` socket on a link, optionally
//! inside a [`NetNs`], that turns every frame of the bench's EtherType around
//! ([`iopath_mailbox::net::reflect`]) or only counts it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use iopath_mailbox::net::{self, ETHERTYPE, HEADER_BYTES};

use super::netns::enter_path;
use super::{Error, NetNs, PacketSocket};

/// How often a receive gives up to look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Socket receive buffer: a few thousand frames of slack behind a burst.
const RCVBUF: usize = 8 << 20;
/// A frame buffer: the largest frame at a 1500-byte MTU, with room to spot longer ones.
const BUF: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FarMode {
    /// Send every frame back with its MACs swapped.
    Reflect,
    /// Count every frame and drop it.
    Sink,
}

/// What a far end saw. Only frames of [`ETHERTYPE`] reach it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FarCounts {
    pub received: u64,
    pub bytes: u64,
    /// Frames sent back (reflect mode).
    pub reflected: u64,
    /// Frames shorter than the bench's header: dropped, never reflected.
    pub short: u64,
    /// Sends that failed (the link's queue was full, say).
    pub send_errors: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    bytes: AtomicU64,
    reflected: AtomicU64,
    short: AtomicU64,
    send_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> FarCounts {
        FarCounts {
            received: self.received.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            reflected: self.reflected.load(Ordering::Relaxed),
            short: self.short.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

/// A running far end; stopped and joined when dropped.
pub struct FarEnd {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl FarEnd {
    /// Starts a far end on link `ifname` of `ns` (`None`: this process's namespace). Returns
    /// once its socket is bound, so no frame sent after this is missed.
    pub fn spawn(ns: Option<&NetNs>, ifname: &str, mode: FarMode) -> Result<FarEnd, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns_path = ns.map(|n| (n.name().to_string(), n.path()));
        let ifname = ifname.to_string();
        let (stop2, counters2) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name(format!("far-{ifname}"))
            .spawn(move || {
                let socket = ns_path
                    .map_or(Ok(()), |(name, path)| enter_path(&name, &path))
                    .and_then(|()| PacketSocket::open(&ifname, ETHERTYPE, Some(POLL)));
                match socket {
                    Ok(s) => {
                        if let Err(e) = s.set_recv_buffer(RCVBUF) {
                            log::debug!("far end on {}: receive buffer: {e}", s.ifname());
                        }
                        let _ = ready_tx.send(Ok(()));
                        serve(&s, mode, &stop2, &counters2);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(Error::Thread)?;
        let mut far = FarEnd {
            stop,
            counters,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(far),
            Ok(Err(e)) => {
                far.join();
                Err(e)
            }
            Err(_) => {
                far.join();
                Err(Error::ThreadGone)
            }
        }
    }

    pub fn counts(&self) -> FarCounts {
        self.counters.snapshot()
    }

    /// Stops the thread and returns the final counts.
    pub fn stop(mut self) -> FarCounts {
        self.join();
        self.counts()
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        self.join();
    }
}

fn serve(socket: &PacketSocket, mode: FarMode, stop: &AtomicBool, c: &Counters) {
    let mut buf = [0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv(&mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("far end on {}: {e}", socket.ifname());
                std::thread::sleep(POLL);
                continue;
            }
        };
        c.received.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if n < HEADER_BYTES {
            c.short.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if mode == FarMode::Reflect {
            let frame = &mut buf[..n];
            net::reflect(frame);
            match socket.send(frame) {
                Ok(()) => c.reflected.fetch_add(1, Ordering::Relaxed),
                Err(_) => c.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}
