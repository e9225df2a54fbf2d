//! The daemon's life: listen (or connect), serve one frontend at a time with fresh state,
//! come back for the next one, and on SIGTERM stop accepting, drain and return.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{BlkBackend, ServeOptions, MAX_QUEUES};
use super::config::BlkConfig;
use super::signal::Termination;
use crate::engine::{uring, BackendSpec, BlockEngine};
use crate::vhost_user::socket::{self, listen, wait_readable, Socket, VhostUserError};

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
    #[error(transparent)]
    Socket(#[from] socket::Error),
    #[error("socket path {} is not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("cannot set up the vhost-user daemon")]
    Daemon(#[source] VhostUserError),
    #[error("cannot watch the engines' completions")]
    Completions(#[source] io::Error),
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
