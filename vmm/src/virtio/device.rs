//! The boundary between the virtio transport and device logic: what a device offers (type,
//! queues, features, configuration space) and what it is handed when the driver sets
//! DRIVER_OK (negotiated features, ring addresses, kick and call eventfds).

use vmm_sys_util::eventfd::EventFd;

/// One queue the driver enabled, as the device needs it to start processing.
#[derive(Debug)]
pub struct QueueActivation {
    pub index: u16,
    /// Entries, a power of two no larger than the device's maximum for this queue.
    pub size: u16,
    /// Guest-physical addresses of the descriptor table, driver (avail) and device (used)
    /// rings as the driver wrote them: the device checks them against guest RAM.
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    /// Signalled (through a KVM ioeventfd) when the driver notifies this queue.
    pub kick: EventFd,
    /// The device signals this when it wants to interrupt the driver.
    pub call: EventFd,
}

/// What the device gets on DRIVER_OK.
#[derive(Debug)]
pub struct Activation {
    /// The features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub features: u64,
    /// The enabled queues, in index order.
    pub queues: Vec<QueueActivation>,
}

/// A device refused to start; the transport reports it to the driver as DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
#[error("activating the virtio device failed")]
pub struct ActivateError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Device logic behind a virtio transport.
pub trait VirtioDevice: Send {
    /// The virtio device type (2: block).
    fn device_type(&self) -> u16;

    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits offered to the driver (VIRTIO_F_VERSION_1 among them).
    fn features(&self) -> u64;

    /// Bytes of device-specific configuration space.
    fn config_len(&self) -> usize;

    /// Reads device configuration at `offset`; the transport keeps `offset + data.len()`
    /// within [`VirtioDevice::config_len`].
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write to device configuration, bounded like reads.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device with the negotiated features and the enabled queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// Stops the queues after a driver reset (device status 0). The device must be ready for
    /// another activation afterwards.
    fn reset(&mut self);
}
