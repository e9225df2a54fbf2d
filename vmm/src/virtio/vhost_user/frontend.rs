//! The device-independent half of a vhost-user device, for the device's whole life: it
//! connects and negotiates, hands the backend guest memory and the rings when the driver sets
//! DRIVER_OK, and stops the rings on a driver reset. A device model (blk, net) wraps it and
//! adds what is its own: the features it offers and its configuration space.
//!
//! With VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (when the device asks for it and the backend
//! offers it) the first ring start gets an in-flight region from the backend
//! (GET_INFLIGHT_FD), kept for the device's life and handed to every later start
//! (SET_INFLIGHT_FD), as QEMU's vhost-user-blk does; a driver reset drops it, so the next
//! driver starts with a clean one.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::{Frontend, VhostUserProtocolFeatures};
use vm_memory::GuestMemoryMmap;

use super::backoff::Backoff;
use super::channel::Channel;
use super::connection::{self, Connection, GENERIC_PROTOCOL};
use super::inflight::Inflight;
use crate::virtio::device::{Activation, QueueActivation};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to vhost-user socket {}", .0.display())]
    Connect(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Connection(#[from] connection::Error),
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
}

/// The queues a driver started, kept to replay them to a new backend.
struct Active {
    features: u64,
    queues: Vec<QueueActivation>,
}

struct State {
    /// None while the backend is gone.
    conn: Option<Connection>,
    /// What the device offers the driver: a new backend must still have it.
    offered: u64,
    active: Option<Active>,
    inflight: Option<Inflight>,
}

struct Shared {
    cfg: FrontendConfig,
    mem: GuestMemoryMmap,
    backend_features: u64,
    protocol: VhostUserProtocolFeatures,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A vhost-user frontend for one device.
pub struct VhostUserFrontend {
    shared: Arc<Shared>,
}

/// Refuses a configuration no backend could serve, before connecting.
fn check(cfg: &FrontendConfig) -> Result<(), Error> {
    if cfg.queues == 0 {
        return Err(Error::NoQueues);
    }
    if !cfg.queue_size.is_power_of_two() || cfg.queue_size < 2 || cfg.queue_size > 32768 {
        return Err(Error::BadQueueSize(cfg.queue_size));
    }
    Ok(())
}

/// Connects to `socket` and wraps the stream in the vhost crate's frontend.
fn open(cfg: &FrontendConfig) -> Result<Connection, Error> {
    let stream =
        UnixStream::connect(&cfg.socket).map_err(|e| Error::Connect(cfg.socket.clone(), e))?;
    let channel = Box::new(Frontend::from_stream(stream, u64::from(cfg.queues)));
    let wanted = GENERIC_PROTOCOL | cfg.device_protocol;
    Ok(Connection::negotiate(
        channel,
        &cfg.socket,
        cfg.queues,
        cfg.default_queues,
        wanted,
    )?)
}

impl VhostUserFrontend {
    /// Connects and negotiates. The device reads [`VhostUserFrontend::backend_features`],
    /// decides what to offer the driver and says so with [`VhostUserFrontend::offer`].
    pub fn connect(cfg: FrontendConfig, mem: GuestMemoryMmap) -> Result<VhostUserFrontend, Error> {
        check(&cfg)?;
        let conn = open(&cfg)?;
        Ok(VhostUserFrontend::with_connection(cfg, mem, conn))
    }

    /// As [`VhostUserFrontend::connect`], over `channel` instead of the socket: for test
    /// doubles of the backend.
    pub fn with_channel(
        cfg: FrontendConfig,
        mem: GuestMemoryMmap,
        channel: Box<dyn Channel>,
    ) -> Result<VhostUserFrontend, Error> {
        check(&cfg)?;
        let wanted = GENERIC_PROTOCOL | cfg.device_protocol;
        let conn =
            Connection::negotiate(channel, &cfg.socket, cfg.queues, cfg.default_queues, wanted)?;
        Ok(VhostUserFrontend::with_connection(cfg, mem, conn))
    }

    fn with_connection(
        cfg: FrontendConfig,
        mem: GuestMemoryMmap,
        conn: Connection,
    ) -> VhostUserFrontend {
        let shared = Arc::new(Shared {
            backend_features: conn.backend_features,
            protocol: conn.protocol,
            state: Mutex::new(State {
                conn: Some(conn),
                offered: 0,
                active: None,
                inflight: None,
            }),
            cfg,
            mem,
        });
        VhostUserFrontend { shared }
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

    /// Records the features the device offers the driver: activation refuses anything else.
    pub fn offer(&mut self, features: u64) {
        self.shared.state().offered = features;
    }

    /// GET_CONFIG: `len` bytes of the backend's device configuration from `offset`.
    pub fn get_config(&self, offset: u32, len: u32) -> Result<Vec<u8>, Error> {
        let mut state = self.shared.state();
        let conn = state.conn.as_mut().ok_or_else(|| self.disconnected())?;
        Ok(conn.get_config(offset, len)?)
    }

    /// SET_CONFIG: a driver write to the device configuration, for the backend to apply.
    pub fn set_config(&self, offset: u32, data: &[u8]) -> Result<(), Error> {
        let mut state = self.shared.state();
        let conn = state.conn.as_mut().ok_or_else(|| self.disconnected())?;
        Ok(conn.set_config(offset, data)?)
    }

    fn disconnected(&self) -> Error {
        Error::Disconnected(self.shared.cfg.socket.clone())
    }

    /// Starts the backend on the driver's features and rings (DRIVER_OK).
    pub fn activate(&mut self, a: Activation) -> Result<(), Error> {
        let shared = &*self.shared;
        let mut state = shared.state();
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
        let conn = state.conn.as_mut().ok_or_else(|| self.disconnected())?;
        if conn.has_inflight() && state.inflight.is_none() {
            state.inflight = Some(conn.get_inflight(shared.cfg.queues, max)?);
        }
        // A fresh driver starts its rings at index 0.
        start(conn, shared, active, state.inflight.as_ref(), |_| 0)
    }

    /// Stops the rings after a driver reset and drops the in-flight region: what the last
    /// driver had in flight means nothing to the next.
    pub fn reset(&mut self) {
        let mut state = self.shared.state();
        let state = &mut *state;
        state.inflight = None;
        let Some(active) = state.active.take() else {
            return;
        };
        let Some(conn) = state.conn.as_mut() else {
            return;
        };
        for q in &active.queues {
            if let Err(e) = conn.stop_queue(q.index) {
                log::warn!("stopping queue {}: {}", q.index, crate::error_chain(&e));
            }
        }
    }
}

/// Sends an active device to the backend: features, memory, the in-flight region, then each
/// ring from the avail index `base` gives.
fn start(
    conn: &mut Connection,
    shared: &Shared,
    active: &Active,
    inflight: Option<&Inflight>,
    base: impl Fn(&QueueActivation) -> u16,
) -> Result<(), Error> {
    conn.set_features(active.features)?;
    conn.send_memory(&shared.mem)?;
    if let Some(inflight) = inflight {
        conn.set_inflight(inflight)?;
    }
    for q in &active.queues {
        conn.start_queue(&shared.mem, q, shared.cfg.queue_size, base(q))?;
    }
    Ok(())
}
