//! The vhost-user-blk backend: a virtio-blk device served over a vhost-user socket, one thread
//! and one io_uring engine per queue, guest buffers handed to the kernel as they are.
//!
//! - [`config`]: feature bits and the `virtio_blk_config` space
//! - [`chain`], [`request`]: descriptor chains to checked block requests (pure)
//! - [`queue`]: the per-queue worker (engine, in-flight chains, used ring)
//! - [`backend`]: the `VhostUserBackend` the vhost-user-backend crate drives
//! - [`relay`]: the message layer in front of the crate (inflight region, limits)
//! - [`inflight_region`]: the INFLIGHT_SHMFD region (QEMU/libvhost-user layout)
//! - [`session`]: one frontend connection (crate handler behind the relay)
//! - [`daemon`]: socket, connections, SIGTERM, `--user`

pub mod backend;
pub mod chain;
pub mod config;
pub mod daemon;
mod inflight;
pub mod inflight_region;
pub mod memory;
pub mod queue;
pub mod relay;
pub mod request;
pub mod session;
mod signal;
#[cfg(test)]
mod testing;

pub use backend::BlkBackend;
pub use config::BlkConfig;
pub use daemon::{run, DaemonConfig, Error};
