//! The vhost-user frontend every vhost-user device shares: connection set-up and
//! negotiation, guest memory, ring start and stop, the in-flight region
//! (INFLIGHT_SHMFD), and reconnection after the backend goes away. Device models (blk, net)
//! wrap a [`VhostUserFrontend`] and add their features and configuration space.

mod backoff;
mod channel;
mod connection;
mod frontend;
mod inflight;

pub use backoff::Backoff;
pub use channel::Channel;
pub use connection::{Error as ConnectionError, GENERIC_PROTOCOL};
pub use frontend::{Error, FrontendConfig, VhostUserFrontend};
