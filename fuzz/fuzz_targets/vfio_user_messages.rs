//! Raw bytes from a vfio-user client to the NVMe vfio-user server, in process.
//!
//! The server runs as `vfio_user_nvme::run` runs it (that function also blocks signals and
//! never returns, so its loop is copied here): one `NvmeFunction` over an in-memory engine,
//! `vfio_user::Server::run` per connection on a listener bound once per process, and
//! `disconnect` after each. Each input is one connection, played as frames
//! (`iopath_fuzz::peer`): messages with shared memory (DMA_MAP) and eventfds (SET_IRQS)
//! attached, writes into that memory, kicks.
//!
//! Checked: nothing panics (a panic on the server thread aborts the process, as it would the
//! daemon); the server closes its end after the client did; it comes back to accept the next
//! client; no file descriptor is left behind.
//!
//! The vfio_user 0.1.7 crate panics on some malformed messages (see fuzz/regressions/). With
//! `IOPATH_FUZZ_VFIO_STRICT=1` the harness plays the relay that would shield the server: each
//! frame must be exactly one well-formed message (`vetted`), else the connection is closed,
//! so the fuzzer can get past those known crashes.
#![no_main]

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use backends::engine::MemEngine;
use backends::nvme::ControllerConfig;
use backends::vfio_user_nvme::{NvmeFunction, PollTuning};
use iopath_fuzz::peer::{assert_no_new_fds, frames, open_fds, Frame, Peer};
use libfuzzer_sys::fuzz_target;

/// Connections served so far, bumped after `disconnect`.
struct Served {
    count: Mutex<u64>,
    cond: Condvar,
}

struct Harness {
    path: PathBuf,
    served: Arc<Served>,
    strict: bool,
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iopath-fuzz-vfio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nvme.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let cfg = ControllerConfig {
            max_io_queues: 4,
            max_queue_entries: 64,
            interrupt_vectors: 4,
            ..ControllerConfig::default()
        };
        // The poller sleeps between passes instead of spinning: two cores are shared with the
        // fuzzer itself.
        let tuning = PollTuning {
            spin: Duration::ZERO,
            min_sleep: Duration::from_micros(100),
            max_sleep: Duration::from_millis(1),
        };
        let engine = Box::new(MemEngine::new(1 << 20).with_queue_depth(64));
        let mut function = NvmeFunction::new(cfg, engine, tuning).unwrap();
        let served = Arc::new(Served {
            count: Mutex::new(0),
            cond: Condvar::new(),
        });
        let bumped = served.clone();
        std::thread::Builder::new()
            .name("vfio-user-server".into())
            .spawn(move || {
                let server = vfio_user::Server::from_owned_fd(
                    OwnedFd::from(listener),
                    true,
                    function.irqs(),
                    function.regions(),
                );
                loop {
                    // Errors end a connection; the daemon logs them and serves the next.
                    let _ = server.run(&mut function);
                    function.disconnect();
                    *bumped.count.lock().unwrap() += 1;
                    bumped.cond.notify_all();
                }
            })
            .unwrap();
        Mutex::new(Harness {
            path,
            served,
            strict: std::env::var_os("IOPATH_FUZZ_VFIO_STRICT").is_some_and(|v| v == "1"),
        })
    })
}

/// Whether `msg` is one complete, well-formed message that vfio_user 0.1.7 reads exactly to
/// its end: what a validating relay in front of `Server::run` would check before forwarding.
/// The crate panics on some malformed VERSION messages, and on several error paths it does not
/// read the rest of a message, so the next header is taken from the middle of it.
fn vetted(msg: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([msg[o], msg[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
    if msg.len() < 16 || u32_at(4) as usize != msg.len() {
        return false;
    }
    let no_reply = u32_at(8) & (1 << 4) != 0;
    let fixed = |size: usize| msg.len() == size;
    match u16_at(2) {
        // Version: header, major, minor, then one NUL-terminated string (JSON).
        1 => {
            !no_reply
                && msg.len() > 20
                && msg[20..].iter().position(|&b| b == 0) == Some(msg.len() - 21)
        }
        2 => fixed(48),
        3 => fixed(40),
        4 | 7 => !no_reply && fixed(32),
        5 => !no_reply && fixed(48),
        8 => fixed(36),
        // Region read: the reply's size is the client's `count`; BAR0 is the largest region.
        9 => !no_reply && fixed(32) && u32_at(28) <= 0x4000,
        // Region write: an unknown region is refused before the data is read.
        10 => msg.len() >= 32 && msg.len() - 32 == u32_at(28) as usize && u32_at(24) < 9,
        13 => fixed(16),
        // Refused before anything past the header is read.
        _ => fixed(16),
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness().lock().unwrap_or_else(|p| p.into_inner());
    let before = *h.served.count.lock().unwrap();
    let fds = open_fds();
    let stream = UnixStream::connect(&h.path).unwrap();
    let mut peer = Peer::new(stream);
    for frame in frames(data) {
        if h.strict {
            if let Frame::Send { bytes, .. } = frame {
                if !vetted(bytes) {
                    break;
                }
            }
        }
        if peer.play(&frame).is_err() {
            break;
        }
    }
    if let Err(e) = peer.finish(Duration::from_secs(5)) {
        panic!("the server hangs on a closed connection: {e}");
    }
    drop(peer);
    {
        let count = h.served.count.lock().unwrap();
        let (count, timeout) = h
            .served
            .cond
            .wait_timeout_while(count, Duration::from_secs(5), |c| *c == before)
            .unwrap();
        assert!(
            !timeout.timed_out() && *count > before,
            "the server did not come back to accept"
        );
    }
    assert_no_new_fds(&fds, &open_fds());
});
