//! The daemon's life: listen (or connect), serve frontends with fresh state each (at most
//! `--max-connections` at once; one more is accepted and, unless a connection hangs up within
//! a second, closed, so that it fails instead of waiting unseen in the backlog), and on SIGTERM
//! stop accepting, drain and return.
//! Started as root with `--user`, it opens the backing file and binds the socket first, then
//! runs as that user.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{BlkBackend, ServeOptions, MAX_QUEUES};
use super::config::BlkConfig;
use super::relay::Limits;
use super::session::{self, PrivateSocket, Session};
use super::signal::Termination;
use crate::engine::uring::{self, UringConfig, UringEngine};
use crate::engine::{BackendSpec, BlockEngine};
use crate::privileges::{self, User};
use crate::vhost_user::socket::{self, listen, wait_readable, Socket};

/// Largest split-ring size (virtio 1.x).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// The most memory regions a frontend may ask for: libvhost-user's `VHOST_USER_MAX_RAM_SLOTS`.
pub const MAX_MEM_SLOTS: u32 = 509;

/// How often a `--client` daemon retries a frontend that is not listening.
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Everything the daemon is told on its command line.
/// Frontends served at once unless told otherwise: one VM per daemon.
pub const DEFAULT_MAX_CONNECTIONS: u16 = 1;
/// Memory regions per frontend unless told otherwise.
pub const DEFAULT_MAX_MEM_SLOTS: u32 = 32;

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
    /// Frontends served at once (listening mode).
    pub max_connections: u16,
    /// Guest memory regions one frontend may map.
    pub max_mem_slots: u32,
    /// Run as this user once the file is open and the socket bound (needs root).
    pub user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--queues must be in 1..={MAX_QUEUES}, not {0}")]
    Queues(u16),
    #[error("--queue-size must be a power of two in 2..={MAX_QUEUE_SIZE}, not {0}")]
    QueueSize(u16),
    #[error("--max-connections must be at least 1")]
    MaxConnections,
    #[error("--max-mem-slots must be in 1..={MAX_MEM_SLOTS}, not {0}")]
    MaxMemSlots(u32),
    #[error("cannot open the backing device")]
    Open(#[source] uring::Error),
    #[error("the device holds no whole 512-byte sector")]
    Empty,
    #[error("cannot handle SIGTERM")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Socket(#[from] socket::Error),
    #[error("cannot hand {} to the user", .0.display())]
    Chown(PathBuf, #[source] io::Error),
    #[error("cannot run as the requested user")]
    User(#[source] privileges::Error),
    #[error("cannot serve the connection")]
    Session(#[source] session::Error),
    #[error("cannot start a connection thread")]
    Thread(#[source] io::Error),
}

/// What the engines of every connection are made from: the backing file is opened once, so a
/// daemon that gave up root can still make new engines over it.
enum Source {
    /// A backend without a file, and the queue depth of its engines.
    Spec(BackendSpec, u32),
    File(File, UringConfig),
}

impl Source {
    fn open(spec: &BackendSpec, queue_size: u16) -> Result<Source, Error> {
        Ok(match spec {
            BackendSpec::File {
                path,
                direct,
                read_only,
            } => {
                let config = UringConfig {
                    path: path.clone(),
                    read_only: *read_only,
                    direct: *direct,
                    queue_depth: u32::from(queue_size),
                };
                let file = uring::open_file(&config).map_err(Error::Open)?;
                Source::File(file, config)
            }
            spec => Source::Spec(spec.clone(), u32::from(queue_size)),
        })
    }

    fn engine(&self) -> Result<Box<dyn BlockEngine>, Error> {
        match self {
            Source::Spec(spec, depth) => spec.open(*depth).map_err(Error::Open),
            Source::File(file, config) => {
                let file = file.try_clone().map_err(|e| {
                    Error::Open(uring::Error::Open {
                        path: config.path.clone(),
                        source: e,
                    })
                })?;
                let engine = UringEngine::from_file(file, config).map_err(Error::Open)?;
                Ok(Box::new(engine))
            }
        }
    }
}

/// What every connection shares.
struct Shared {
    config: DaemonConfig,
    device: BlkConfig,
    source: Source,
    private: PrivateSocket,
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
    if config.max_connections == 0 {
        return Err(Error::MaxConnections);
    }
    if !(1..=MAX_MEM_SLOTS).contains(&config.max_mem_slots) {
        return Err(Error::MaxMemSlots(config.max_mem_slots));
    }
    let user = config
        .user
        .as_deref()
        .map(User::lookup)
        .transpose()
        .map_err(Error::User)?;
    let term = Termination::install().map_err(Error::Signals)?;
    let source = Source::open(&config.backend, config.queue_size)?;
    let device = probe(config, &source)?;
    log::info!(
        "serving {} ({} bytes, {}-byte blocks{}) with {} queue(s) of {}",
        config.backend,
        device.capacity,
        device.block_size,
        if device.read_only { ", read-only" } else { "" },
        device.num_queues,
        device.queue_size
    );
    let socket = if config.client {
        None
    } else {
        Some(listen(&config.socket)?)
    };
    if let Some(user) = &user {
        if let Some(socket) = &socket {
            // The frontend runs as the user too, or as root; and the daemon must be able to
            // remove its socket on the way out.
            std::os::unix::fs::chown(socket.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| Error::Chown(socket.path().to_path_buf(), e))?;
        }
        user.become_user().map_err(Error::User)?;
        log::info!(
            "running as {} (uid {}, gid {})",
            user.name,
            user.uid,
            user.gid
        );
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        device,
        source,
        private: PrivateSocket::new().map_err(Error::Session)?,
    });
    match socket {
        Some(socket) => serve_listening(&shared, &socket, &term),
        None => serve_client(&shared, &term),
    }
}

/// Learns the device's geometry from one engine.
fn probe(config: &DaemonConfig, source: &Source) -> Result<BlkConfig, Error> {
    let engine = source.engine()?;
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

/// A connection being served.
struct Conn {
    id: u64,
    /// A clone of the frontend stream, to end the connection on SIGTERM.
    stream: UnixStream,
    /// The frontend is gone; the session is completing what it started.
    closing: bool,
}

/// The connections being served.
#[derive(Default)]
struct Live {
    conns: Mutex<Vec<Conn>>,
    next: AtomicU64,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, stream: &UnixStream) -> Option<u64> {
        let stream = stream.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Conn {
            id,
            stream,
            closing: false,
        });
        Some(id)
    }

    fn closing(&self, id: u64) {
        for c in self.lock().iter_mut().filter(|c| c.id == id) {
            c.closing = true;
        }
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|c| c.id != id);
    }

    /// (connections, of which closing): the session said so, or the frontend has hung up and
    /// the session is about to notice.
    fn count(&self) -> (usize, usize) {
        let conns = self.lock();
        let closing = conns
            .iter()
            .filter(|c| c.closing || hung_up(&c.stream))
            .count();
        (conns.len(), closing)
    }

    fn shut_all(&self) {
        for c in self.lock().iter() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Whether the peer of `stream` has closed its end (without reading from it).
fn hung_up(stream: &UnixStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; a zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// How often the accept loop looks whether a closing connection has finished.
const CLOSING_POLL: Duration = Duration::from_millis(5);

/// How long a frontend over the limit waits for a connection to hang up before it is refused.
/// A frontend's close reaches the daemon only once every copy of its socket is closed: a copy
/// held for a moment by a process it is forking (a VMM starting a helper) keeps the old
/// connection up after the frontend has already reconnected.
const ADMIT_WAIT: Duration = Duration::from_secs(1);

/// Waits until fewer than `max` connections are served (`true`); `false` if none has hung up
/// within [`ADMIT_WAIT`]. A frontend that reconnects right after leaving waits until its old
/// session has completed what it started, however long that takes: both would write the same
/// rings otherwise.
fn wait_for_slot(live: &Live, max: usize, term: &Termination) -> bool {
    let deadline = Instant::now() + ADMIT_WAIT;
    loop {
        let (conns, closing) = live.count();
        if conns < max {
            return true;
        }
        if term.requested() || (closing == 0 && Instant::now() >= deadline) {
            return false;
        }
        thread::sleep(CLOSING_POLL);
    }
}

/// Accepts frontends until termination; each is served on a thread of its own.
fn serve_listening(shared: &Arc<Shared>, socket: &Socket, term: &Termination) -> Result<(), Error> {
    let live = Arc::new(Live::default());
    let hook_live = live.clone();
    term.set_hook(Some(Box::new(move || hook_live.shut_all())));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let result = loop {
        match wait_readable(socket.listener.as_raw_fd(), term) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
        let stream = match socket.listener.accept() {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("accepting a frontend failed: {e}");
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        let max = usize::from(shared.config.max_connections);
        if !wait_for_slot(&live, max, term) {
            log::warn!("refused a frontend: already serving {max} (--max-connections); closing it");
            drop(stream);
            continue;
        }
        let Some(id) = live.add(&stream) else {
            log::warn!("refused a frontend: cannot track its connection");
            continue;
        };
        if term.requested() {
            live.shut_all();
        }
        let (shared, conn_live) = (shared.clone(), live.clone());
        let spawned = thread::Builder::new()
            .name("vhost-user-conn".into())
            .spawn(move || {
                if let Err(e) = serve_one(&shared, stream, || conn_live.closing(id)) {
                    log::warn!("connection failed: {}", crate::cli::error_chain(&e));
                }
                conn_live.remove(id);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                live.remove(id);
                break Err(Error::Thread(e));
            }
        }
    };
    live.shut_all();
    for t in threads {
        let _ = t.join();
    }
    term.set_hook(None);
    result
}

/// Connects to the frontend (retrying while it is not there) and serves it, again and again.
fn serve_client(shared: &Arc<Shared>, term: &Termination) -> Result<(), Error> {
    let path = &shared.config.socket;
    while !term.requested() {
        let mut warned = false;
        let stream = loop {
            if term.requested() {
                return Ok(());
            }
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if !warned {
                        log::warn!("cannot connect to {} (retrying): {e}", path.display());
                        warned = true;
                    }
                    thread::sleep(CONNECT_RETRY);
                }
            }
        };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        term.set_hook(Some(Box::new(move || {
            let _ = clone.shutdown(std::net::Shutdown::Both);
        })));
        let served = serve_one(shared, stream, || {});
        term.set_hook(None);
        served?;
    }
    Ok(())
}

/// Serves one frontend with a fresh backend (new engines, no memory, no queue state) and
/// returns once it is gone and every request it started has completed.
fn serve_one(
    shared: &Shared,
    frontend: UnixStream,
    frontend_gone: impl FnOnce(),
) -> Result<(), Error> {
    let engines = (0..shared.config.queues)
        .map(|_| shared.source.engine())
        .collect::<Result<Vec<_>, _>>()?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(BlkBackend::new(
        shared.device.clone(),
        engines,
        mem.clone(),
        shared.config.serve.clone(),
    ));
    let mut session = Session::new(backend, mem, &shared.private).map_err(Error::Session)?;
    log::info!("frontend connected");
    let limits = Limits {
        max_mem_slots: shared.config.max_mem_slots,
    };
    session.relay(frontend, limits);
    frontend_gone();
    let stats = session.close();
    log::info!("connection statistics: {stats:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            max_connections: 1,
            max_mem_slots: 32,
            user: None,
        };
        assert!(matches!(run(&config(0, 128)), Err(Error::Queues(0))));
        assert!(matches!(run(&config(65, 128)), Err(Error::Queues(65))));
        assert!(matches!(run(&config(1, 100)), Err(Error::QueueSize(100))));
        assert!(matches!(run(&config(1, 1)), Err(Error::QueueSize(1))));
    }
}
