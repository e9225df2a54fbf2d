//! A vetting relay between vfio-user clients and the vfio_user crate's server.
//!
//! vfio_user 0.1.7 panics on some malformed messages (a short or unterminated Version payload)
//! and, on several error paths, does not read the rest of a message, so the next header is
//! parsed from the middle of it (found by fuzz/fuzz_targets/vfio_user_messages.rs; inputs in
//! fuzz/regressions/). With `panic = "abort"` that would let any client kill the daemon. The
//! relay reads each client message whole, with its file descriptors, checks it is one the
//! crate reads exactly to its end, and only then forwards it; a client that sends anything
//! else is disconnected. Replies pass through unchanged.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread;

use crate::fd_stream::{read_exact_fds, u16_at, u32_at, write_all_fds};

/// vfio-user message header: id u16, command u16, size u32, flags u32, error u32.
const HEADER: usize = 16;
/// The largest message a client may send: a region write of BAR0 (16 KiB) and its header.
const MAX_MESSAGE: usize = 32 + 0x4000;
/// File descriptors one message may carry (DMA map: 1; SET_IRQS: one per vector).
const MAX_FDS: usize = 128;
/// Flags: the sender does not want a reply.
const NO_REPLY: u32 = 1 << 4;

/// One message read whole, with the descriptors that came with it.
struct Message {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Why a client message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Size(usize),
    Malformed { command: u16 },
}

/// Whether `msg` (a whole message, header included) is one vfio_user 0.1.7 reads exactly to
/// its end without panicking. The fixed sizes are the crate's request structs.
pub fn vet(msg: &[u8]) -> Result<(), Refusal> {
    if msg.len() < HEADER || u32_at(msg, 4) as usize != msg.len() {
        return Err(Refusal::Size(msg.len()));
    }
    let no_reply = u32_at(msg, 8) & NO_REPLY != 0;
    let fixed = |size: usize| msg.len() == size;
    let ok = match u16_at(msg, 2) {
        // Version: header, major, minor, then one NUL-terminated string (JSON capabilities).
        1 => {
            !no_reply
                && msg.len() > 20
                && msg[20..].iter().position(|&b| b == 0) == Some(msg.len() - 21)
        }
        // DMA map, DMA unmap.
        2 => fixed(48),
        3 => fixed(40),
        // Device info, IRQ info.
        4 | 7 => !no_reply && fixed(32),
        // Region info.
        5 => !no_reply && fixed(48),
        // Set IRQs.
        8 => fixed(36),
        // Region read: the reply's size is the client's count; BAR0 is the largest region.
        9 => !no_reply && fixed(32) && u32_at(msg, 28) <= 0x4000,
        // Region write: the crate refuses an unknown region before reading the data.
        10 => msg.len() >= 32 && msg.len() - 32 == u32_at(msg, 28) as usize && u32_at(msg, 24) < 9,
        // Device reset.
        13 => fixed(16),
        // Anything else is refused by the crate before it reads past the header.
        _ => fixed(16),
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::Malformed {
            command: u16_at(msg, 2),
        })
    }
}

/// Reads one whole message; `None` at a clean end of stream.
fn read_message(s: &UnixStream, max: usize) -> io::Result<Option<Message>> {
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER];
    match read_exact_fds::<MAX_FDS>(s, &mut header, &mut fds) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        r => r?,
    }
    let size = u32_at(&header, 4) as usize;
    if !(HEADER..=max).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {size} bytes"),
        ));
    }
    let mut bytes = vec![0u8; size];
    bytes[..HEADER].copy_from_slice(&header);
    read_exact_fds::<MAX_FDS>(s, &mut bytes[HEADER..], &mut fds)?;
    Ok(Some(Message { bytes, fds }))
}

fn write_message(s: &UnixStream, m: &Message) -> io::Result<()> {
    write_all_fds(s, &m.bytes, &m.fds)
}

/// Relays one client connection to the server end until either side closes or the client
/// sends a message the crate cannot take; then both ends are shut down, so the server's
/// `run` returns and the daemon accepts the next client.
pub fn relay(client: UnixStream, server: UnixStream) -> io::Result<()> {
    let (client2, server2) = (client.try_clone()?, server.try_clone()?);
    let replies = thread::Builder::new()
        .name("vfio-user-replies".into())
        .spawn(move || {
            // Replies are the crate's own; passed as they are, whatever their size.
            while let Ok(Some(m)) = read_message(&server2, usize::MAX) {
                if write_message(&client2, &m).is_err() {
                    break;
                }
            }
            let _ = client2.shutdown(std::net::Shutdown::Both);
        })?;
    loop {
        match read_message(&client, MAX_MESSAGE) {
            Ok(Some(m)) => {
                if let Err(why) = vet(&m.bytes) {
                    log::warn!("vfio-user client disconnected: refused message ({why:?})");
                    break;
                }
                if write_message(&server, &m).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                log::warn!("vfio-user client disconnected: {e}");
                break;
            }
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = replies.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::sock_ctrl_msg::ScmSocket;

    use super::*;

    fn header(command: u16, size: u32, flags: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER];
        h[2..4].copy_from_slice(&command.to_le_bytes());
        h[4..8].copy_from_slice(&size.to_le_bytes());
        h[8..12].copy_from_slice(&flags.to_le_bytes());
        h
    }

    fn version(payload: &[u8]) -> Vec<u8> {
        let mut m = header(1, (20 + payload.len()) as u32, 0);
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn the_crash_inputs_are_refused_and_good_messages_pass() {
        assert_eq!(vet(&version(b"{}\0")), Ok(()));
        // A Version shorter than its fixed part (the crate's size underflow).
        let mut short = header(1, 18, 0);
        short.extend_from_slice(&[0, 0]);
        assert!(vet(&short).is_err());
        // A payload that is not one NUL-terminated string (the crate's unwrap).
        assert!(vet(&version(b"{}")).is_err());
        assert!(vet(&version(b"{\0}\0")).is_err());
        // A size field that disagrees with the message.
        let mut lying = header(4, 32, 0);
        lying.extend_from_slice(&[0u8; 8]);
        assert_eq!(vet(&lying), Err(Refusal::Size(24)));
        // An unknown command with a body the crate would not read.
        let mut unknown = header(99, 20, 0);
        unknown.extend_from_slice(&[0u8; 4]);
        assert_eq!(vet(&unknown), Err(Refusal::Malformed { command: 99 }));
        // A region read asking for more than BAR0.
        let mut read = header(9, 32, 0);
        read.extend_from_slice(&[0u8; 16]);
        read[28..32].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert!(vet(&read).is_err());
        read[28..32].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(vet(&read), Ok(()));
        // No-reply on a command that needs a reply.
        let mut info = header(4, 32, NO_REPLY);
        info.extend_from_slice(&[0u8; 16]);
        assert!(vet(&info).is_err());
        assert_eq!(vet(&header(13, 16, 0)), Ok(()));
    }

    #[test]
    fn messages_and_their_fds_cross_the_relay_whole() {
        let (client, relay_client) = UnixStream::pair().unwrap();
        let (relay_server, server) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || relay(relay_client, relay_server));
        // A DMA map (48 bytes) carrying a descriptor.
        let mut map = header(2, 48, 0);
        map.extend_from_slice(&[7u8; 32]);
        let file = tempfile::tempfile().unwrap();
        client
            .send_with_fds(&[&map[..]], &[file.as_raw_fd()])
            .unwrap();
        let got = read_message(&server, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(got.bytes, map);
        assert_eq!(got.fds.len(), 1, "the descriptor travels with its message");
        // A reply goes back unchanged.
        let reply = Message {
            bytes: header(2, 16, 1),
            fds: Vec::new(),
        };
        write_message(&server, &reply).unwrap();
        assert_eq!(
            read_message(&client, MAX_MESSAGE).unwrap().unwrap().bytes,
            reply.bytes
        );
        // A malformed message ends the connection on both sides.
        client.send_with_fds(&[&version(b"{}")[..]], &[]).unwrap();
        assert!(read_message(&server, MAX_MESSAGE).unwrap().is_none());
        t.join().unwrap().unwrap();
        assert!(read_message(&client, MAX_MESSAGE).unwrap().is_none());
    }
}
