//! The modern virtio-pci transport from the driver's side (virtio 1.x section 4.1): vendor
//! capabilities locate the common configuration, notify and device configuration structures
//! in memory BARs; the driver then talks to them with naturally sized MMIO accesses.

use iopath_mailbox::error;

use crate::pci::PciDevice;
use crate::{arch, log};

/// PCI capability ID of the virtio structures.
const CAP_VENDOR: u8 = 0x09;
/// virtio_pci_cap.cfg_type values.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_DEVICE: u8 = 4;
/// Bytes of struct virtio_pci_cap, and of virtio_pci_notify_cap which adds the multiplier.
const CAP_LEN: u8 = 16;
const NOTIFY_CAP_LEN: u8 = 20;

// Common configuration fields (section 4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// The 1.0 structure ends after queue_device.
const COMMON_LEN: u32 = 0x38;

/// `queue_msix_vector` value for "no interrupt".
pub const NO_VECTOR: u16 = 0xffff;

/// A structure in a BAR, checked to lie inside the identity map.
#[derive(Clone, Copy, Debug)]
struct Region {
    addr: u64,
    len: u32,
}

/// Where the driver reaches the device.
pub struct Transport {
    common: u64,
    device: Region,
    notify: Region,
    notify_multiplier: u32,
}

/// One ring's registers as the driver programs them.
pub struct QueueSetup {
    pub size: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl Transport {
    /// Finds the common, notify and device structures (the first of each kind whose BAR is
    /// usable, as section 4.1.4 recommends).
    pub fn find(dev: &PciDevice) -> Result<Transport, u32> {
        let (mut common, mut notify, mut device) = (None, None, None);
        for cap in dev.capabilities().filter(|c| c.id == CAP_VENDOR) {
            let Some(found) = read_cap(dev, cap.offset) else {
                continue;
            };
            let (slot, want) = match found.kind {
                CFG_COMMON => (&mut common, COMMON_LEN),
                CFG_NOTIFY => (&mut notify, 2),
                CFG_DEVICE => (&mut device, 1),
                _ => continue,
            };
            if slot.is_some() || found.region.len < want {
                continue;
            }
            *slot = Some(found);
        }
        let (Some(common), Some(notify), Some(device)) = (common, notify, device) else {
            log!(
                "virtio {}: missing capabilities (common {}, notify {}, device {})",
                dev,
                common.is_some(),
                notify.is_some(),
                device.is_some()
            );
            return Err(error::DEVICE_ERROR);
        };
        Ok(Transport {
            common: common.region.addr,
            device: device.region,
            notify: notify.region,
            notify_multiplier: notify.multiplier,
        })
    }

    pub fn status(&self) -> u8 {
        // SAFETY: the common structure was checked to lie in the identity map (`find`).
        unsafe { arch::mmio_read8(self.common + DEVICE_STATUS) }
    }

    pub fn set_status(&self, status: u8) {
        // SAFETY: as in `status`.
        unsafe { arch::mmio_write8(self.common + DEVICE_STATUS, status) }
    }

    pub fn device_features(&self) -> u64 {
        let mut f = 0;
        for half in 0..2u32 {
            self.w32(DEVICE_FEATURE_SELECT, half);
            f |= u64::from(self.r32(DEVICE_FEATURE)) << (32 * half);
        }
        f
    }

    pub fn set_driver_features(&self, features: u64) {
        for half in 0..2u32 {
            self.w32(DRIVER_FEATURE_SELECT, half);
            self.w32(DRIVER_FEATURE, (features >> (32 * half)) as u32);
        }
    }

    /// Selects queue `q` and returns its maximum size (0: the queue does not exist).
    pub fn select_queue(&self, q: u16) -> u16 {
        self.w16(QUEUE_SELECT, q);
        self.r16(QUEUE_SIZE)
    }

    /// Programs and enables the selected queue without an interrupt vector; returns its notify
    /// address, checked to lie in the notify structure.
    pub fn enable_queue(&self, q: &QueueSetup) -> Option<u64> {
        self.w16(QUEUE_SIZE, q.size);
        self.w16(QUEUE_MSIX_VECTOR, NO_VECTOR);
        self.w64(QUEUE_DESC, q.desc);
        self.w64(QUEUE_DRIVER, q.driver);
        self.w64(QUEUE_DEVICE, q.device);
        let off = u64::from(self.r16(QUEUE_NOTIFY_OFF)) * u64::from(self.notify_multiplier);
        self.w16(QUEUE_ENABLE, 1);
        if self.r16(QUEUE_ENABLE) != 1 || off + 2 > u64::from(self.notify.len) {
            return None;
        }
        Some(self.notify.addr + off)
    }

    /// A consistent 32-bit read of device configuration at `offset` (`None` past its end).
    pub fn config32(&self, offset: u32) -> Option<u32> {
        self.config_stable(|| self.device_read32(offset))?
    }

    /// A consistent 64-bit read from two 32-bit halves (section 4.1.3.1: the generation
    /// counter changes if the device updated the value between them).
    pub fn config64(&self, offset: u32) -> Option<u64> {
        self.config_stable(|| {
            let lo = self.device_read32(offset)?;
            let hi = self.device_read32(offset + 4)?;
            Some(u64::from(lo) | u64::from(hi) << 32)
        })?
    }

    fn config_stable<T>(&self, mut read: impl FnMut() -> T) -> Option<T> {
        // A device that keeps changing its configuration gets a bounded number of tries.
        for _ in 0..16 {
            let before = self.r8(CONFIG_GENERATION);
            let v = read();
            if self.r8(CONFIG_GENERATION) == before {
                return Some(v);
            }
        }
        log!("virtio: device configuration keeps changing");
        None
    }

    fn device_read32(&self, offset: u32) -> Option<u32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.device.len {
            return None;
        }
        // SAFETY: inside the device structure, checked against the identity map in `find`;
        // aligned.
        Some(unsafe { arch::mmio_read32(self.device.addr + u64::from(offset)) })
    }

    fn r8(&self, field: u64) -> u8 {
        // SAFETY: `field` is a constant inside the COMMON_LEN bytes `find` checked.
        unsafe { arch::mmio_read8(self.common + field) }
    }

    fn r16(&self, field: u64) -> u16 {
        // SAFETY: as in `r8`; 16-bit fields are 2-byte aligned.
        unsafe { arch::mmio_read16(self.common + field) }
    }

    fn w16(&self, field: u64, v: u16) {
        // SAFETY: as in `r16`.
        unsafe { arch::mmio_write16(self.common + field, v) }
    }

    fn r32(&self, field: u64) -> u32 {
        // SAFETY: as in `r8`; 32-bit fields are 4-byte aligned.
        unsafe { arch::mmio_read32(self.common + field) }
    }

    fn w32(&self, field: u64, v: u32) {
        // SAFETY: as in `r32`.
        unsafe { arch::mmio_write32(self.common + field, v) }
    }

    /// 64-bit fields as two dwords, low first (section 4.1.3.1 allows it).
    fn w64(&self, field: u64, v: u64) {
        self.w32(field, v as u32);
        self.w32(field + 4, (v >> 32) as u32);
    }
}

#[derive(Clone, Copy)]
struct Found {
    kind: u8,
    region: Region,
    multiplier: u32,
}

/// Reads the virtio_pci_cap at `at`; `None` for a capability the driver cannot use (too
/// short, an unknown BAR, or outside the identity map).
fn read_cap(dev: &PciDevice, at: u8) -> Option<Found> {
    let dw = |rel: u8| at.checked_add(rel).map(|o| dev.read32(o));
    let head = dw(0)?;
    let cap_len = (head >> 16) as u8;
    let kind = (head >> 24) as u8;
    if cap_len < CAP_LEN {
        return None;
    }
    let bar = dw(4)? as u8;
    let offset = dw(8)?;
    let len = dw(12)?;
    let multiplier = if kind == CFG_NOTIFY {
        if cap_len < NOTIFY_CAP_LEN {
            return None;
        }
        dw(16)?
    } else {
        0
    };
    // Values 6 and up are reserved: the capability is to be ignored.
    if bar >= 6 {
        return None;
    }
    let base = dev.mmio_bar(bar, u64::from(offset) + u64::from(len)).ok()?;
    Some(Found {
        kind,
        region: Region {
            addr: base + u64::from(offset),
            len,
        },
        multiplier,
    })
}
