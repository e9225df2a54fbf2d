//! Whole messages with their file descriptors over a Unix stream, for the relays that vet a
//! protocol's messages (vhost-user, vfio-user) before a crate sees them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Reads exactly `buf.len()` bytes, collecting any descriptors (at most `MAX_FDS` per read)
/// that arrive with them.
pub fn read_exact_fds<const MAX_FDS: usize>(
    s: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let mut iov = [libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        }];
        let mut raw = [-1 as RawFd; MAX_FDS];
        // SAFETY: the iovec points at `rest`, which lives for the call; `raw` has room for
        // MAX_FDS descriptors, and the count returned says how many were written.
        let (n, nfds) = unsafe { s.recv_with_fds(&mut iov, &mut raw) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        for &fd in &raw[..nfds.min(MAX_FDS)] {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(())
}

/// Writes all of `bytes`, with `fds` attached to the first byte.
pub fn write_all_fds(s: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        // Descriptors travel with the first byte only.
        let fds: &[RawFd] = if sent == 0 { &raw } else { &[] };
        let n = s
            .send_with_fds(&[&bytes[sent..]], fds)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    Ok(())
}

/// The little-endian u16 at byte `o` of `b`.
pub fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

/// The little-endian u32 at byte `o` of `b`.
pub fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_and_its_descriptors_cross_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let msg: Vec<u8> = (0..=255).collect();
        write_all_fds(&a, &msg, &[OwnedFd::from(file)]).unwrap();
        let mut buf = vec![0u8; msg.len()];
        let mut fds = Vec::new();
        read_exact_fds::<4>(&b, &mut buf, &mut fds).unwrap();
        assert_eq!(buf, msg);
        assert_eq!(fds.len(), 1);
        assert_eq!(u16_at(&buf, 1), 0x0201);
        assert_eq!(u32_at(&buf, 4), 0x0706_0504);
        drop(a);
        let mut more = [0u8; 1];
        assert_eq!(
            read_exact_fds::<4>(&b, &mut more, &mut fds)
                .unwrap_err()
                .kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
