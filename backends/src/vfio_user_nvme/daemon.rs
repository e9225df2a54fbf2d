//! The daemon around the function: a private Unix socket, one client at a time (the vfio_user
//! crate's `Server::run` serves a single connection; after it ends the function is reset and
//! the next connection is accepted), SIGTERM or SIGINT exits 0.
//!
//! [`Limits`] bound what clients can take: a connection beyond `max_connections` is closed
//! with a log line if no slot frees within a second (admitted ones beyond the first wait for
//! their turn), and DMA_MAP beyond `max_dma_regions` windows gets an error reply.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use log::{info, warn};
use vfio_user::Server;

use super::function::{self, NvmeFunction};
use super::poller::PollTuning;
use super::relay;
use crate::engine::{uring, BackendSpec};
use crate::nvme::ControllerConfig;

/// Requests the engine takes at once: more than any queue pair a guest creates keeps in flight.
pub const ENGINE_DEPTH: u32 = 256;

/// What clients may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (at least 1); one is served, the others wait their turn.
    pub max_connections: usize,
    /// DMA windows one client may have mapped (at least 1).
    pub max_dma_regions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1,
            max_dma_regions: function::DEFAULT_MAX_DMA_REGIONS,
        }
    }
}

/// What to serve, and where.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub backend: BackendSpec,
    pub controller: ControllerConfig,
    pub tuning: PollTuning,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot block the termination signals")]
    Signals(#[source] io::Error),
    #[error("cannot start the signal thread")]
    SignalThread(#[source] io::Error),
    #[error("{} is in use by a running server", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot remove the stale socket {}", .path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {}", .path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open backend {spec}")]
    Backend {
        spec: String,
        #[source]
        source: uring::Error,
    },
    #[error("cannot create the NVMe function")]
    Function(#[source] function::Error),
    #[error("cannot accept a connection")]
    Accept(#[source] io::Error),
    #[error("cannot create the server's private socket")]
    PrivateSocket(#[source] io::Error),
    #[error("cannot start the relay thread")]
    RelayThread(#[source] io::Error),
}

/// Serves clients until a termination signal (which exits the process with status 0).
pub fn run(cfg: &DaemonConfig) -> Result<(), Error> {
    // Before any thread exists, so every thread inherits the mask and only the signal thread
    // takes them.
    let signals = block_termination_signals()?;
    let listener = bind_private(&cfg.socket)?;
    let _socket = SocketFile(cfg.socket.clone());
    let engine = cfg
        .backend
        .open(ENGINE_DEPTH)
        .map_err(|source| Error::Backend {
            spec: cfg.backend.to_string(),
            source,
        })?;
    let mut function =
        NvmeFunction::new(cfg.controller.clone(), engine, cfg.tuning).map_err(Error::Function)?;
    function.set_max_dma_regions(cfg.limits.max_dma_regions);
    // The crate's server listens on a private socket (its directory is mode 0700); clients
    // reach it only through the vetting relay on the public one.
    let inner_dir = tempfile::Builder::new()
        .prefix("iopath-vfio-user-")
        .tempdir()
        .map_err(Error::PrivateSocket)?;
    let inner_path = inner_dir.path().join("server.sock");
    let inner = UnixListener::bind(&inner_path).map_err(Error::PrivateSocket)?;
    spawn_signal_thread(
        signals,
        vec![cfg.socket.clone(), inner_dir.path().to_path_buf()],
    )?;
    spawn_relay_acceptor(listener, inner_path, cfg.limits.max_connections.max(1))?;
    let server = Server::from_owned_fd(
        OwnedFd::from(inner),
        true,
        function.irqs(),
        function.regions(),
    );
    info!(
        "serving {} on {}",
        cfg.backend,
        cfg.socket.as_path().display()
    );
    loop {
        match server.run(&mut function) {
            Ok(()) => info!("client disconnected"),
            Err(vfio_user::Error::SocketAccept(e)) => return Err(Error::Accept(e)),
            // A broken or misbehaving client: drop it, keep serving.
            Err(e) => warn!("connection ended: {e}"),
        }
        function.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_a_freed_one_is_handed_to_a_waiter() {
        let c = Arc::new(Connections::default());
        let a = Slot::take(&c, 2, Duration::ZERO).unwrap();
        let _b = Slot::take(&c, 2, Duration::ZERO).unwrap();
        assert!(Slot::take(&c, 2, Duration::ZERO).is_none());
        let waiter = {
            let c = c.clone();
            thread::spawn(move || Slot::take(&c, 2, Duration::from_secs(30)).is_some())
        };
        drop(a);
        assert!(waiter.join().unwrap(), "the waiter got the freed slot");
        assert_eq!(*c.open.lock().unwrap(), 1, "its slot went with its thread");
    }
}

/// Removes the socket when the daemon returns with an error.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds with mode 0600: only the owner (the VMM's user) may connect.
fn bind_private(path: &Path) -> Result<UnixListener, Error> {
    remove_stale(path)?;
    // SAFETY: umask only swaps the process's file creation mask; it is restored right after
    // the bind, and `run` calls this before starting any thread that could create files.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound.map_err(|source| Error::Bind {
        path: path.into(),
        source,
    })
}

/// A socket left by a daemon that died is removed; one with a live server is not.
fn remove_stale(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Bind {
            path: path.into(),
            source,
        }),
        Ok(m) if !m.file_type().is_socket() => Err(Error::NotASocket(path.into())),
        Ok(_) if UnixStream::connect(path).is_ok() => Err(Error::InUse(path.into())),
        Ok(_) => std::fs::remove_file(path).map_err(|source| Error::RemoveStale {
            path: path.into(),
            source,
        }),
    }
}

fn block_termination_signals() -> Result<libc::sigset_t, Error> {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these only edit it and this thread's signal mask.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    match rc {
        0 => Ok(set),
        errno => Err(Error::Signals(io::Error::from_raw_os_error(errno))),
    }
}

/// Waits for SIGTERM or SIGINT, removes the socket and the private socket's directory and
/// exits 0. Exiting without unwinding is fine for the data: every write the guest saw complete
/// is already in the file (or the page cache), and the kernel tears down the io_uring.
fn spawn_signal_thread(set: libc::sigset_t, remove: Vec<PathBuf>) -> Result<(), Error> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is a valid, initialised sigset_t and `sig` a valid out pointer.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            info!("signal {sig}: exiting");
            for path in &remove {
                let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path));
            }
            std::process::exit(0);
        })
        .map(drop)
        .map_err(Error::SignalThread)
}

/// How long a client over the limit waits for a slot before it is refused: a client that
/// just closed its connection (a VMM restarting, a readiness probe) frees its slot only once
/// its relay has wound down.
const ADMIT_WAIT: Duration = Duration::from_secs(1);

/// Open connections, and a signal when one closes.
#[derive(Default)]
struct Connections {
    open: Mutex<usize>,
    closed: Condvar,
}

/// Counts a connection as open until dropped.
struct Slot(Arc<Connections>);

impl Slot {
    /// A slot, once fewer than `max` are taken; none if that does not happen within `wait`.
    fn take(c: &Arc<Connections>, max: usize, wait: Duration) -> Option<Slot> {
        let open = c.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut open, _) = c
            .closed
            .wait_timeout_while(open, wait, |n| *n >= max)
            .unwrap_or_else(PoisonError::into_inner);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Slot(c.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open -= 1;
        self.0.closed.notify_one();
    }
}

/// Accepts clients on the public socket and relays each, vetted, to the crate's server; a
/// client over `max` open connections is closed unless a slot frees within [`ADMIT_WAIT`].
fn spawn_relay_acceptor(public: UnixListener, inner: PathBuf, max: usize) -> Result<(), Error> {
    let open = Arc::new(Connections::default());
    thread::Builder::new()
        .name("vfio-user-accept".into())
        .spawn(move || {
            for client in public.incoming() {
                let client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("accepting a client failed: {e}");
                        continue;
                    }
                };
                let Some(slot) = Slot::take(&open, max, ADMIT_WAIT) else {
                    warn!("refused a client: {max} connection(s) open (--max-connections)");
                    continue;
                };
                let server = match UnixStream::connect(&inner) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("cannot reach the server's private socket: {e}");
                        continue;
                    }
                };
                let spawned =
                    thread::Builder::new()
                        .name("vfio-user-relay".into())
                        .spawn(move || {
                            let _slot = slot;
                            relay::relay(client, server)
                        });
                if let Err(e) = spawned {
                    warn!("cannot start a relay thread: {e}");
                }
            }
        })
        .map(drop)
        .map_err(Error::RelayThread)
}
