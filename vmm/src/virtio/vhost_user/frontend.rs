//! The device-independent half of a vhost-user device, for the device's whole life: it
//! connects and negotiates, hands the backend guest memory and the rings when the driver sets
//! DRIVER_OK, stops the rings on a driver reset, and reconnects when the backend goes away.
//! A device model (blk, net) wraps it and adds what is its own: the features it offers and
//! its configuration space.
//!
//! In-flight region: with VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (when the device asks for it
//! and the backend offers it) the first ring start gets a region from the backend
//! (GET_INFLIGHT_FD), kept for the device's life and handed to every later start
//! (SET_INFLIGHT_FD), as QEMU's vhost-user-blk does; a driver reset drops it, so the next
//! driver starts with a clean one.
//!
//! Reconnection: a watcher thread sees the backend hang up; the device goes disconnected
//! while the guest keeps running (its kicks wait in the kick eventfds), and the watcher
//! reconnects with backoff, forever, then replays what the driver had started: features,
//! memory, the in-flight region, and each ring from the used index the guest sees (a dead
//! backend cannot answer GET_VRING_BASE; with the in-flight region the backend adds the
//! requests it had taken itself), and kicks each ring. A backend that lacks features the
//! driver negotiated fails the device for good.
//!
//! Every exchange with the backend is bounded by a reply timeout (see [`super::deadline`]),
//! so a backend that accepts and never answers cannot stall a vCPU.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vhost::vhost_user::VhostUserProtocolFeatures;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::backoff::Backoff;
use super::channel::{Connector, SocketConnector};
use super::connection::{self, Connection, GENERIC_PROTOCOL};
use super::deadline::{self, ReplyDeadline};
use super::inflight::Inflight;
use super::reconnect::Watcher;
use crate::virtio::device::{Activation, QueueActivation};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to vhost-user socket {}", .0.display())]
    Connect(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Connection(#[from] connection::Error),
    #[error("vhost-user reply timeout")]
    Deadline(#[from] deadline::Error),
    #[error("starting the vhost-user reconnection watcher failed")]
    Watcher(#[source] std::io::Error),
    #[error("queue_size={0}: expected a power of two from 2 to 32768")]
    BadQueueSize(u16),
    #[error("a vhost-user device needs at least one queue")]
    NoQueues,
    #[error("the driver accepted features {0:#x} that were not offered")]
    UnofferedFeatures(u64),
    #[error("queue {index}: size {size} is not a power of two up to {max}")]
    QueueSize { index: u16, size: u16, max: u16 },
    #[error("the vhost-user backend at {} is not connected", .0.display())]
    Disconnected(PathBuf),
    #[error("the vhost-user backend came back without features {0:#x} the device relies on")]
    LostFeatures(u64),
    #[error("the vhost-user device at {} has failed", .0.display())]
    Failed(PathBuf),
}

/// What to connect to and what the device needs from the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendConfig {
    pub socket: PathBuf,
    /// Virtqueues of the device (the backend must have at least as many).
    pub queues: u16,
    /// The largest ring the backend accepts per queue: vhost-user has no message to ask.
    pub queue_size: u16,
    /// Protocol features the device uses on top of MQ, REPLY_ACK and CONFIGURE_MEM_SLOTS
    /// (which every device gets when offered): CONFIG, INFLIGHT_SHMFD, ...
    pub device_protocol: VhostUserProtocolFeatures,
    /// Queues the device has when the backend lacks VHOST_USER_PROTOCOL_F_MQ (1 for blk, one
    /// receive/transmit pair for net).
    pub default_queues: u16,
    /// Waits between reconnection attempts after the backend hangs up.
    pub backoff: Backoff,
    /// How long the backend may take to answer before the connection is dropped.
    pub reply_timeout: Duration,
}

impl FrontendConfig {
    /// No device protocol features, the default backoff and a 5 s reply timeout.
    pub fn new(socket: PathBuf, queues: u16, queue_size: u16) -> FrontendConfig {
        FrontendConfig {
            socket,
            queues,
            queue_size,
            device_protocol: VhostUserProtocolFeatures::empty(),
            default_queues: 1,
            backoff: Backoff::default(),
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// Where the device stands with its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Connected,
    /// The backend went away; reconnection attempts go on.
    Disconnected,
    /// A new backend could not serve what the driver negotiated; no more attempts.
    Failed,
}

/// The queues a driver started, kept to replay them to a new backend.
struct Active {
    features: u64,
    queues: Vec<QueueActivation>,
}

/// A connection and the socket under it (to arm the reply deadline on).
struct Live {
    conn: Connection,
    stream: UnixStream,
}

pub(super) struct State {
    /// None while the backend is gone.
    live: Option<Live>,
    failed: bool,
    /// What the device offers the driver: a new backend must still have it.
    offered: u64,
    active: Option<Active>,
    inflight: Option<Inflight>,
}

pub(super) struct Shared {
    cfg: FrontendConfig,
    mem: GuestMemoryMmap,
    connector: Box<dyn Connector>,
    deadline: ReplyDeadline,
    backend_features: u64,
    protocol: VhostUserProtocolFeatures,
    state: Mutex<State>,
}

/// Why a reconnection attempt did not take.
pub(super) enum Attempt {
    /// Try again later.
    Retry(Error),
    /// The device has failed; stop trying.
    Fatal(Error),
}

/// A vhost-user frontend for one device.
pub struct VhostUserFrontend {
    shared: Arc<Shared>,
    /// Dropped first: the watcher holds `shared` too.
    watcher: Option<Watcher>,
}

impl VhostUserFrontend {
    /// Connects and negotiates. The device reads [`VhostUserFrontend::backend_features`],
    /// decides what to offer the driver and says so with [`VhostUserFrontend::offer`].
    pub fn connect(cfg: FrontendConfig, mem: GuestMemoryMmap) -> Result<VhostUserFrontend, Error> {
        let connector = Box::new(SocketConnector {
            socket: cfg.socket.clone(),
            queues: cfg.queues,
        });
        VhostUserFrontend::with_connector(cfg, mem, connector)
    }

    /// As [`VhostUserFrontend::connect`], with connections (the first and every
    /// reconnection) from `connector`: a test double of the backend, for instance.
    pub fn with_connector(
        cfg: FrontendConfig,
        mem: GuestMemoryMmap,
        connector: Box<dyn Connector>,
    ) -> Result<VhostUserFrontend, Error> {
        if cfg.queues == 0 {
            return Err(Error::NoQueues);
        }
        if !cfg.queue_size.is_power_of_two() || cfg.queue_size < 2 || cfg.queue_size > 32768 {
            return Err(Error::BadQueueSize(cfg.queue_size));
        }
        let deadline = ReplyDeadline::spawn(cfg.reply_timeout)?;
        let link = connector
            .connect()
            .map_err(|e| Error::Connect(cfg.socket.clone(), e))?;
        let conn = {
            let _armed = deadline.arm(&link.stream)?;
            Connection::negotiate(
                link.channel,
                &cfg.socket,
                cfg.queues,
                cfg.default_queues,
                wanted(&cfg),
            )?
        };
        let watched = link.stream.try_clone().map_err(Error::Watcher)?;
        let shared = Arc::new(Shared {
            backend_features: conn.backend_features,
            protocol: conn.protocol,
            state: Mutex::new(State {
                live: Some(Live {
                    conn,
                    stream: link.stream,
                }),
                failed: false,
                offered: 0,
                active: None,
                inflight: None,
            }),
            cfg,
            mem,
            connector,
            deadline,
        });
        let watcher = Watcher::spawn(shared.clone(), watched).map_err(Error::Watcher)?;
        Ok(VhostUserFrontend {
            shared,
            watcher: Some(watcher),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.shared.cfg.socket
    }

    /// The virtio features of the backend first connected to (GET_FEATURES), the
    /// vhost-user protocol bit included.
    pub fn backend_features(&self) -> u64 {
        self.shared.backend_features
    }

    /// The protocol features negotiated with the backend first connected to.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.shared.protocol
    }

    pub fn status(&self) -> Status {
        let state = self.shared.state();
        if state.failed {
            Status::Failed
        } else if state.live.is_some() {
            Status::Connected
        } else {
            Status::Disconnected
        }
    }

    /// Records the features the device offers the driver: activation refuses anything else,
    /// and a new backend must have them all.
    pub fn offer(&mut self, features: u64) {
        self.shared.state().offered = features;
    }

    /// GET_CONFIG: `len` bytes of the backend's device configuration from `offset`.
    pub fn get_config(&self, offset: u32, len: u32) -> Result<Vec<u8>, Error> {
        let mut state = self.shared.state();
        let live = self.shared.live(&mut state)?;
        self.shared
            .request(live, |c| Ok(c.get_config(offset, len)?))
    }

    /// SET_CONFIG: a driver write to the device configuration, for the backend to apply.
    pub fn set_config(&self, offset: u32, data: &[u8]) -> Result<(), Error> {
        let mut state = self.shared.state();
        let live = self.shared.live(&mut state)?;
        self.shared
            .request(live, |c| Ok(c.set_config(offset, data)?))
    }

    /// Starts the backend on the driver's features and rings (DRIVER_OK). While the backend
    /// is gone the activation is kept and replayed on reconnection.
    pub fn activate(&mut self, a: Activation) -> Result<(), Error> {
        let shared = &*self.shared;
        let mut state = shared.state();
        if state.failed {
            return Err(Error::Failed(shared.cfg.socket.clone()));
        }
        if a.features & !state.offered != 0 {
            return Err(Error::UnofferedFeatures(a.features & !state.offered));
        }
        let max = shared.cfg.queue_size;
        for q in &a.queues {
            if q.index >= shared.cfg.queues || !q.size.is_power_of_two() || q.size > max {
                return Err(Error::QueueSize {
                    index: q.index,
                    size: q.size,
                    max,
                });
            }
        }
        let state = &mut *state;
        let active = state.active.insert(Active {
            features: a.features,
            queues: a.queues,
        });
        let Some(live) = state.live.as_mut() else {
            log::warn!(
                "vhost-user {}: driver started while the backend is away: the rings start on \
                 reconnection",
                shared.cfg.socket.display()
            );
            return Ok(());
        };
        let inflight = &mut state.inflight;
        // A fresh driver starts its rings at index 0.
        let r = shared.request(live, |c| start(c, shared, active, inflight, |_| 0));
        match r {
            Err(Error::Connection(e)) if e.is_connection_loss() => {
                log::warn!(
                    "vhost-user {}: backend lost while starting the rings: {}; they start on \
                     reconnection",
                    shared.cfg.socket.display(),
                    crate::error_chain(&e)
                );
                Ok(())
            }
            r => r,
        }
    }

    /// Stops the rings after a driver reset and drops the in-flight region: what the last
    /// driver had in flight means nothing to the next.
    pub fn reset(&mut self) {
        let shared = &*self.shared;
        let mut state = shared.state();
        let state = &mut *state;
        state.inflight = None;
        let Some(active) = state.active.take() else {
            return;
        };
        let Some(live) = state.live.as_mut() else {
            return;
        };
        for q in &active.queues {
            if let Err(e) = shared.request(live, |c| Ok(c.stop_queue(q.index)?)) {
                log::warn!(
                    "vhost-user {}: stopping queue {}: {}",
                    shared.cfg.socket.display(),
                    q.index,
                    crate::error_chain(&e)
                );
            }
        }
    }
}

impl Drop for VhostUserFrontend {
    fn drop(&mut self) {
        self.watcher = None;
    }
}

fn wanted(cfg: &FrontendConfig) -> VhostUserProtocolFeatures {
    GENERIC_PROTOCOL | cfg.device_protocol
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn socket(&self) -> &Path {
        &self.cfg.socket
    }

    pub(super) fn backoff(&self) -> Backoff {
        self.cfg.backoff
    }

    fn live<'a>(&self, state: &'a mut State) -> Result<&'a mut Live, Error> {
        state
            .live
            .as_mut()
            .ok_or_else(|| Error::Disconnected(self.cfg.socket.clone()))
    }

    /// Runs `f` on the connection under the reply deadline. A lost connection is shut down,
    /// so the watcher sees it go even if the backend itself is still there.
    fn request<T>(
        &self,
        live: &mut Live,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let armed = self.deadline.arm(&live.stream)?;
        let r = f(&mut live.conn);
        drop(armed);
        if let Err(Error::Connection(e)) = &r {
            if e.is_connection_loss() {
                let _ = live.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        r
    }

    /// The backend hung up: requests fail fast until a new one is connected.
    pub(super) fn lost(&self) {
        let mut state = self.state();
        state.live = None;
        drop(state);
        log::warn!(
            "vhost-user {}: the backend hung up; reconnecting",
            self.cfg.socket.display()
        );
    }

    pub(super) fn set_failed(&self) {
        self.state().failed = true;
    }

    /// One reconnection attempt: connect, negotiate and replay what the driver had started.
    /// Returns the socket to watch.
    pub(super) fn reconnect(&self) -> Result<UnixStream, Attempt> {
        let retry = |e: Error| Attempt::Retry(e);
        let link = self
            .connector
            .connect()
            .map_err(|e| retry(Error::Connect(self.cfg.socket.clone(), e)))?;
        let armed = self
            .deadline
            .arm(&link.stream)
            .map_err(|e| retry(e.into()))?;
        let mut conn = Connection::negotiate(
            link.channel,
            &self.cfg.socket,
            self.cfg.queues,
            self.cfg.default_queues,
            wanted(&self.cfg),
        )
        .map_err(|e| retry(e.into()))?;
        let mut state = self.state();
        replay(&mut state, &mut conn, self)?;
        drop(armed);
        let watched = link
            .stream
            .try_clone()
            .map_err(|e| retry(Error::Watcher(e)))?;
        state.live = Some(Live {
            conn,
            stream: link.stream,
        });
        Ok(watched)
    }
}

/// Sends a started device to a new backend and kicks its rings. Each ring resumes at the
/// used index in guest memory: what the guest has seen completed.
fn replay(state: &mut State, conn: &mut Connection, shared: &Shared) -> Result<(), Attempt> {
    let needed = state.active.as_ref().map_or(state.offered, |a| a.features);
    let missing = needed & !conn.backend_features;
    if missing != 0 {
        return Err(Attempt::Fatal(Error::LostFeatures(missing)));
    }
    let Some(active) = state.active.as_ref() else {
        return Ok(());
    };
    let socket = shared.cfg.socket.display();
    if !conn.has_inflight() {
        log::warn!(
            "vhost-user {socket}: the backend has no INFLIGHT_SHMFD: requests it had taken \
             before the crash may be lost"
        );
    }
    start(conn, shared, active, &mut state.inflight, |q| {
        used_index(&shared.mem, q)
    })
    .map_err(Attempt::Retry)?;
    for q in &active.queues {
        // The backend looks at the ring now, for kicks that came while it was away.
        let _ = q.kick.write(1);
    }
    Ok(())
}

/// The used index the driver sees in queue `q`'s used ring (0 if the ring is not readable,
/// which activation has already ruled out).
fn used_index(mem: &GuestMemoryMmap, q: &QueueActivation) -> u16 {
    mem.read_obj::<u16>(GuestAddress(q.device.wrapping_add(2)))
        .map(u16::from_le)
        .unwrap_or(0)
}

/// Sends a started device to the backend: features, memory, the in-flight region (got from
/// the backend the first time), then each ring from the avail index `base` gives.
fn start(
    conn: &mut Connection,
    shared: &Shared,
    active: &Active,
    inflight: &mut Option<Inflight>,
    base: impl Fn(&QueueActivation) -> u16,
) -> Result<(), Error> {
    conn.set_features(active.features)?;
    conn.send_memory(&shared.mem)?;
    if conn.has_inflight() {
        if inflight.is_none() {
            *inflight = Some(conn.get_inflight(shared.cfg.queues, shared.cfg.queue_size)?);
        }
        if let Some(region) = inflight.as_ref() {
            conn.set_inflight(region)?;
        }
    }
    for q in &active.queues {
        conn.start_queue(&shared.mem, q, shared.cfg.queue_size, base(q))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
