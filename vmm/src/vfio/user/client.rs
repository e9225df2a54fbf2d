//! One vfio-user connection: send a request (with file descriptors when it carries any), read
//! the reply that answers it.
//!
//! This replaces the vfio_user crate's `Client` (0.1.7), which ignores error replies to
//! DMA_MAP and REGION_WRITE, hangs on an error reply to REGION_READ (it reads a full reply
//! that never comes), always maps DMA read-write and reports `resettable()` inverted. Here
//! every reply is read as a header first, matched to its request, and an error reply is an
//! error. A connection that failed mid-message (or timed out) is not reused: the next reply
//! could belong to the old request.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::wire::{self, Command, Header, FLAG_ERROR, HEADER_SIZE};

/// How long a request may wait for its reply: a trapped register access blocks a vCPU.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {0}")]
    Connect(String, #[source] io::Error),
    #[error("sending {0:?} failed")]
    Send(Command, #[source] io::Error),
    #[error("reading the reply to {0:?} failed")]
    Receive(Command, #[source] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("malformed reply to {0:?}")]
    Malformed(Command, #[source] wire::Error),
    #[error("the server refused {command:?} (errno {errno})")]
    Refused { command: Command, errno: u32 },
    #[error("the connection broke earlier and is not reused")]
    Broken,
}

impl Error {
    /// Whether the connection is gone (hung up, timed out, out of step): no later request can
    /// succeed, unlike a refusal.
    pub fn connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Send(..)
                | Error::Receive(..)
                | Error::Closed
                | Error::Malformed(..)
                | Error::Broken
        )
    }
}

/// A reply's payload (after the header) and the file descriptor that came with it, if any.
pub struct Reply {
    pub payload: Vec<u8>,
    pub fd: Option<File>,
}

pub struct Client {
    stream: UnixStream,
    next_id: u16,
    broken: bool,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, Error> {
        let connect = |e| Error::Connect(path.display().to_string(), e);
        let stream = UnixStream::connect(path).map_err(connect)?;
        let client = Client {
            stream,
            next_id: 0,
            broken: false,
        };
        client.set_reply_timeout(REPLY_TIMEOUT).map_err(connect)?;
        Ok(client)
    }

    /// How long a request may wait to be sent and for its reply (not zero).
    pub fn set_reply_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Sends `body` as `command` with `fds` attached and returns the reply.
    pub fn call(&mut self, command: Command, body: &[u8], fds: &[RawFd]) -> Result<Reply, Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let result = self.exchange(command, id, body, fds);
        // Anything but a complete reply leaves the stream mid-message.
        if result.as_ref().is_err_and(Error::connection_lost) {
            self.broken = true;
        }
        result
    }

    fn exchange(
        &mut self,
        command: Command,
        id: u16,
        body: &[u8],
        fds: &[RawFd],
    ) -> Result<Reply, Error> {
        let msg = wire::request(command, id, body);
        self.send(&msg, fds).map_err(|e| Error::Send(command, e))?;
        let mut head = [0u8; HEADER_SIZE];
        // The header is read with recvmsg: a file descriptor travels with the first byte of
        // the reply.
        let (n, fd) = self
            .stream
            .recv_with_fd(&mut head)
            .map_err(|e| Error::Receive(command, io::Error::from_raw_os_error(e.errno())))?;
        if n == 0 {
            return Err(Error::Closed);
        }
        self.stream
            .read_exact(&mut head[n..])
            .map_err(|e| Error::Receive(command, e))?;
        let header = Header::decode(&head);
        let len = header
            .check_reply(command, id)
            .map_err(|e| Error::Malformed(command, e))?;
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| Error::Receive(command, e))?;
        if header.flags & FLAG_ERROR != 0 {
            return Err(Error::Refused {
                command,
                errno: header.error,
            });
        }
        Ok(Reply { payload, fd })
    }

    fn send(&mut self, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
        if fds.is_empty() {
            return self.stream.write_all(msg);
        }
        let sent = self
            .stream
            .send_with_fds(&[msg], fds)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        // The descriptors went with the first byte; the rest (if the socket took only part)
        // follows as plain data.
        self.stream.write_all(&msg[sent.min(msg.len())..])
    }

    /// The socket, to watch for the server hanging up between requests.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Ends the connection; the server resets the device for its next client.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::thread;

    use super::*;
    use crate::vfio::user::wire::FLAG_REPLY;

    /// A server that answers each request with `answer(header, body)`: (flags, error, payload).
    fn serve(
        dir: &tempfile::TempDir,
        answers: Vec<(u32, u32, Vec<u8>)>,
    ) -> (std::path::PathBuf, thread::JoinHandle<()>) {
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for (flags, error, payload) in answers {
                let mut head = [0u8; HEADER_SIZE];
                if s.read_exact(&mut head).is_err() {
                    return;
                }
                let h = Header::decode(&head);
                let mut body = vec![0u8; h.size as usize - HEADER_SIZE];
                s.read_exact(&mut body).unwrap();
                let reply = Header {
                    size: (HEADER_SIZE + payload.len()) as u32,
                    flags,
                    error,
                    ..h
                };
                s.write_all(&reply.encode()).unwrap();
                s.write_all(&payload).unwrap();
            }
        });
        (path, handle)
    }

    #[test]
    fn error_replies_are_errors_and_the_connection_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (path, server) = serve(
            &dir,
            vec![
                // An error reply of just a header, as vfio_user's server sends: the client
                // must not wait for a full REGION_READ reply.
                (FLAG_REPLY | FLAG_ERROR, 22, Vec::new()),
                (FLAG_REPLY, 0, wire::region_access(0, 0, 2, &[5, 6])),
            ],
        );
        let mut c = Client::connect(&path).unwrap();
        let body = wire::region_access(0, 0, 2, &[]);
        match c.call(Command::RegionRead, &body, &[]) {
            Err(Error::Refused { errno: 22, .. }) => {}
            other => panic!("expected a refusal, got {:?}", other.map(|r| r.payload)),
        }
        let r = c.call(Command::RegionRead, &body, &[]).unwrap();
        assert_eq!(wire::region_read_data(&r.payload, 2).unwrap(), [5, 6]);
        server.join().unwrap();
    }

    #[test]
    fn a_closed_connection_breaks_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let (path, server) = serve(&dir, Vec::new());
        let mut c = Client::connect(&path).unwrap();
        server.join().unwrap();
        assert!(c.call(Command::DeviceReset, &[], &[]).is_err());
        assert!(matches!(
            c.call(Command::DeviceReset, &[], &[]),
            Err(Error::Broken)
        ));
    }

    #[test]
    fn a_silent_server_times_out_and_breaks_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let server = thread::spawn(move || {
            // Reads the request, never answers, keeps the socket open until told.
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; HEADER_SIZE];
            s.read_exact(&mut head).unwrap();
            let _ = stop_rx.recv();
        });
        let mut c = Client::connect(&path).unwrap();
        c.set_reply_timeout(Duration::from_millis(50)).unwrap();
        let e = c.call(Command::DeviceReset, &[], &[]).err().unwrap();
        assert!(
            matches!(e, Error::Receive(Command::DeviceReset, _)),
            "{e:?}"
        );
        assert!(e.connection_lost());
        assert!(matches!(
            c.call(Command::DeviceReset, &[], &[]),
            Err(Error::Broken)
        ));
        stop_tx.send(()).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn a_reply_to_another_request_breaks_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; HEADER_SIZE];
            s.read_exact(&mut head).unwrap();
            let h = Header::decode(&head);
            let wrong = Header {
                id: h.id.wrapping_add(5),
                size: HEADER_SIZE as u32,
                flags: FLAG_REPLY,
                ..h
            };
            s.write_all(&wrong.encode()).unwrap();
            // Keep the socket open until the client has read.
            let _ = s.read(&mut head);
        });
        let mut c = Client::connect(&path).unwrap();
        assert!(matches!(
            c.call(Command::DeviceReset, &[], &[]),
            Err(Error::Malformed(..))
        ));
        assert!(matches!(
            c.call(Command::DeviceReset, &[], &[]),
            Err(Error::Broken)
        ));
        c.shutdown();
        server.join().unwrap();
    }
}
