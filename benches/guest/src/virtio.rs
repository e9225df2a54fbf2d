//! Polled virtio drivers (virtio 1.x) over the modern PCI transport: virtio-blk and
//! virtio-net. They share the transport ([`pci`]), the split ring ([`ring`]) and the device
//! initialisation sequence ([`setup`]); each adds its queues and its configuration.

mod blk;
mod net;
mod pci;
mod ring;
mod setup;

pub use blk::VirtioBlk;
pub use net::VirtioNet;
