//! Playing a peer (a vhost-user frontend, a vfio-user client) over a Unix socket.
//!
//! The input is a list of frames, `[ctl: u8][len: u16][len bytes]`:
//! - `ctl & 0x80`: a memory write: the bytes are `[offset: u32][data]`, copied into the shared
//!   memory file at `offset` (queues and buffers live there), nothing is sent;
//! - otherwise the bytes are sent in one `sendmsg` with `ctl & 3` file descriptors attached:
//!   the shared memory file first if `ctl & 4`, then eventfds;
//! - `ctl & 0x40`: after sending, every eventfd handed over so far is signalled (a kick).
//!
//! File descriptors are how these protocols share memory and notifiers; raw bytes alone could
//! not reach anything past the memory table.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::input::Cursor;

/// Size of the shared memory file (the guest RAM a frontend would map).
pub const SHARED_MEM_SIZE: u64 = 1 << 20;

/// One frame of the input.
pub enum Frame<'a> {
    Memory {
        offset: u32,
        data: &'a [u8],
    },
    Send {
        bytes: &'a [u8],
        fds: u8,
        memfd: bool,
        kick: bool,
    },
}

/// Splits the input into frames.
pub fn frames(data: &[u8]) -> Vec<Frame<'_>> {
    let mut c = Cursor::new(data);
    let mut out = Vec::new();
    while !c.is_empty() {
        let ctl = c.u8();
        let len = usize::from(c.u16());
        let body = c.bytes(len);
        if ctl & 0x80 != 0 {
            let mut b = Cursor::new(body);
            let offset = b.u32();
            out.push(Frame::Memory {
                offset,
                data: b.rest(),
            });
        } else {
            out.push(Frame::Send {
                bytes: body,
                fds: ctl & 3,
                memfd: ctl & 4 != 0,
                kick: ctl & 0x40 != 0,
            });
        }
    }
    out
}

/// The peer's side of one connection: the socket, the memory file and the eventfds it handed
/// over.
pub struct Peer {
    pub stream: UnixStream,
    mem: File,
    events: Vec<EventFd>,
}

impl Peer {
    pub fn new(stream: UnixStream) -> Self {
        // SAFETY: memfd_create with a valid C string; the result is checked below.
        let fd = unsafe { libc::memfd_create(c"iopath-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let mem = unsafe { File::from_raw_fd(fd) };
        mem.set_len(SHARED_MEM_SIZE).unwrap();
        Peer {
            stream,
            mem,
            events: Vec::new(),
        }
    }

    /// Plays one frame. A send error means the other side closed the connection: stop.
    pub fn play(&mut self, frame: &Frame<'_>) -> io::Result<()> {
        match *frame {
            Frame::Memory { offset, data } => {
                let end = u64::from(offset) + data.len() as u64;
                if end <= SHARED_MEM_SIZE {
                    self.mem.write_all_at(data, u64::from(offset))?;
                }
                Ok(())
            }
            Frame::Send {
                bytes,
                fds,
                memfd,
                kick,
            } => {
                let mut raw: Vec<RawFd> = Vec::new();
                for i in 0..fds {
                    if i == 0 && memfd {
                        raw.push(self.mem.as_raw_fd());
                    } else {
                        let e = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
                        raw.push(e.as_raw_fd());
                        self.events.push(e);
                    }
                }
                if bytes.is_empty() {
                    // SCM_RIGHTS needs at least one byte of data to travel with.
                } else if raw.is_empty() {
                    self.stream.write_all(bytes)?;
                } else {
                    self.stream
                        .send_with_fds(&[bytes], &raw)
                        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
                }
                if kick {
                    for e in &self.events {
                        let _ = e.write(1);
                    }
                }
                Ok(())
            }
        }
    }

    /// Closes the sending side and reads whatever comes back until the other side closes too.
    /// `Err` if it has not closed within `limit`: it hangs on a half-closed connection.
    pub fn finish(&mut self, limit: Duration) -> Result<usize, String> {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + limit;
        let mut total = 0;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "peer still open after {limit:?} ({total} bytes read)"
                ));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                // Reset by the peer: closed, as far as we are concerned.
                Err(_) => return Ok(total),
            }
        }
    }
}

/// Open file descriptors of this process and what they are (a server that leaks one per
/// connection runs out of them).
pub fn open_fds() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<String> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}: {}", e.file_name().to_string_lossy(), target.display())
        })
        // The listing's own directory handle.
        .filter(|f| !f.ends_with("/fd"))
        .collect();
    fds.sort();
    fds
}

/// Panics if `after` holds descriptors that `before` did not.
pub fn assert_no_new_fds(before: &[String], after: &[String]) {
    let new: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    assert!(new.is_empty(), "file descriptors leaked: {new:?}");
}
