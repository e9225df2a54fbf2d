//! Raw bytes from a vhost-user frontend to the vhost-user-blk backend, in process.
//!
//! Each input is one connection, served as the daemon serves one (`daemon::serve_one`, which
//! is private: this copies its few lines): a fresh `BlkBackend` (here over an in-memory
//! engine) in a fresh `Session` (the crate's handler behind the relay that answers the
//! inflight messages and enforces the limits), on a private socket made once per process.
//! The input is played as frames (`iopath_fuzz::peer`): message bytes with shared memory and
//! eventfds attached, writes into that memory, kicks. Then the frontend half-closes and reads
//! the replies.
//!
//! Checked: nothing panics (a panic on the connection or a queue thread aborts the process,
//! as it would the daemon); the backend closes its end after the frontend did (no hang); the
//! connection thread ends, draining and dropping the backend ends every thread, and no file
//! descriptor is left behind (a daemon serves connection after connection); the listener
//! still accepts.
#![no_main]

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backends::engine::{BlockEngine, MemEngine};
use backends::vhost_user_blk::backend::ServeOptions;
use backends::vhost_user_blk::relay::Limits;
use backends::vhost_user_blk::session::{PrivateSocket, Session};
use backends::vhost_user_blk::{BlkBackend, BlkConfig};
use iopath_fuzz::peer::{assert_no_new_fds, frames, open_fds, Peer};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

const QUEUES: u16 = 2;

fn server() -> &'static Mutex<PrivateSocket> {
    static SERVER: OnceLock<Mutex<PrivateSocket>> = OnceLock::new();
    SERVER.get_or_init(|| Mutex::new(PrivateSocket::new().unwrap()))
}

fn config() -> BlkConfig {
    BlkConfig {
        capacity: 1 << 20,
        block_size: 512,
        read_only: false,
        num_queues: QUEUES,
        queue_size: 256,
        serial: "fuzz-serial".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let server = server().lock().unwrap_or_else(|p| p.into_inner());
    let fds = open_fds();
    let (stream, daemon_end) = UnixStream::pair().unwrap();

    // serve_one, with MemEngines instead of the spec's engines.
    let engines: Vec<Box<dyn BlockEngine>> = (0..QUEUES)
        .map(|_| Box::new(MemEngine::new(1 << 20).with_queue_depth(8)) as Box<dyn BlockEngine>)
        .collect();
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let options = ServeOptions {
        poll: Duration::ZERO,
    };
    let backend = Arc::new(BlkBackend::new(config(), engines, mem.clone(), options));
    let mut session = Session::new(backend, mem, &server).unwrap();
    let relay = std::thread::spawn(move || {
        session.relay(daemon_end, Limits { max_mem_slots: 8 });
        session
    });

    let mut peer = Peer::new(stream);
    for frame in frames(data) {
        if peer.play(&frame).is_err() {
            break;
        }
    }
    if let Err(e) = peer.finish(Duration::from_secs(5)) {
        panic!("the backend hangs on a closed connection: {e}");
    }
    drop(peer);
    // Disconnected, SocketBroken or a protocol error: all end the connection normally.
    let session = relay.join().unwrap();
    let _ = session.close();

    assert_no_new_fds(&fds, &open_fds());
});
