//! The common configuration structure of the virtio-pci modern transport (virtio 1.x section
//! 4.1.4.3): feature windows, device status, and the per-queue registers behind
//! `queue_select`. Pure register logic, so its semantics are tested without a VM.
//!
//! Accesses of any width at any offset are split into the fields they touch; a partial write
//! of a field (a 64-bit address written as two dwords) merges into the field's current value.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};

use super::{feature, NO_VECTOR};

/// Bytes of the structure (virtio 1.0 layout, up to `queue_device`).
pub const LEN: u64 = 0x38;

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
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

/// (offset, width) of every field, in order.
const FIELDS: [(u64, u64); 16] = [
    (DEVICE_FEATURE_SELECT, 4),
    (DEVICE_FEATURE, 4),
    (DRIVER_FEATURE_SELECT, 4),
    (DRIVER_FEATURE, 4),
    (CONFIG_MSIX_VECTOR, 2),
    (NUM_QUEUES, 2),
    (DEVICE_STATUS, 1),
    (CONFIG_GENERATION, 1),
    (QUEUE_SELECT, 2),
    (QUEUE_SIZE, 2),
    (QUEUE_MSIX_VECTOR, 2),
    (QUEUE_ENABLE, 2),
    (QUEUE_NOTIFY_OFF, 2),
    (QUEUE_DESC, 8),
    (QUEUE_DRIVER, 8),
    (QUEUE_DEVICE, 8),
];

const STATUS_DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const STATUS_FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
const STATUS_NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;

/// One queue's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueState {
    pub max_size: u16,
    pub size: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueState {
    fn new(max_size: u16) -> QueueState {
        QueueState {
            max_size,
            // Reset value: the maximum (section 4.1.4.3.2).
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// Whether the driver's settings describe a split ring the device can use: a power-of-two
    /// size within the maximum and the alignments of section 2.7 (the device checks the
    /// addresses against guest RAM).
    fn valid(&self) -> bool {
        self.size.is_power_of_two()
            && self.size <= self.max_size
            && self.desc.is_multiple_of(16)
            && self.driver.is_multiple_of(2)
            && self.device.is_multiple_of(4)
    }
}

/// What the transport must do after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// The driver wrote 0 to device_status: stop the device.
    Reset,
    /// The driver set DRIVER_OK: start the device.
    Activate,
}

pub struct CommonConfig {
    device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    config_vector: u16,
    status: u8,
    generation: u8,
    queue_select: u16,
    queues: Vec<QueueState>,
    /// Each queue's MSI-X vector, shared with whoever raises the queue's interrupt.
    vectors: Arc<[AtomicU16]>,
    /// Entries in the MSI-X table: vectors at or beyond it are refused.
    msix_vectors: u16,
}

impl CommonConfig {
    pub fn new(device_features: u64, queue_max_sizes: &[u16], msix_vectors: u16) -> CommonConfig {
        CommonConfig {
            device_features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            config_vector: NO_VECTOR,
            status: 0,
            generation: 0,
            queue_select: 0,
            queues: queue_max_sizes
                .iter()
                .map(|&m| QueueState::new(m))
                .collect(),
            vectors: queue_max_sizes
                .iter()
                .map(|_| AtomicU16::new(NO_VECTOR))
                .collect(),
            msix_vectors,
        }
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    pub fn queues(&self) -> &[QueueState] {
        &self.queues
    }

    pub fn queue_vectors(&self) -> Arc<[AtomicU16]> {
        self.vectors.clone()
    }

    pub fn config_vector(&self) -> u16 {
        self.config_vector
    }

    /// The device failed: tell the driver it needs a reset, and that configuration changed.
    pub fn set_needs_reset(&mut self) {
        self.status |= STATUS_NEEDS_RESET;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Back to the power-on state (the device features stay).
    fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_vector = NO_VECTOR;
        self.status = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueState::new(q.max_size);
        }
        for v in self.vectors.iter() {
            v.store(NO_VECTOR, Ordering::Relaxed);
        }
    }

    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = match field_at(at) {
                Some((start, _)) => (self.get(start) >> ((at - start) * 8)) as u8,
                None => 0,
            };
        }
    }

    /// Applies a driver write and says what the transport must do about it.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Action {
        let mut action = Action::None;
        let mut i = 0;
        while i < data.len() {
            let at = offset + i as u64;
            let Some((start, width)) = field_at(at) else {
                i += 1;
                continue;
            };
            // The bytes of this access that fall in this field.
            let mut value = self.get(start);
            while i < data.len() && offset + (i as u64) < start + width {
                let shift = (offset + i as u64 - start) * 8;
                value = (value & !(0xff << shift)) | u64::from(data[i]) << shift;
                i += 1;
            }
            let a = self.set(start, value);
            if a != Action::None {
                action = a;
            }
        }
        action
    }

    fn selected(&self) -> Option<&QueueState> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn get(&self, field: u64) -> u64 {
        let q = self.selected();
        match field {
            DEVICE_FEATURE_SELECT => self.device_feature_select.into(),
            DEVICE_FEATURE => window(self.device_features, self.device_feature_select),
            DRIVER_FEATURE_SELECT => self.driver_feature_select.into(),
            DRIVER_FEATURE => window(self.driver_features, self.driver_feature_select),
            CONFIG_MSIX_VECTOR => self.config_vector.into(),
            NUM_QUEUES => self.queues.len() as u64,
            DEVICE_STATUS => self.status.into(),
            CONFIG_GENERATION => self.generation.into(),
            QUEUE_SELECT => self.queue_select.into(),
            // An absent queue reads as size 0 (section 4.1.4.3.2).
            QUEUE_SIZE => q.map_or(0, |q| q.size.into()),
            QUEUE_MSIX_VECTOR => self
                .vectors
                .get(usize::from(self.queue_select))
                .map_or(NO_VECTOR, |v| v.load(Ordering::Relaxed))
                .into(),
            QUEUE_ENABLE => q.map_or(0, |q| q.enabled.into()),
            // Queue n notifies at notify_off n: each queue has its own ioeventfd address.
            QUEUE_NOTIFY_OFF => q.map_or(0, |_| self.queue_select.into()),
            QUEUE_DESC => q.map_or(0, |q| q.desc),
            QUEUE_DRIVER => q.map_or(0, |q| q.driver),
            QUEUE_DEVICE => q.map_or(0, |q| q.device),
            _ => 0,
        }
    }

    fn set(&mut self, field: u64, value: u64) -> Action {
        let features_locked = self.status & STATUS_FEATURES_OK != 0;
        let msix_vectors = self.msix_vectors;
        let vector = |v: u16| {
            // A vector the table does not have is refused: the driver reads back NO_VECTOR.
            if v < msix_vectors {
                v
            } else {
                NO_VECTOR
            }
        };
        match field {
            DEVICE_FEATURE_SELECT => self.device_feature_select = value as u32,
            DRIVER_FEATURE_SELECT => self.driver_feature_select = value as u32,
            // Features are fixed once FEATURES_OK is set (section 3.1.1).
            DRIVER_FEATURE if !features_locked => {
                let shift = match self.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return Action::None,
                };
                self.driver_features = (self.driver_features & !(0xffff_ffff << shift))
                    | (value & 0xffff_ffff) << shift;
            }
            CONFIG_MSIX_VECTOR => self.config_vector = vector(value as u16),
            DEVICE_STATUS => return self.set_status(value as u8),
            QUEUE_SELECT => self.queue_select = value as u16,
            QUEUE_MSIX_VECTOR => {
                if let Some(v) = self.vectors.get(usize::from(self.queue_select)) {
                    v.store(vector(value as u16), Ordering::Relaxed);
                }
            }
            _ => self.set_queue(field, value),
        }
        Action::None
    }

    /// Queue registers change only while the queue is disabled and the device not yet live.
    fn set_queue(&mut self, field: u64, value: u64) {
        let live = self.status & STATUS_DRIVER_OK != 0;
        let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
            return;
        };
        if live || q.enabled {
            return;
        }
        match field {
            QUEUE_SIZE => q.size = value as u16,
            // Writing 0 is not allowed (section 4.1.4.3.2); a ring the device could not use
            // stays disabled, which the driver sees when it reads queue_enable back.
            QUEUE_ENABLE if value as u16 == 1 => q.enabled = q.valid(),
            QUEUE_DESC => q.desc = value,
            QUEUE_DRIVER => q.driver = value,
            QUEUE_DEVICE => q.device = value,
            _ => {}
        }
    }

    fn set_status(&mut self, mut value: u8) -> Action {
        if value == 0 {
            self.reset();
            return Action::Reset;
        }
        let old = self.status;
        // Bits only accumulate until a reset (a driver must not clear them, section 2.1.1):
        // a driver that tries cannot make DRIVER_OK rise twice. NEEDS_RESET is the device's.
        value = (value & !STATUS_NEEDS_RESET) | old;
        if value & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 && !self.features_ok() {
            // Refused: the driver reads FEATURES_OK back as clear (section 3.1.1 step 6).
            value &= !STATUS_FEATURES_OK;
        }
        if value & STATUS_FEATURES_OK == 0 {
            // DRIVER_OK without accepted features would start a device on nothing.
            value &= !STATUS_DRIVER_OK;
        }
        self.status = value;
        if value & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            return Action::Activate;
        }
        Action::None
    }

    /// The driver accepted only offered features, and the modern interface.
    fn features_ok(&self) -> bool {
        self.driver_features & !self.device_features == 0
            && self.driver_features & feature(VIRTIO_F_VERSION_1) != 0
    }
}

/// The 32 feature bits `select` shows (0 beyond the 64 defined ones).
fn window(features: u64, select: u32) -> u64 {
    match select {
        0 => features & 0xffff_ffff,
        1 => features >> 32,
        _ => 0,
    }
}

fn field_at(offset: u64) -> Option<(u64, u64)> {
    FIELDS
        .iter()
        .copied()
        .find(|&(start, width)| (start..start + width).contains(&offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERED: u64 = 1 << 32 | 1 << 29 | 1 << 6;

    fn cfg() -> CommonConfig {
        CommonConfig::new(OFFERED, &[256, 64], 3)
    }

    fn r(c: &CommonConfig, offset: u64, width: usize) -> u64 {
        let mut b = [0u8; 8];
        c.read(offset, &mut b[..width]);
        u64::from_le_bytes(b)
    }

    fn w(c: &mut CommonConfig, offset: u64, width: usize, value: u64) -> Action {
        c.write(offset, &value.to_le_bytes()[..width])
    }

    /// Drives the status sequence up to FEATURES_OK with `features`.
    fn negotiate(c: &mut CommonConfig, features: u64) -> u8 {
        w(c, DEVICE_STATUS, 1, 1);
        w(c, DEVICE_STATUS, 1, 3);
        w(c, DRIVER_FEATURE_SELECT, 4, 0);
        w(c, DRIVER_FEATURE, 4, features & 0xffff_ffff);
        w(c, DRIVER_FEATURE_SELECT, 4, 1);
        w(c, DRIVER_FEATURE, 4, features >> 32);
        w(c, DEVICE_STATUS, 1, 0xb);
        r(c, DEVICE_STATUS, 1) as u8
    }

    fn setup_queue(c: &mut CommonConfig, q: u16, size: u16) {
        w(c, QUEUE_SELECT, 2, q.into());
        w(c, QUEUE_SIZE, 2, size.into());
        // A 64-bit address written as two dwords, as Linux does.
        w(c, QUEUE_DESC, 4, 0x10_0000);
        w(c, QUEUE_DESC + 4, 4, 0);
        w(c, QUEUE_DRIVER, 8, 0x10_1000);
        w(c, QUEUE_DEVICE, 8, 0x10_2000);
        w(c, QUEUE_ENABLE, 2, 1);
    }

    #[test]
    fn device_features_show_through_the_select_window() {
        let mut c = cfg();
        assert_eq!(r(&c, DEVICE_FEATURE, 4), 1 << 29 | 1 << 6);
        w(&mut c, DEVICE_FEATURE_SELECT, 4, 1);
        assert_eq!(r(&c, DEVICE_FEATURE, 4), 1);
        w(&mut c, DEVICE_FEATURE_SELECT, 4, 7);
        assert_eq!(r(&c, DEVICE_FEATURE, 4), 0);
        // Read-only.
        w(&mut c, DEVICE_FEATURE, 4, 0xffff_ffff);
        w(&mut c, DEVICE_FEATURE_SELECT, 4, 0);
        assert_eq!(r(&c, DEVICE_FEATURE, 4), 1 << 29 | 1 << 6);
        assert_eq!(r(&c, NUM_QUEUES, 2), 2);
    }

    #[test]
    fn driver_features_are_stored_per_window_and_read_back() {
        let mut c = cfg();
        w(&mut c, DRIVER_FEATURE_SELECT, 4, 1);
        w(&mut c, DRIVER_FEATURE, 4, 1);
        w(&mut c, DRIVER_FEATURE_SELECT, 4, 0);
        w(&mut c, DRIVER_FEATURE, 4, 1 << 29);
        assert_eq!(c.driver_features(), 1 << 32 | 1 << 29);
        assert_eq!(r(&c, DRIVER_FEATURE, 4), 1 << 29);
        w(&mut c, DRIVER_FEATURE_SELECT, 4, 2);
        w(&mut c, DRIVER_FEATURE, 4, 0xffff);
        assert_eq!(c.driver_features(), 1 << 32 | 1 << 29, "no bits beyond 63");
    }

    #[test]
    fn features_ok_needs_version_1_and_offered_bits_only() {
        let mut c = cfg();
        assert_eq!(negotiate(&mut c, 1 << 29) & STATUS_FEATURES_OK, 0);
        let mut c = cfg();
        assert_eq!(
            negotiate(&mut c, 1 << 32 | 1 << 5) & STATUS_FEATURES_OK,
            0,
            "bit 5 was not offered"
        );
        let mut c = cfg();
        assert_eq!(negotiate(&mut c, 1 << 32 | 1 << 29), 0xb);
        // Locked after FEATURES_OK.
        w(&mut c, DRIVER_FEATURE_SELECT, 4, 0);
        w(&mut c, DRIVER_FEATURE, 4, 0);
        assert_eq!(c.driver_features(), 1 << 32 | 1 << 29);
    }

    #[test]
    fn queue_registers_follow_queue_select() {
        let mut c = cfg();
        w(&mut c, QUEUE_SELECT, 2, 1);
        assert_eq!(r(&c, QUEUE_SIZE, 2), 64, "reset value is the maximum");
        assert_eq!(r(&c, QUEUE_NOTIFY_OFF, 2), 1);
        setup_queue(&mut c, 0, 128);
        assert_eq!(
            c.queues()[0],
            QueueState {
                max_size: 256,
                size: 128,
                enabled: true,
                desc: 0x10_0000,
                driver: 0x10_1000,
                device: 0x10_2000,
            }
        );
        w(&mut c, QUEUE_SELECT, 2, 0);
        assert_eq!(r(&c, QUEUE_DESC, 8), 0x10_0000);
        assert_eq!(r(&c, QUEUE_DRIVER + 4, 4), 0);
        assert_eq!(r(&c, QUEUE_ENABLE, 2), 1);
        // An enabled queue's registers are fixed.
        w(&mut c, QUEUE_SIZE, 2, 16);
        assert_eq!(r(&c, QUEUE_SIZE, 2), 128);
        // Absent queues read as size 0 and ignore writes.
        w(&mut c, QUEUE_SELECT, 2, 5);
        assert_eq!(r(&c, QUEUE_SIZE, 2), 0);
        w(&mut c, QUEUE_SIZE, 2, 8);
        assert_eq!(r(&c, QUEUE_SIZE, 2), 0);
        assert_eq!(r(&c, QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    }

    #[test]
    fn unusable_rings_stay_disabled() {
        let mut c = cfg();
        setup_queue(&mut c, 0, 100);
        assert!(!c.queues()[0].enabled, "size not a power of two");
        setup_queue(&mut c, 1, 128);
        assert!(!c.queues()[1].enabled, "above the maximum of 64");
        w(&mut c, QUEUE_SELECT, 2, 1);
        w(&mut c, QUEUE_SIZE, 2, 64);
        w(&mut c, QUEUE_DESC, 8, 0x10_0008);
        w(&mut c, QUEUE_ENABLE, 2, 1);
        assert_eq!(r(&c, QUEUE_ENABLE, 2), 0, "descriptor table misaligned");
    }

    #[test]
    fn msix_vectors_beyond_the_table_read_back_as_no_vector() {
        let mut c = cfg();
        w(&mut c, CONFIG_MSIX_VECTOR, 2, 2);
        assert_eq!(r(&c, CONFIG_MSIX_VECTOR, 2), 2);
        w(&mut c, CONFIG_MSIX_VECTOR, 2, 3);
        assert_eq!(r(&c, CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        w(&mut c, QUEUE_SELECT, 2, 1);
        w(&mut c, QUEUE_MSIX_VECTOR, 2, 1);
        assert_eq!(r(&c, QUEUE_MSIX_VECTOR, 2), 1);
        assert_eq!(c.queue_vectors()[1].load(Ordering::Relaxed), 1);
        w(&mut c, QUEUE_MSIX_VECTOR, 2, 9);
        assert_eq!(r(&c, QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    }

    #[test]
    fn driver_ok_activates_once_and_zero_resets_everything() {
        let mut c = cfg();
        negotiate(&mut c, 1 << 32);
        setup_queue(&mut c, 0, 256);
        w(&mut c, QUEUE_MSIX_VECTOR, 2, 0);
        assert_eq!(w(&mut c, DEVICE_STATUS, 1, 0xf), Action::Activate);
        assert_eq!(w(&mut c, DEVICE_STATUS, 1, 0xf), Action::None);
        // Live: queue registers are fixed.
        w(&mut c, QUEUE_SELECT, 2, 1);
        w(&mut c, QUEUE_SIZE, 2, 16);
        assert_eq!(r(&c, QUEUE_SIZE, 2), 64);

        c.set_needs_reset();
        assert_eq!(r(&c, CONFIG_GENERATION, 1), 1);
        w(&mut c, DEVICE_STATUS, 1, 0xf);
        assert_eq!(r(&c, DEVICE_STATUS, 1), 0x4f, "NEEDS_RESET sticks");

        assert_eq!(w(&mut c, DEVICE_STATUS, 1, 0), Action::Reset);
        assert_eq!(r(&c, DEVICE_STATUS, 1), 0);
        assert_eq!(c.driver_features(), 0);
        assert_eq!(r(&c, QUEUE_SELECT, 2), 0);
        assert_eq!(c.queues(), &[QueueState::new(256), QueueState::new(64)][..]);
        assert_eq!(r(&c, QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        w(&mut c, DEVICE_FEATURE_SELECT, 4, 1);
        assert_eq!(r(&c, DEVICE_FEATURE, 4), 1, "offered features survive");
    }

    #[test]
    fn status_bits_cannot_be_cleared_without_a_reset() {
        let mut c = cfg();
        negotiate(&mut c, 1 << 32);
        assert_eq!(w(&mut c, DEVICE_STATUS, 1, 0xf), Action::Activate);
        w(&mut c, DEVICE_STATUS, 1, 0x3);
        assert_eq!(r(&c, DEVICE_STATUS, 1), 0xf);
        assert_eq!(w(&mut c, DEVICE_STATUS, 1, 0xf), Action::None);
    }

    #[test]
    fn driver_ok_without_features_ok_is_refused() {
        let mut c = cfg();
        assert_eq!(w(&mut c, DEVICE_STATUS, 1, 0x7), Action::None);
        assert_eq!(r(&c, DEVICE_STATUS, 1), 0x3);
    }

    #[test]
    fn odd_widths_and_gaps_are_harmless() {
        let mut c = cfg();
        // A dword across device_status, config_generation and the low byte of queue_select.
        w(&mut c, DEVICE_STATUS, 4, 0x0001_ff01);
        assert_eq!(r(&c, DEVICE_STATUS, 1), 1);
        assert_eq!(r(&c, CONFIG_GENERATION, 1), 0, "read-only");
        assert_eq!(r(&c, QUEUE_SELECT, 2), 1);
        // Beyond the structure.
        assert_eq!(w(&mut c, LEN, 4, u64::MAX), Action::None);
        assert_eq!(r(&c, LEN, 4), 0);
    }
}
