//! Device initialisation (virtio 1.x section 3.1.1) as every driver here does it: reset,
//! ACKNOWLEDGE and DRIVER, feature negotiation, FEATURES_OK, then, once the driver has set up
//! its queues, DRIVER_OK. Also each queue's ring memory and registers.

use iopath_mailbox::error;

use super::pci::{QueueSetup, Transport};
use super::ring::{self, RingMemory, SplitRing};
use crate::clock;
use crate::log;
use crate::pci::PciDevice;
use crate::scratch::{Scratch, PAGE};

// Device status bits (section 2.1).
const S_ACKNOWLEDGE: u8 = 1;
const S_DRIVER: u8 = 2;
const S_DRIVER_OK: u8 = 4;
const S_FEATURES_OK: u8 = 8;
const S_NEEDS_RESET: u8 = 0x40;
const S_FAILED: u8 = 0x80;

pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Largest split ring (section 2.7).
pub const MAX_QUEUE_SIZE: u32 = 32768;
const RESET_TIMEOUT_MS: u64 = 1000;

/// Resets the device behind `dev` and negotiates the features in `wanted` that it offers
/// (VERSION_1 is required); returns the transport and the features accepted.
pub fn negotiate(dev: &PciDevice, tsc_khz: u64, wanted: u64) -> Result<(Transport, u64), u32> {
    dev.enable_mmio_dma();
    let t = Transport::find(dev)?;
    t.set_status(0);
    if !clock::wait_until(tsc_khz, RESET_TIMEOUT_MS, || t.status() == 0) {
        log!("virtio {}: status {:#x} after reset", dev, t.status());
        return Err(error::DEVICE_ERROR);
    }
    t.set_status(S_ACKNOWLEDGE);
    t.set_status(S_ACKNOWLEDGE | S_DRIVER);
    let offered = t.device_features();
    let features = offered & wanted;
    if features & F_VERSION_1 == 0 {
        log!("virtio {}: features {:#x} lack VERSION_1", dev, offered);
        return fail(&t, error::DEVICE_ERROR);
    }
    t.set_driver_features(features);
    t.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if t.status() & S_FEATURES_OK == 0 {
        log!("virtio {}: device refused features {:#x}", dev, features);
        return fail(&t, error::DEVICE_ERROR);
    }
    Ok((t, features))
}

/// Sets DRIVER_OK and checks the device started (a vhost-user device starts its backend
/// here, and says DEVICE_NEEDS_RESET if that failed).
pub fn driver_ok(t: &Transport, dev: &PciDevice) -> Result<(), u32> {
    t.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    let status = t.status();
    if status & S_NEEDS_RESET != 0 || status & S_DRIVER_OK == 0 {
        log!(
            "virtio {}: device did not start (status {:#x}); the VMM log says why",
            dev,
            status
        );
        return Err(error::DEVICE_ERROR);
    }
    Ok(())
}

/// Tells the device the driver gave up (section 3.1.1 step 8).
pub fn fail<T>(t: &Transport, code: u32) -> Result<T, u32> {
    t.set_status(t.status() | S_FAILED);
    Err(code)
}

/// Zeroed, page-aligned memory for a ring of `size` entries.
pub fn alloc_ring(scratch: &mut Scratch, size: u16) -> Option<RingMemory> {
    Some(RingMemory {
        desc: scratch.alloc_zeroed(ring::desc_bytes(size), PAGE)?,
        driver: scratch.alloc_zeroed(ring::driver_bytes(size), PAGE)?,
        device: scratch.alloc_zeroed(ring::device_bytes(size), PAGE)?,
    })
}

/// Programs and enables queue `index` (selected before, for its maximum size) on `mem`;
/// returns the ring and its notify address.
pub fn enable_queue(
    t: &Transport,
    dev: &PciDevice,
    index: u16,
    mem: RingMemory,
    size: u16,
    features: u64,
) -> Result<(SplitRing, u64), u32> {
    let setup = QueueSetup {
        size,
        desc: mem.desc,
        driver: mem.driver,
        device: mem.device,
    };
    let Some(notify) = t.enable_queue(&setup) else {
        log!(
            "virtio {}: queue {} of size {} was not enabled",
            dev,
            index,
            size
        );
        return fail(t, error::DEVICE_ERROR);
    };
    Ok((
        SplitRing::new(mem, size, features & F_EVENT_IDX != 0),
        notify,
    ))
}

/// Notifies queue `index` at `notify` (section 4.1.5.2). The address is a KVM ioeventfd
/// under our VMM: no exit to userspace.
pub fn notify(notify: u64, index: u16) {
    // SAFETY: `notify` was checked to lie in the notify structure (`Transport::enable_queue`).
    unsafe { crate::arch::mmio_write16(notify, index) };
}
