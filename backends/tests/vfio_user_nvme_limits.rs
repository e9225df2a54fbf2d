//! The vfio-user NVMe daemon's resource limits, against the real binary: connections over
//! `--max-connections` are closed (after a one-second grace for a slot), DMA_MAP beyond `--max-dma-regions` gets an error
//! reply, and I/O queues are checked against CAP.MQES and the queue count the controller
//! grants.

mod common;

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::nvme_driver::*;
use common::vfio_user_daemon::Daemon;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const VERSION: u16 = 1;
const DMA_MAP: u16 = 2;
const DMA_UNMAP: u16 = 3;
const FLAG_ERROR: u32 = 1 << 5;

/// One client speaking raw vfio-user messages (the vfio_user crate's client ignores error
/// replies to DMA_MAP).
struct Raw {
    s: UnixStream,
    id: u16,
}

impl Raw {
    fn connect(socket: &std::path::Path, timeout: Duration) -> Raw {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        Raw { s, id: 0 }
    }

    /// Sends `command` with `body` (and `fd`), returns the reply's flags.
    fn send(&mut self, command: u16, body: &[u8], fd: Option<i32>) -> io::Result<()> {
        self.id += 1;
        let mut m = Vec::new();
        m.extend_from_slice(&self.id.to_le_bytes());
        m.extend_from_slice(&command.to_le_bytes());
        m.extend_from_slice(&(16 + body.len() as u32).to_le_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(body);
        match fd {
            Some(fd) => self
                .s
                .send_with_fds(&[&m[..]], &[fd])
                .map(drop)
                .map_err(|e| io::Error::from_raw_os_error(e.errno())),
            None => self.s.write_all(&m),
        }
    }

    /// The next reply's flags (its payload is read and dropped); EOF is an error.
    fn reply(&mut self) -> io::Result<u32> {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h)?;
        let size = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; size.saturating_sub(16)];
        self.s.read_exact(&mut rest)?;
        Ok(u32::from_le_bytes(h[8..12].try_into().unwrap()))
    }

    fn version(&mut self) -> io::Result<u32> {
        let mut body = vec![0, 0, 1, 0];
        body.extend_from_slice(br#"{"capabilities":{"max_msg_fds":1}}"#);
        body.push(0);
        self.send(VERSION, &body, None)?;
        self.reply()
    }

    /// DMA_MAP of `len` bytes of `file` at `iova`; whether the server accepted it.
    fn dma_map(&mut self, file: &std::fs::File, iova: u64, len: u64) -> bool {
        let mut body = Vec::new();
        body.extend_from_slice(&32u32.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&iova.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        self.send(DMA_MAP, &body, Some(file.as_raw_fd())).unwrap();
        self.reply().unwrap() & FLAG_ERROR == 0
    }

    fn dma_unmap(&mut self, iova: u64, len: u64) -> bool {
        let mut body = Vec::new();
        body.extend_from_slice(&24u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&iova.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        self.send(DMA_UNMAP, &body, None).unwrap();
        self.reply().unwrap() & FLAG_ERROR == 0
    }
}

/// Whether the daemon hung up on a fresh client: its Version gets no reply and the stream
/// ends (a client left waiting would time out instead).
fn refused(d: &Daemon) -> bool {
    let mut c = Raw::connect(&d.socket, Duration::from_secs(10));
    let _ = c.version();
    let mut rest = Vec::new();
    matches!(c.s.read_to_end(&mut rest), Ok(0))
}

/// Connects until a client gets its Version answered (the previous client's slot is freed
/// once its relay has ended).
fn served(d: &Daemon) -> Raw {
    let start = Instant::now();
    loop {
        let mut c = Raw::connect(&d.socket, Duration::from_secs(10));
        if c.version().is_ok() {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no client served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_connection_by_default_and_the_next_is_refused_not_left_waiting() {
    let mut d = Daemon::start(&["--null", "1M"]);
    let mut first = Driver::connect(&d.socket);
    first.enable();
    assert!(refused(&d), "a second client is closed");
    assert!(d.alive());
    assert!(first.run(0, cmd(0x06, 0, IDENTIFY_BUF, 0, [1, 0, 0])).ok());
    drop(first);
    served(&d);
}

#[test]
fn admitted_connections_wait_their_turn_and_more_are_refused() {
    let d = Daemon::start(&["--null", "1M", "--max-connections", "2"]);
    let first = served(&d);
    let mut second = Raw::connect(&d.socket, Duration::from_millis(300));
    let waiting = second.version().unwrap_err();
    assert!(
        matches!(
            waiting.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "the second client waits while the first is served: {waiting}"
    );
    assert!(refused(&d), "a third is closed");
    drop(first);
    second
        .s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let flags = second.reply().expect("served once the first has left");
    assert_eq!(flags & FLAG_ERROR, 0);
}

#[test]
fn dma_windows_beyond_the_limit_get_an_error_reply() {
    let mut d = Daemon::start(&["--null", "1M", "--max-dma-regions", "2"]);
    let mut c = served(&d);
    let ram = tempfile::tempfile().unwrap();
    ram.set_len(3 << 20).unwrap();
    assert!(c.dma_map(&ram, 0, 1 << 20));
    assert!(c.dma_map(&ram, 1 << 20, 1 << 20));
    assert!(!c.dma_map(&ram, 2 << 20, 1 << 20), "a third window");
    assert!(d.alive());
    // The connection stays usable, and a freed slot can be used again.
    assert!(c.dma_unmap(1 << 20, 1 << 20));
    assert!(c.dma_map(&ram, 2 << 20, 1 << 20));
    drop(c);
    // The limit is per client: the next one starts with none mapped.
    let mut next = served(&d);
    assert!(next.dma_map(&ram, 0, 1 << 20));
    assert!(next.dma_map(&ram, 1 << 20, 1 << 20));
}

#[test]
fn io_queues_are_checked_against_mqes_and_the_granted_count() {
    let d = Daemon::start(&["--null", "1M"]);
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    let entries = (drv.read64(CAP) & 0xffff) as u32 + 1;
    // Number of Queues: ask for the most; the answer is what the controller grants (0-based).
    let c = drv.run(0, cmd(0x09, 0, 0, 0, [0x07, 0xfffe_fffe, 0]));
    assert!(c.ok(), "{c:?}");
    let granted = (c.dw0 & 0xffff) + 1;
    let create_cq = |qid: u32, entries: u32| {
        cmd(
            0x05,
            0,
            IO_CQ,
            0,
            [qid | (entries.wrapping_sub(1) & 0xffff) << 16, 1, 0],
        )
    };
    const INVALID_QUEUE_IDENTIFIER: u16 = 0x101;
    const INVALID_QUEUE_SIZE: u16 = 0x102;
    let bad = [
        (create_cq(1, entries + 1), INVALID_QUEUE_SIZE),
        (create_cq(1, 1), INVALID_QUEUE_SIZE),
        (create_cq(0, 16), INVALID_QUEUE_IDENTIFIER),
        (create_cq(granted + 1, 16), INVALID_QUEUE_IDENTIFIER),
    ];
    for (sqe, status) in bad {
        let c = drv.run(0, sqe);
        assert_eq!(c.status, status, "{c:?}");
    }
    // A queue of exactly MQES + 1 entries, and the last granted queue id, are fine: the
    // CQ memory is only touched when completions are posted.
    assert!(drv.run(0, create_cq(granted, entries)).ok());
    drv.create_io_queues();
    assert!(drv.run(1, flush()).ok());
}
