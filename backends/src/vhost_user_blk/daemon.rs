//! The daemon's life: listen (or connect), serve one frontend at a time with fresh state,
//! come back for the next one, and on SIGTERM stop accepting, drain and return.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{BlkBackend, ServeOptions, MAX_QUEUES};
use super::config::BlkConfig;
use super::signal::Termination;
use crate::engine::{uring, BackendSpec, BlockEngine};

/// Largest split-ring size (virtio 1.x).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// How often a `--client` daemon retries a frontend that is not listening.
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Everything the daemon is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    /// Connect to a socket the frontend listens on instead of listening.
    pub client: bool,
    pub backend: BackendSpec,
    /// Refuse writes even if the backend could take them.
    pub read_only: bool,
    pub queues: u16,
    pub queue_size: u16,
    pub serve: ServeOptions,
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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--queues must be in 1..={MAX_QUEUES}, not {0}")]
    Queues(u16),
    #[error("--queue-size must be a power of two in 2..={MAX_QUEUE_SIZE}, not {0}")]
    QueueSize(u16),
    #[error("cannot open the backing device")]
    Open(#[source] uring::Error),
    #[error("the device holds no whole 512-byte sector")]
    Empty,
    #[error("cannot handle SIGTERM")]
    Signals(#[source] io::Error),
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot remove the stale socket {}", .0.display())]
    RemoveStale(PathBuf, #[source] io::Error),
    #[error("cannot listen on {}", .0.display())]
    Listen(PathBuf, #[source] io::Error),
    #[error("cannot make {} private to its owner", .0.display())]
    Chmod(PathBuf, #[source] io::Error),
    #[error("socket path {} is not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("waiting for a frontend failed")]
    Wait(#[source] io::Error),
    #[error("cannot set up the vhost-user daemon")]
    Daemon(#[source] VhostUserError),
    #[error("cannot watch the engines' completions")]
    Completions(#[source] io::Error),
}

/// Removes the socket when the daemon stops listening.
struct Socket {
    listener: Listener,
    path: PathBuf,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Must be called before the process starts any
/// other thread (see [`Termination::install`]).
pub fn run(config: &DaemonConfig) -> Result<(), Error> {
    if config.queues == 0 || config.queues > MAX_QUEUES {
        return Err(Error::Queues(config.queues));
    }
    let size = config.queue_size;
    if !(2..=MAX_QUEUE_SIZE).contains(&size) || !size.is_power_of_two() {
        return Err(Error::QueueSize(size));
    }
    let term = Termination::install().map_err(Error::Signals)?;
    let device = probe(config)?;
    log::info!(
        "serving {} ({} bytes, {}-byte blocks{}) with {} queue(s) of {}",
        config.backend,
        device.capacity,
        device.block_size,
        if device.read_only { ", read-only" } else { "" },
        device.num_queues,
        device.queue_size
    );
    let mut socket = if config.client {
        None
    } else {
        Some(listen(&config.socket)?)
    };
    while !term.requested() {
        if let Some(socket) = &socket {
            if !wait_readable(socket.listener.as_raw_fd(), &term)? {
                break;
            }
        }
        serve_one(config, &device, socket.as_mut(), &term)?;
    }
    Ok(())
}

/// Opens the backend once to check it and learn its geometry.
fn probe(config: &DaemonConfig) -> Result<BlkConfig, Error> {
    let engine = config
        .backend
        .open(u32::from(config.queue_size))
        .map_err(Error::Open)?;
    if engine.capacity() < 512 {
        return Err(Error::Empty);
    }
    Ok(BlkConfig {
        capacity: engine.capacity(),
        block_size: engine.block_size(),
        read_only: config.read_only || engine.read_only(),
        num_queues: config.queues,
        queue_size: config.queue_size,
        serial: serial(&config.backend),
    })
}

/// The GET_ID answer: the backing file's name, or what the backend is.
fn serial(spec: &BackendSpec) -> String {
    match spec {
        BackendSpec::File { path, .. } => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "iopath-file".into()),
        BackendSpec::Null { .. } => "iopath-null".into(),
    }
}

/// Binds `path` so that only its owner can connect: the frontend gets full access to the
/// backing file through it.
fn listen(path: &Path) -> Result<Socket, Error> {
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
fn wait_readable(fd: RawFd, term: &Termination) -> Result<bool, Error> {
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

/// Serves one frontend connection with a fresh backend (new engines, no memory, no queue
/// state) and returns once it is gone and every request it started has completed.
fn serve_one(
    config: &DaemonConfig,
    device: &BlkConfig,
    socket: Option<&mut Socket>,
    term: &Termination,
) -> Result<(), Error> {
    let engines = (0..config.queues)
        .map(|_| config.backend.open(u32::from(config.queue_size)))
        .collect::<Result<Vec<Box<dyn BlockEngine>>, _>>()
        .map_err(Error::Open)?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(BlkBackend::new(
        device.clone(),
        engines,
        mem.clone(),
        config.serve.clone(),
    ));
    let daemon_error = |e| Error::Daemon(VhostUserError(e));
    let mut daemon = VhostUserDaemon::new("vhost-user-blk".into(), backend.clone(), mem)
        .map_err(daemon_error)?;
    backend
        .register_completions(&daemon.get_epoll_handlers())
        .map_err(Error::Completions)?;

    match socket {
        Some(socket) => daemon.start(&mut socket.listener).map_err(daemon_error)?,
        None => {
            let path = config
                .socket
                .to_str()
                .ok_or_else(|| Error::NotUtf8(config.socket.clone()))?;
            let mut warned = false;
            loop {
                if term.requested() {
                    return Ok(());
                }
                match daemon.start_client(path) {
                    Ok(()) => break,
                    Err(e) => {
                        if !warned {
                            log::warn!("cannot connect to {path} (retrying): {e}");
                            warned = true;
                        }
                        std::thread::sleep(CONNECT_RETRY);
                    }
                }
            }
        }
    }
    log::info!("frontend connected");
    let shutdown = daemon.shutdown_handle();
    term.set_hook(shutdown.map(|h| Box::new(move || h.shutdown()) as Box<dyn Fn() + Send>));
    let ended = daemon.wait();
    term.set_hook(None);
    match ended {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => log::info!("frontend disconnected"),
        Err(e) => log::warn!("connection ended: {e}"),
    }
    backend.drain();
    log::info!("connection statistics: {:?}", backend.stats());
    // Dropping the daemon stops and joins the queue threads.
    drop(daemon);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_makes_a_private_socket_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blk.sock");
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

    #[test]
    fn serial_names_the_backing_file() {
        let spec: BackendSpec = "file:/var/lib/disks/vm1.img".parse().unwrap();
        assert_eq!(serial(&spec), "vm1.img");
        assert_eq!(serial(&BackendSpec::Null { size: 4096 }), "iopath-null");
    }

    #[test]
    fn bad_queue_settings_are_refused_before_anything_opens() {
        let config = |queues, queue_size| DaemonConfig {
            socket: "/nonexistent/sock".into(),
            client: false,
            backend: BackendSpec::Null { size: 1 << 20 },
            read_only: false,
            queues,
            queue_size,
            serve: ServeOptions {
                poll: Duration::ZERO,
            },
        };
        assert!(matches!(run(&config(0, 128)), Err(Error::Queues(0))));
        assert!(matches!(run(&config(65, 128)), Err(Error::Queues(65))));
        assert!(matches!(run(&config(1, 100)), Err(Error::QueueSize(100))));
        assert!(matches!(run(&config(1, 1)), Err(Error::QueueSize(1))));
    }
}
