//! Network frame I/O for the net paths: the host TAP device.
//!
//! - [`tap`]: a TAP device through `/dev/net/tun` (vnet header, multi-queue, offloads)

pub mod tap;

pub use tap::Tap;
