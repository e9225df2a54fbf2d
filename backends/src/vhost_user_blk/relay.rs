//! A message-level layer between the frontend and vhost-user-backend's handler.
//!
//! vhost-user-backend 0.24.0 answers GET_INFLIGHT_FD / SET_INFLIGHT_FD with "not supported",
//! and its `VhostUserHandler` can be neither wrapped nor replaced piecemeal (private module,
//! `pub(crate)` constructor). Two ways out: our own `VhostUserBackendReqHandlerMut`, which
//! means re-writing the memory table, vring state, kick/call handling and thread management the
//! crate gets right today; or this relay, which leaves all of that to the crate and only adds
//! what is missing. The relay reads each frontend message whole, with its descriptors, and:
//!
//! - answers GET_INFLIGHT_FD and SET_INFLIGHT_FD itself ([`super::inflight_region`]) once the
//!   frontend has acked INFLIGHT_SHMFD, which it adds to the GET_PROTOCOL_FEATURES reply (and
//!   strips from SET_PROTOCOL_FEATURES: the crate never sees it);
//! - on SET_VRING_KICK tells the device the ring is starting (its worker checks the inflight
//!   region before taking chains), forwards the message and then kicks the ring once, as
//!   libvhost-user does, so that requests to redo run even if the guest never kicks again;
//! - enforces the limits the crate does not: SET_VRING_NUM a power of two within the device's
//!   size, at most `max_mem_slots` memory regions (also the GET_MAX_MEM_SLOTS answer), no
//!   message larger than vhost-user's 4 KiB;
//! - forwards everything else unchanged, and the crate's replies back.
//!
//! A refused message gets an error ack if the frontend asked for one (REPLY_ACK), and ends the
//! connection otherwise. The relay's own replies need no ordering against the crate's: a
//! frontend sends a message that expects a reply only after the previous reply arrived.

use std::fs::File;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::fd_stream::{read_exact_fds, u16_at, u32_at, write_all_fds};

use super::inflight_region::{self, Geometry, Region};
use crate::cli::error_chain;

/// vhost-user header: request u32, flags u32, size u32.
const HEADER: usize = 12;
/// vhost-user's largest message body (vhost's `MAX_MSG_SIZE`).
const MAX_BODY: usize = 0x1000;
/// Descriptors one message may carry (vhost's `MAX_ATTACHED_FD_ENTRIES`).
const MAX_FDS: usize = 32;

const VERSION: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;

const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_KICK: u32 = 12;
const GET_INFLIGHT_FD: u32 = 31;
const SET_INFLIGHT_FD: u32 = 32;
const GET_MAX_MEM_SLOTS: u32 = 36;
const ADD_MEM_REG: u32 = 37;
const REM_MEM_REG: u32 = 38;

const F_REPLY_ACK: u64 = 1 << 3;
const F_INFLIGHT_SHMFD: u64 = 1 << 12;
/// SET_VRING_KICK payload: bits 0..8 the index, bit 8 "no descriptor".
const VRING_INDEX_MASK: u64 = 0xff;
const VRING_NOFD: u64 = 1 << 8;
/// `sizeof(VhostUserInflight)`: two u64, two u16, padded to 8.
const INFLIGHT_BODY: usize = 24;

/// The device side the relay reports to.
pub trait Device: Send + Sync {
    fn num_queues(&self) -> u16;
    /// The largest ring size the device takes.
    fn max_queue_size(&self) -> u16;
    /// The frontend handed over an inflight region (SET_INFLIGHT_FD).
    fn set_inflight(&self, region: Arc<Region>);
    /// SET_VRING_KICK for ring `index` is about to reach the crate: the ring (re)starts.
    fn vring_starting(&self, index: u16);
}

/// What the relay enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Guest memory regions the frontend may map at once.
    pub max_mem_slots: u32,
}

/// One message read whole, with the descriptors that came with it.
pub struct Message {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Message {
    fn request(&self) -> u32 {
        u32_at(&self.bytes, 0)
    }

    fn flags(&self) -> u32 {
        u32_at(&self.bytes, 4)
    }

    fn body(&self) -> &[u8] {
        &self.bytes[HEADER..]
    }

    fn reply(request: u32, body: &[u8], fds: Vec<OwnedFd>) -> Message {
        let mut bytes = Vec::with_capacity(HEADER + body.len());
        bytes.extend_from_slice(&request.to_le_bytes());
        bytes.extend_from_slice(&(VERSION | REPLY).to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        Message { bytes, fds }
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

/// Reads one whole message; `None` at a clean end of stream.
pub fn read_message(s: &UnixStream) -> io::Result<Option<Message>> {
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER];
    match read_exact_fds::<MAX_FDS>(s, &mut header, &mut fds) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        r => r?,
    }
    let size = u32_at(&header, 8) as usize;
    if size > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message body of {size} bytes"),
        ));
    }
    let mut bytes = vec![0u8; HEADER + size];
    bytes[..HEADER].copy_from_slice(&header);
    read_exact_fds::<MAX_FDS>(s, &mut bytes[HEADER..], &mut fds)?;
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} descriptors", fds.len()),
        ));
    }
    Ok(Some(Message { bytes, fds }))
}

pub fn write_message(s: &UnixStream, m: &Message) -> io::Result<()> {
    write_all_fds(s, &m.bytes, &m.fds)
}

/// What to do with one frontend message.
enum Verdict {
    Forward(Message),
    /// Answered here (with a reply or none).
    Answered(Option<Message>),
    /// Forward, then kick the ring through this eventfd.
    ForwardAndKick(Message, Option<OwnedFd>),
    Refuse(String),
}

/// The frontend-facing state of one connection.
struct Vetting<'a> {
    device: &'a dyn Device,
    limits: Limits,
    acked_protocol: u64,
    mem_slots: u32,
}

impl Vetting<'_> {
    fn reply_ack(&self) -> bool {
        self.acked_protocol & F_REPLY_ACK != 0
    }

    fn inflight(&self) -> bool {
        self.acked_protocol & F_INFLIGHT_SHMFD != 0
    }

    fn judge(&mut self, mut m: Message) -> Verdict {
        let body = m.body();
        match m.request() {
            SET_PROTOCOL_FEATURES if body.len() == 8 => {
                self.acked_protocol = u64_at(body, 0);
                let stripped = self.acked_protocol & !F_INFLIGHT_SHMFD;
                m.bytes[HEADER..].copy_from_slice(&stripped.to_le_bytes());
                Verdict::Forward(m)
            }
            SET_VRING_NUM if body.len() == 8 => {
                let num = u32_at(body, 4);
                let max = u32::from(self.device.max_queue_size());
                if num == 0 || num > max || !num.is_power_of_two() {
                    return Verdict::Refuse(format!(
                        "ring size {num} is not a power of two in 1..={max}"
                    ));
                }
                Verdict::Forward(m)
            }
            SET_MEM_TABLE if body.len() >= 4 => {
                let n = u32_at(body, 0);
                if n > self.limits.max_mem_slots {
                    return Verdict::Refuse(format!(
                        "{n} memory regions; the limit is {}",
                        self.limits.max_mem_slots
                    ));
                }
                self.mem_slots = n;
                Verdict::Forward(m)
            }
            ADD_MEM_REG => {
                if self.mem_slots >= self.limits.max_mem_slots {
                    return Verdict::Refuse(format!(
                        "a memory region beyond the limit of {}",
                        self.limits.max_mem_slots
                    ));
                }
                self.mem_slots += 1;
                Verdict::Forward(m)
            }
            REM_MEM_REG => {
                self.mem_slots = self.mem_slots.saturating_sub(1);
                Verdict::Forward(m)
            }
            SET_VRING_KICK if body.len() == 8 => {
                let payload = u64_at(body, 0);
                let index = (payload & VRING_INDEX_MASK) as u16;
                let kick = if payload & VRING_NOFD == 0 && m.fds.len() == 1 {
                    m.fds[0].try_clone().ok()
                } else {
                    None
                };
                if index < self.device.num_queues() {
                    self.device.vring_starting(index);
                }
                Verdict::ForwardAndKick(m, kick)
            }
            GET_INFLIGHT_FD if self.inflight() => self.get_inflight(&m),
            SET_INFLIGHT_FD if self.inflight() => self.set_inflight(m),
            _ => Verdict::Forward(m),
        }
    }

    fn geometry(body: &[u8]) -> Option<Geometry> {
        (body.len() == INFLIGHT_BODY).then(|| Geometry {
            mmap_size: u64_at(body, 0),
            mmap_offset: u64_at(body, 8),
            num_queues: u16_at(body, 16),
            queue_size: u16_at(body, 18),
        })
    }

    fn get_inflight(&self, m: &Message) -> Verdict {
        let Some(asked) = Self::geometry(m.body()) else {
            return Verdict::Refuse(format!("GET_INFLIGHT_FD of {} bytes", m.body().len()));
        };
        match inflight_region::create(
            asked.num_queues,
            asked.queue_size,
            self.device.num_queues(),
            self.device.max_queue_size(),
        ) {
            Ok((file, g)) => {
                let mut body = [0u8; INFLIGHT_BODY];
                body[0..8].copy_from_slice(&g.mmap_size.to_le_bytes());
                body[8..16].copy_from_slice(&g.mmap_offset.to_le_bytes());
                body[16..18].copy_from_slice(&g.num_queues.to_le_bytes());
                body[18..20].copy_from_slice(&g.queue_size.to_le_bytes());
                let reply = Message::reply(GET_INFLIGHT_FD, &body, vec![OwnedFd::from(file)]);
                Verdict::Answered(Some(reply))
            }
            // The message has a reply of its own: the error can only be an empty one, which
            // the frontend reads as a failure.
            Err(e) => Verdict::Refuse(format!("GET_INFLIGHT_FD: {}", error_chain(&e))),
        }
    }

    fn set_inflight(&self, mut m: Message) -> Verdict {
        let Some(g) = Self::geometry(m.body()) else {
            return Verdict::Refuse(format!("SET_INFLIGHT_FD of {} bytes", m.body().len()));
        };
        if m.fds.len() != 1 {
            return Verdict::Refuse(format!("SET_INFLIGHT_FD with {} descriptors", m.fds.len()));
        }
        let file = File::from(m.fds.remove(0));
        let max_queues = self.device.num_queues();
        match Region::map(&file, &g, max_queues, self.device.max_queue_size()) {
            Ok(region) => {
                self.device.set_inflight(Arc::new(region));
                Verdict::Answered(self.ack(&m, true))
            }
            Err(e) => Verdict::Refuse(format!("SET_INFLIGHT_FD: {}", error_chain(&e))),
        }
    }

    /// The REPLY_ACK answer to `m`, if the frontend asked for one.
    fn ack(&self, m: &Message, ok: bool) -> Option<Message> {
        (self.reply_ack() && m.flags() & NEED_REPLY != 0).then(|| {
            let code: u64 = if ok { 0 } else { 1 };
            Message::reply(m.request(), &code.to_le_bytes(), Vec::new())
        })
    }
}

/// The crate's reply, with what the relay adds to it.
fn patch_reply(m: &mut Message, limits: Limits) {
    if m.flags() & REPLY == 0 || m.body().len() != 8 {
        return;
    }
    let value = u64_at(m.body(), 0);
    let patched = match m.request() {
        GET_PROTOCOL_FEATURES => value | F_INFLIGHT_SHMFD,
        GET_MAX_MEM_SLOTS => value.min(u64::from(limits.max_mem_slots)),
        _ => return,
    };
    m.bytes[HEADER..].copy_from_slice(&patched.to_le_bytes());
}

/// Relays one frontend connection to the crate's end until either side closes or the frontend
/// sends a message that ends the connection; then both ends are shut down, so the crate's
/// connection ends too.
pub fn relay(frontend: UnixStream, crate_end: UnixStream, device: &dyn Device, limits: Limits) {
    let writer = match frontend.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            log::warn!("cannot relay the connection: {e}");
            return;
        }
    };
    let Ok(replies_from) = crate_end.try_clone() else {
        log::warn!("cannot relay the connection");
        return;
    };
    let reply_writer = writer.clone();
    let replies = thread::Builder::new()
        .name("vhost-user-replies".into())
        .spawn(move || {
            while let Ok(Some(mut m)) = read_message(&replies_from) {
                patch_reply(&mut m, limits);
                let w = reply_writer.lock().unwrap_or_else(PoisonError::into_inner);
                if write_message(&w, &m).is_err() {
                    break;
                }
            }
            let w = reply_writer.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = w.shutdown(Shutdown::Both);
        });
    let replies = match replies {
        Ok(r) => r,
        Err(e) => {
            log::warn!("cannot start the reply relay: {e}");
            return;
        }
    };
    let mut vetting = Vetting {
        device,
        limits,
        acked_protocol: 0,
        mem_slots: 0,
    };
    loop {
        let m = match read_message(&frontend) {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                log::warn!("frontend disconnected: {e}");
                break;
            }
        };
        let wants_ack = vetting.reply_ack() && m.flags() & NEED_REPLY != 0;
        let request = m.request();
        let sent = match vetting.judge(m) {
            Verdict::Forward(m) => write_message(&crate_end, &m),
            Verdict::ForwardAndKick(m, kick) => {
                let sent = write_message(&crate_end, &m);
                if let Some(kick) = kick {
                    // Wakes the worker even if the guest never kicks again; a spurious kick is
                    // harmless.
                    // SAFETY: writes 8 bytes from a local to an eventfd we hold a duplicate of.
                    unsafe { libc::write(kick.as_raw_fd(), (&1u64 as *const u64).cast(), 8) };
                }
                sent
            }
            Verdict::Answered(None) => Ok(()),
            Verdict::Answered(Some(reply)) => {
                let w = writer.lock().unwrap_or_else(PoisonError::into_inner);
                write_message(&w, &reply)
            }
            Verdict::Refuse(why) if wants_ack && request != GET_INFLIGHT_FD => {
                log::warn!("refused a frontend message: {why}");
                let nack = Message::reply(request, &1u64.to_le_bytes(), Vec::new());
                let w = writer.lock().unwrap_or_else(PoisonError::into_inner);
                write_message(&w, &nack)
            }
            Verdict::Refuse(why) => {
                log::warn!("frontend disconnected: refused message: {why}");
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = crate_end.shutdown(Shutdown::Both);
    let _ = frontend.shutdown(Shutdown::Both);
    let _ = replies.join();
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicU16, Ordering};

    use super::*;

    #[derive(Default)]
    struct FakeDevice {
        regions: Mutex<Vec<Arc<Region>>>,
        started: AtomicU16,
    }

    impl Device for FakeDevice {
        fn num_queues(&self) -> u16 {
            2
        }
        fn max_queue_size(&self) -> u16 {
            256
        }
        fn set_inflight(&self, region: Arc<Region>) {
            self.regions.lock().unwrap().push(region);
        }
        fn vring_starting(&self, index: u16) {
            self.started.fetch_add(index + 1, Ordering::SeqCst);
        }
    }

    fn msg(request: u32, flags: u32, body: &[u8], fds: Vec<OwnedFd>) -> Message {
        let mut bytes = request.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(flags | VERSION).to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        Message { bytes, fds }
    }

    fn inflight_body(size: u64, offset: u64, queues: u16, qsize: u16) -> Vec<u8> {
        let mut b = vec![0u8; INFLIGHT_BODY];
        b[0..8].copy_from_slice(&size.to_le_bytes());
        b[8..16].copy_from_slice(&offset.to_le_bytes());
        b[16..18].copy_from_slice(&queues.to_le_bytes());
        b[18..20].copy_from_slice(&qsize.to_le_bytes());
        b
    }

    /// A relay between a test frontend and a test "crate" end, on a thread.
    struct Rig {
        fe: UnixStream,
        crate_end: UnixStream,
        device: Arc<FakeDevice>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Rig {
        fn new(max_mem_slots: u32) -> Rig {
            let (fe, relay_fe) = UnixStream::pair().unwrap();
            let (relay_crate, crate_end) = UnixStream::pair().unwrap();
            let device = Arc::new(FakeDevice::default());
            let d = device.clone();
            let thread = thread::spawn(move || {
                relay(relay_fe, relay_crate, &*d, Limits { max_mem_slots });
            });
            Rig {
                fe,
                crate_end,
                device,
                thread: Some(thread),
            }
        }

        fn send(&self, m: &Message) {
            write_message(&self.fe, m).unwrap();
        }

        fn forwarded(&self) -> Message {
            read_message(&self.crate_end).unwrap().unwrap()
        }

        fn reply(&self) -> Option<Message> {
            read_message(&self.fe).unwrap()
        }

        fn ack_protocol(&self, bits: u64) {
            self.send(&msg(
                SET_PROTOCOL_FEATURES,
                0,
                &bits.to_le_bytes(),
                Vec::new(),
            ));
            let f = self.forwarded();
            assert_eq!(u64_at(f.body(), 0), bits & !F_INFLIGHT_SHMFD, "stripped");
        }

        fn closed(mut self) -> bool {
            let ended = self.reply().is_none();
            self.thread.take().unwrap().join().unwrap();
            ended
        }
    }

    #[test]
    fn protocol_features_gain_inflight_and_mem_slots_are_capped() {
        let rig = Rig::new(8);
        rig.send(&msg(GET_PROTOCOL_FEATURES, 0, &[], Vec::new()));
        let f = rig.forwarded();
        assert_eq!(f.request(), GET_PROTOCOL_FEATURES);
        let mut reply = Message::reply(GET_PROTOCOL_FEATURES, &0x1u64.to_le_bytes(), Vec::new());
        write_message(&rig.crate_end, &reply).unwrap();
        assert_eq!(
            u64_at(rig.reply().unwrap().body(), 0),
            0x1 | F_INFLIGHT_SHMFD
        );
        reply = Message::reply(GET_MAX_MEM_SLOTS, &509u64.to_le_bytes(), Vec::new());
        write_message(&rig.crate_end, &reply).unwrap();
        assert_eq!(u64_at(rig.reply().unwrap().body(), 0), 8);
    }

    #[test]
    fn inflight_messages_are_answered_here_once_negotiated() {
        let rig = Rig::new(8);
        // Not negotiated: the crate gets it (and refuses it).
        rig.send(&msg(
            GET_INFLIGHT_FD,
            0,
            &inflight_body(0, 0, 2, 256),
            Vec::new(),
        ));
        assert_eq!(rig.forwarded().request(), GET_INFLIGHT_FD);

        rig.ack_protocol(F_INFLIGHT_SHMFD | F_REPLY_ACK);
        rig.send(&msg(
            GET_INFLIGHT_FD,
            0,
            &inflight_body(0, 0, 2, 256),
            Vec::new(),
        ));
        let mut r = rig.reply().unwrap();
        assert_eq!(r.flags(), VERSION | REPLY);
        assert_eq!(u64_at(r.body(), 0), 2 * 4160);
        assert_eq!(r.fds.len(), 1);
        let fd = r.fds.remove(0);
        let body = inflight_body(2 * 4160, 0, 2, 256);
        rig.send(&msg(SET_INFLIGHT_FD, NEED_REPLY, &body, vec![fd]));
        let ack = rig.reply().unwrap();
        assert_eq!((ack.request(), u64_at(ack.body(), 0)), (SET_INFLIGHT_FD, 0));
        assert_eq!(rig.device.regions.lock().unwrap().len(), 1);

        // A size that does not fit the file: an error ack, and the connection goes on.
        let (file, _) = inflight_region::create(1, 256, 2, 256).unwrap();
        let bad = inflight_body(2 * 4160, 0, 2, 256);
        rig.send(&msg(SET_INFLIGHT_FD, NEED_REPLY, &bad, vec![file.into()]));
        let nack = rig.reply().unwrap();
        assert_eq!(u64_at(nack.body(), 0), 1);
        assert_eq!(rig.device.regions.lock().unwrap().len(), 1);

        // Without an ack to carry the error, the connection ends.
        let (file, _) = inflight_region::create(1, 256, 2, 256).unwrap();
        rig.send(&msg(SET_INFLIGHT_FD, 0, &bad, vec![file.into()]));
        assert!(rig.closed());
    }

    #[test]
    fn a_bad_get_inflight_ends_the_connection() {
        let rig = Rig::new(8);
        rig.ack_protocol(F_INFLIGHT_SHMFD | F_REPLY_ACK);
        rig.send(&msg(
            GET_INFLIGHT_FD,
            NEED_REPLY,
            &inflight_body(0, 0, 3, 256),
            Vec::new(),
        ));
        assert!(rig.closed());
    }

    #[test]
    fn ring_sizes_must_be_powers_of_two_within_the_device() {
        let rig = Rig::new(8);
        rig.ack_protocol(F_REPLY_ACK);
        let num = |n: u32| {
            let mut b = 0u32.to_le_bytes().to_vec();
            b.extend_from_slice(&n.to_le_bytes());
            msg(SET_VRING_NUM, NEED_REPLY, &b, Vec::new())
        };
        rig.send(&num(128));
        assert_eq!(rig.forwarded().request(), SET_VRING_NUM);
        for bad in [0, 100, 512] {
            rig.send(&num(bad));
            assert_eq!(u64_at(rig.reply().unwrap().body(), 0), 1, "{bad}");
        }
        // Without REPLY_ACK a refusal ends the connection.
        let rig = Rig::new(8);
        rig.send(&num(100));
        assert!(rig.closed());
    }

    #[test]
    fn memory_regions_are_capped() {
        let rig = Rig::new(2);
        let table = |n: u32| {
            let mut b = n.to_le_bytes().to_vec();
            b.extend_from_slice(&[0; 4]);
            b.extend(std::iter::repeat_n(0u8, 32 * n as usize));
            msg(SET_MEM_TABLE, 0, &b, Vec::new())
        };
        rig.send(&table(2));
        assert_eq!(rig.forwarded().request(), SET_MEM_TABLE);
        rig.send(&msg(REM_MEM_REG, 0, &[0; 40], Vec::new()));
        rig.forwarded();
        rig.send(&msg(ADD_MEM_REG, 0, &[0; 40], Vec::new()));
        rig.forwarded();
        rig.send(&msg(ADD_MEM_REG, 0, &[0; 40], Vec::new()));
        assert!(rig.closed(), "a third region");
        let rig = Rig::new(2);
        rig.send(&table(3));
        assert!(rig.closed());
    }

    #[test]
    fn a_kick_starts_the_ring_and_wakes_it() {
        let rig = Rig::new(8);
        // SAFETY: plain FFI call; the result is checked.
        let fd = unsafe { libc::eventfd(0, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let kick = unsafe { OwnedFd::from_raw_fd(fd) };
        let dup = kick.try_clone().unwrap();
        rig.send(&msg(SET_VRING_KICK, 0, &1u64.to_le_bytes(), vec![dup]));
        let f = rig.forwarded();
        assert_eq!(f.fds.len(), 1);
        assert_eq!(rig.device.started.load(Ordering::SeqCst), 2, "ring 1");
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a local from our eventfd (blocking: the relay kicks after
        // forwarding).
        let n = unsafe { libc::read(kick.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        assert_eq!((n, count), (8, 1));
    }

    #[test]
    fn oversized_messages_end_the_connection() {
        let rig = Rig::new(8);
        let mut m = msg(SET_MEM_TABLE, 0, &[], Vec::new());
        m.bytes[8..12].copy_from_slice(&(MAX_BODY as u32 + 1).to_le_bytes());
        rig.send(&m);
        assert!(rig.closed());
    }
}
