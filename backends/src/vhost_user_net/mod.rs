//! The vhost-user-net backend: a virtio-net device served over a vhost-user socket, one
//! thread and one frame engine per queue pair (TAP on io_uring, reflect or sink).
//!
//! - [`config`]: feature bits, the `virtio_net_config` space, frame limits
//! - [`frame`]: descriptor chains to checked frame buffers (pure)
//! - [`worker`]: the per-pair worker (engine, RX buffer pool, used rings, control queue)
//! - [`backend`]: the `VhostUserBackend` the vhost-user-backend crate drives
//! - [`daemon`]: socket, connections, SIGTERM

pub mod backend;
pub mod config;
pub mod daemon;
pub mod frame;
pub mod worker;

pub use backend::NetBackend;
pub use config::{Mode, NetConfig};
pub use daemon::{run, DaemonConfig, Error};
