//! The vhost-user-blk backend: a virtio-blk device served over a vhost-user socket, one thread
//! and one io_uring engine per queue, guest buffers handed to the kernel as they are.
//!
//! - [`config`]: feature bits and the `virtio_blk_config` space
//! - [`chain`], [`request`]: descriptor chains to checked block requests (pure)
//! - [`queue`]: the per-queue worker (engine, in-flight chains, used ring)
//! - [`backend`]: the `VhostUserBackend` the vhost-user-backend crate drives
//! - [`daemon`]: socket, connections, SIGTERM

pub mod backend;
pub use crate::vhost_user::{chain, memory};
pub mod config;
pub mod daemon;
mod inflight;
pub mod queue;
pub mod request;
use crate::vhost_user::signal;
#[cfg(test)]
mod testing;

pub use backend::BlkBackend;
pub use config::BlkConfig;
pub use daemon::{run, DaemonConfig, Error};
