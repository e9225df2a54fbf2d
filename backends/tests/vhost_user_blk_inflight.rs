//! INFLIGHT_SHMFD end to end: a daemon takes write requests and dies before finishing one;
//! the real daemon binary, started afresh and handed the same inflight region, redoes exactly
//! the unfinished one, and its data is in the file.
//!
//! The first daemon runs in this process over an engine that holds back writes to sector 0, so
//! the unfinished request is a known one and the others complete out of order around it; it is
//! torn down without draining (as a crash leaves it). The frontend then does what QEMU does
//! after a backend crash: SET_VRING_BASE is the used index, and the region is handed back. A
//! daemon that did not redo the region's heads would take the chain after the used index again
//! (one that already completed) and never finish the held one.

mod vhost_user_blk_common;

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use backends::engine::{
    BlockEngine, BlockOp, BlockRequest, Completion, SubmitError, SubmitErrorKind, UringConfig,
    UringEngine,
};
use backends::vhost_user_blk::backend::ServeOptions;
use backends::vhost_user_blk::relay::Limits;
use backends::vhost_user_blk::session::{PrivateSocket, Session};
use backends::vhost_user_blk::{BlkBackend, BlkConfig};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_blk_common::*;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

const DISK: usize = 1 << 20;

/// A file engine that keeps writes to `held_offset` to itself: they never complete.
struct HoldingEngine {
    inner: UringEngine,
    held_offset: u64,
    held: Arc<Mutex<Vec<u64>>>,
}

impl BlockEngine for HoldingEngine {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }
    unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError> {
        if request.op == BlockOp::Write && request.offset == self.held_offset {
            // Dropped with the engine, never handed to the kernel: the buffers are not used.
            self.held.lock().unwrap().push(request.offset);
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.inner.push(request) }
    }
    fn submit(&mut self) -> Result<usize, SubmitErrorKind> {
        self.inner.submit()
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        self.inner.reap(out)
    }
    fn wait(&mut self, min: usize) -> Result<(), SubmitErrorKind> {
        self.inner.wait(min)
    }
    fn completion_fd(&self) -> Option<RawFd> {
        self.inner.completion_fd()
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}

/// The first daemon: serves one connection on `stream` over a holding engine; returns the
/// session once the connection has ended, with the held request still unfinished.
fn crashing_daemon(
    path: &Path,
    stream: UnixStream,
    held: Arc<Mutex<Vec<u64>>>,
) -> thread::JoinHandle<Session> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let inner = UringEngine::new(&UringConfig {
            path: path.clone(),
            read_only: false,
            direct: false,
            queue_depth: 256,
        })
        .unwrap();
        let engine = HoldingEngine {
            inner,
            held_offset: 0,
            held,
        };
        let config = BlkConfig {
            capacity: DISK as u64,
            block_size: 512,
            read_only: false,
            num_queues: 1,
            queue_size: 256,
            serial: "disk.img".into(),
        };
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let options = ServeOptions {
            poll: Duration::ZERO,
        };
        let backend = Arc::new(BlkBackend::new(
            config,
            vec![Box::new(engine)],
            mem.clone(),
            options,
        ));
        let private = PrivateSocket::new().unwrap();
        let mut session = Session::new(backend, mem, &private).unwrap();
        session.relay(stream, Limits { max_mem_slots: 32 });
        session
    })
}

/// Publishes a write of `data` at `sector` without waiting; returns (head, status address).
fn publish_write(c: &mut Conn, sector: u64, data: &[u8]) -> (u16, u64) {
    let (h, buf, s) = (c.buf(16), c.buf(data.len() as u64), c.buf(1));
    c.ram.write(h, &header(T_OUT, sector));
    c.ram.write(buf, data);
    c.ram.write(s, &[S_UNTOUCHED]);
    let head = c.write_chain(0, &[r(h, 16), r(buf, data.len() as u32), w(s, 1)]);
    c.publish(0, head);
    (head, s)
}

#[test]
fn a_restarted_daemon_redoes_what_the_dead_one_left_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, 0);

    let (ours, theirs) = UnixStream::pair().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let first = crashing_daemon(&path, theirs, held.clone());
    let mut c = Conn::with_inflight(ours, Setup::default(), Inflight::New);
    assert!(c
        .protocol
        .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD));

    // Four writes: the first is held, the other three complete around it.
    let datas: Vec<Vec<u8>> = (0..4).map(|i| pattern(4096, 0x40 + i)).collect();
    let mut chains = Vec::new();
    for (i, data) in datas.iter().enumerate() {
        chains.push(publish_write(&mut c, 8 * i as u64, data));
    }
    c.kick(0);
    let used = c.wait_used(0, 3);
    let done: Vec<u16> = used.iter().map(|u| u.head).collect();
    assert_eq!(done, vec![chains[1].0, chains[2].0, chains[3].0]);
    assert_eq!(
        *held.lock().unwrap(),
        vec![0],
        "the first write is in flight"
    );
    assert_eq!(c.ram.read(chains[0].1, 1)[0], S_UNTOUCHED);

    // The daemon dies: the connection ends and nothing it started is completed.
    let (inflight_file, info) = c.inflight.take().expect("an inflight region");
    let setup = Setup::default();
    let dead = {
        // Closing our end makes the first daemon's relay return; the session is dropped
        // without `close`, so the held write is abandoned, not drained.
        let Conn { fe, ram, vqs, .. } = c;
        drop(fe);
        let session = first.join().unwrap();
        drop(session);
        (ram, vqs)
    };
    assert_eq!(file_bytes(&path, 0, 4096), vec![0; 4096], "not written");

    // The real daemon over the same file, handed the same region.
    let d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--path", path.to_str().unwrap()],
    );
    let stream = UnixStream::connect(&d.socket).unwrap();
    let mut c = Conn::resume(
        dead.0,
        dead.1,
        stream,
        setup,
        Inflight::Reuse(inflight_file, info),
    );
    let used = c.wait_used_for(0, 2, Duration::from_secs(3));
    assert_eq!(
        used,
        vec![Used {
            head: chains[0].0,
            len: 1
        }],
        "exactly the unfinished write is redone"
    );
    assert_eq!(c.ram.read(chains[0].1, 1)[0], S_OK);
    for (i, data) in datas.iter().enumerate() {
        assert_eq!(
            &file_bytes(&path, 8 * 512 * i as u64, 4096),
            data,
            "write {i}"
        );
    }

    // The ring goes on from where the guest is.
    let more = pattern(512, 0x77);
    assert_eq!(c.write(0, 100, &more), (S_OK, 1));
    assert_eq!(file_bytes(&path, 100 * 512, 512), more);
}
