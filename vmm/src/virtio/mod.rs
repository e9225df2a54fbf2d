//! Virtio devices for the guest: the modern virtio-pci transport (virtio 1.x section 4.1) and,
//! behind the [`VirtioDevice`] trait it drives, vhost-user frontend devices. The transport
//! cannot tell an in-process device from a vhost-user one: both get ring addresses and the
//! kick/call eventfds on activation.
//!
//! The notify path never exits to userspace: every queue's notify address is a KVM ioeventfd
//! whose eventfd is the queue's kick fd (see [`notify`]).

pub mod call_relay;
pub mod common_cfg;
pub mod device;
pub mod notify;
pub mod transport;
pub mod vhost_user;
pub mod vhost_user_blk;
pub mod vhost_user_mem;
pub mod vhost_user_net;

pub use device::{ActivateError, Activation, QueueActivation, VirtioDevice};
pub use notify::IoEventRegistrar;
pub use transport::VirtioPciDevice;

/// Feature bit `bit` as a mask.
pub const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// `queue_msix_vector` / `config_msix_vector` value meaning "no interrupt".
pub const NO_VECTOR: u16 = 0xffff;

/// The virtio device type of a block device (virtio 1.x section 5).
pub const DEVICE_TYPE_BLOCK: u16 = 2;
/// The virtio device type of a network device.
pub const DEVICE_TYPE_NET: u16 = 1;
