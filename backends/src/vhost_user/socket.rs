//! The daemons' listening socket: private to its owner, replacing only a stale socket, removed
//! when the daemon stops listening.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use vhost::vhost_user::Listener;

use super::signal::Termination;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot remove the stale socket {}", .0.display())]
    RemoveStale(PathBuf, #[source] io::Error),
    #[error("cannot listen on {}", .0.display())]
    Listen(PathBuf, #[source] io::Error),
    #[error("cannot make {} private to its owner", .0.display())]
    Chmod(PathBuf, #[source] io::Error),
    #[error("waiting for a frontend failed")]
    Wait(#[source] io::Error),
}

/// vhost-user-backend's error type has no `std::error::Error` impl; this lends it one.
#[derive(Debug)]
pub struct VhostUserError(pub vhost_user_backend::Error);

impl fmt::Display for VhostUserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for VhostUserError {}

/// A listening socket that is removed when the daemon stops listening.
pub struct Socket {
    pub listener: Listener,
    path: PathBuf,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds `path` so that only its owner can connect: the frontend gets full access to the
/// device's backing resource through it.
pub fn listen(path: &Path) -> Result<Socket, Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            fs::remove_file(path).map_err(|e| Error::RemoveStale(path.into(), e))?;
        }
        Ok(_) => return Err(Error::NotASocket(path.into())),
        Err(_) => {}
    }
    // The umask closes the window between bind and chmod; nothing else runs yet that could
    // create files meanwhile (only the signal watcher, which creates none).
    // SAFETY: umask only swaps the process file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| Error::Listen(path.into(), e))?;
    let socket = Socket {
        listener: Listener::from(listener),
        path: path.into(),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Chmod(path.into(), e))?;
    Ok(socket)
}

/// Waits until `fd` is readable (`true`) or termination is requested (`false`).
pub fn wait_readable(fd: RawFd, term: &Termination) -> Result<bool, Error> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: term.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        if term.requested() {
            return Ok(false);
        }
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Wait(e));
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_makes_a_private_socket_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.sock");
        let s = listen(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second daemon replaces a socket left behind.
        std::mem::forget(s);
        let s = listen(&path).unwrap();
        drop(s);
        assert!(!path.exists(), "the socket goes with the daemon");

        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"keep me").unwrap();
        assert!(matches!(listen(&file), Err(Error::NotASocket(_))));
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }
}
