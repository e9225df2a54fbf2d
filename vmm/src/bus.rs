//! The PIO and MMIO buses: address ranges mapped to devices.

use crate::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. `offset` is relative to the start of the range it was inserted at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap { base: u64, len: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    base: u64,
    len: u64,
}

type DeviceMap = BTreeMap<Range, Arc<Mutex<dyn BusDevice>>>;

/// Empties the buses when dropped (see [`Bus::clear`]).
pub struct ClearOnDrop(pub Vec<Bus>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        for bus in &self.0 {
            bus.clear();
        }
    }
}

/// A set of non-overlapping device ranges. Clones share the same map, so a BAR moved by the
/// guest (through the PCI root) is seen by every vCPU.
#[derive(Clone, Default)]
pub struct Bus {
    devices: Arc<RwLock<DeviceMap>>,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), Error> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(Error::Overlap { base, len })?;
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let clash = map.keys().any(|r| base < r.base + r.len && r.base < end);
        if clash {
            return Err(Error::Overlap { base, len });
        }
        map.insert(Range { base, len }, device);
        Ok(())
    }

    /// Removes the device inserted at exactly `base`, returning it.
    pub fn remove(&self, base: u64) -> Option<Arc<Mutex<dyn BusDevice>>> {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let key = *map.keys().find(|r| r.base == base)?;
        map.remove(&key)
    }

    /// Drops every device. The PCI root holds the buses and the config-space devices on them
    /// hold the root: emptying the buses when a VM is done breaks that cycle, so devices (and
    /// their threads, engines and files) go away with the VM.
    pub fn clear(&self) {
        self.devices
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let probe = Range {
            base: addr,
            len: u64::MAX,
        };
        let (range, dev) = map.range(..=probe).next_back()?;
        (addr - range.base < range.len).then(|| (addr - range.base, dev.clone()))
    }

    /// Dispatches a read; returns false (and leaves `data` as all ones, like an unclaimed
    /// bus) when no device claims `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                lock(&dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false when no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                lock(&dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_relative_offsets() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let bus = Bus::new();
        bus.insert(a.clone(), 0x100, 0x10).unwrap();
        bus.insert(b.clone(), 0x110, 0x10).unwrap();
        assert!(bus.write(0x10f, &[1]));
        assert!(bus.write(0x110, &[2]));
        let mut d = [0u8; 2];
        assert!(bus.read(0x113, &mut d));
        assert_eq!(d, [3, 3]);
        assert_eq!(a.lock().unwrap().writes, vec![(0xf, vec![1])]);
        assert_eq!(b.lock().unwrap().writes, vec![(0, vec![2])]);
    }

    #[test]
    fn unclaimed_addresses_read_as_ones() {
        let bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x100, 0x10)
            .unwrap();
        let mut d = [0u8; 4];
        assert!(!bus.read(0xff, &mut d));
        assert_eq!(d, [0xff; 4]);
        assert!(!bus.read(0x110, &mut d));
        assert!(!bus.write(0x0, &[0]));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_rejected() {
        let bus = Bus::new();
        let dev = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev(), 0x100, 0x10).unwrap();
        assert!(bus.insert(dev(), 0xf8, 0x10).is_err());
        assert!(bus.insert(dev(), 0x10f, 1).is_err());
        assert!(bus.insert(dev(), 0x200, 0).is_err());
        assert!(bus.insert(dev(), u64::MAX, 2).is_err());
        bus.insert(dev(), 0x110, 1).unwrap();
    }

    #[test]
    fn clones_share_moves() {
        let bus = Bus::new();
        let view = bus.clone();
        let d = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(d.clone(), 0x1000, 0x10).unwrap();
        assert!(view.write(0x1004, &[1]));
        let moved = bus.remove(0x1000).unwrap();
        bus.insert(moved, 0x2000, 0x10).unwrap();
        assert!(!view.write(0x1004, &[2]));
        assert!(view.write(0x2004, &[3]));
        assert_eq!(d.lock().unwrap().writes, vec![(4, vec![1]), (4, vec![3])]);
        assert!(bus.remove(0x3000).is_none());
    }
}
