//! The daemon's life: listen (or connect), serve one frontend at a time with fresh state,
//! come back for the next one, and on SIGTERM stop accepting, drain and return. The TAP
//! device is opened once, so it stays the same interface across frontends.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{NetBackend, ServeOptions};
use super::config::{Mode, NetConfig};
use super::worker::Stats;
use crate::net::{tap, uring, Loopback, LoopbackMode, NetEngine, Tap, TapEngine};
use crate::vhost_user::signal::Termination;
use crate::vhost_user::socket::{self, listen, wait_readable, Socket, VhostUserError};

/// Largest split-ring size (virtio 1.x).
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Queue pairs: two queues each plus the control queue must fit the library's 64-bit mask.
pub const MAX_QUEUE_PAIRS: u16 = 31;
/// Transfers in flight per pair.
const ENGINE_DEPTH: u32 = 256;
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Everything the daemon is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub client: bool,
    pub mode: Mode,
    pub device: NetConfig,
    pub serve: ServeOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--queues must be in 1..={MAX_QUEUE_PAIRS}, not {0}")]
    Queues(u16),
    #[error("--queue-size must be a power of two in 2..={MAX_QUEUE_SIZE}, not {0}")]
    QueueSize(u16),
    #[error("--mtu must be in 68..=65535, not {0}")]
    Mtu(u16),
    #[error("cannot open the TAP device")]
    Tap(#[source] tap::Error),
    #[error("cannot duplicate a TAP queue")]
    DupTap(#[source] std::io::Error),
    #[error("cannot set up a TAP engine")]
    Engine(#[source] uring::Error),
    #[error("cannot handle SIGTERM")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Socket(#[from] socket::Error),
    #[error("socket path {} is not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("cannot set up the vhost-user daemon")]
    Daemon(#[source] VhostUserError),
    #[error("cannot watch the engines' completions")]
    Completions(#[source] std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT; returns the counters of every connection. Must
/// be called before the process starts any other thread (see [`Termination::install`]).
pub fn run(config: &DaemonConfig) -> Result<Stats, Error> {
    let d = &config.device;
    if d.queue_pairs == 0 || d.queue_pairs > MAX_QUEUE_PAIRS {
        return Err(Error::Queues(d.queue_pairs));
    }
    if !(2..=MAX_QUEUE_SIZE).contains(&d.queue_size) || !d.queue_size.is_power_of_two() {
        return Err(Error::QueueSize(d.queue_size));
    }
    if d.mtu < 68 {
        return Err(Error::Mtu(d.mtu));
    }
    let term = Termination::install().map_err(Error::Signals)?;
    let taps = match &config.mode {
        Mode::Tap(name) => Tap::open(name, d.queue_pairs, true).map_err(Error::Tap)?,
        Mode::Reflect | Mode::Sink => Vec::new(),
    };
    log::info!(
        "serving {:?} with {} queue pair(s) of {}",
        config.mode,
        d.queue_pairs,
        d.queue_size
    );
    let mut socket = if config.client {
        None
    } else {
        Some(listen(&config.socket)?)
    };
    let mut total = Stats::default();
    while !term.requested() {
        if let Some(socket) = &socket {
            if !wait_readable(socket.listener.as_raw_fd(), &term)? {
                break;
            }
        }
        total.add(&serve_one(config, &taps, socket.as_mut(), &term)?);
    }
    log::info!("exit statistics: {total:?}");
    Ok(total)
}

fn engines(config: &DaemonConfig, taps: &[Tap]) -> Result<Vec<Box<dyn NetEngine>>, Error> {
    let pairs = usize::from(config.device.queue_pairs);
    let loopback =
        |mode| -> Box<dyn NetEngine> { Box::new(Loopback::new(mode, ENGINE_DEPTH as usize)) };
    match config.mode {
        Mode::Reflect => Ok((0..pairs)
            .map(|_| loopback(LoopbackMode::Reflect))
            .collect()),
        Mode::Sink => Ok((0..pairs).map(|_| loopback(LoopbackMode::Sink)).collect()),
        Mode::Tap(_) => taps
            .iter()
            .map(|t| {
                let tap = t.try_clone().map_err(Error::DupTap)?;
                let engine = TapEngine::new(tap, ENGINE_DEPTH).map_err(Error::Engine)?;
                Ok(Box::new(engine) as Box<dyn NetEngine>)
            })
            .collect(),
    }
}

fn serve_one(
    config: &DaemonConfig,
    taps: &[Tap],
    socket: Option<&mut Socket>,
    term: &Termination,
) -> Result<Stats, Error> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(NetBackend::new(
        config.device.clone(),
        engines(config, taps)?,
        mem.clone(),
        config.serve.clone(),
    ));
    let daemon_error = |e| Error::Daemon(VhostUserError(e));
    let mut daemon = VhostUserDaemon::new("vhost-user-net".into(), backend.clone(), mem)
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
                    return Ok(Stats::default());
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
    let stats = backend.stats();
    log::info!("connection statistics: {stats:?}");
    drop(daemon);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_before_anything_opens() {
        let config = |queue_pairs, queue_size, mtu| DaemonConfig {
            socket: "/nonexistent/sock".into(),
            client: false,
            mode: Mode::Tap("must-not-open".into()),
            device: NetConfig {
                mac: [2, 0, 0, 0, 0, 1],
                mtu,
                queue_pairs,
                queue_size,
            },
            serve: ServeOptions {
                poll: Duration::ZERO,
            },
        };
        assert!(matches!(run(&config(0, 256, 1500)), Err(Error::Queues(0))));
        assert!(matches!(
            run(&config(32, 256, 1500)),
            Err(Error::Queues(32))
        ));
        assert!(matches!(
            run(&config(1, 100, 1500)),
            Err(Error::QueueSize(100))
        ));
        assert!(matches!(run(&config(1, 256, 67)), Err(Error::Mtu(67))));
    }
}
