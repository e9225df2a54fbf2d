//! The root bus: slot 0 is a host bridge, devices take the following slots. BARs are assigned
//! from fixed windows when a device is added (as firmware would) and mapped onto the buses
//! while the command register enables decoding; a guest that moves a BAR moves the mapping.

use std::sync::{Arc, Mutex};

use super::config::{ConfigSpace, PciIds};
use super::{BarKind, PciDevice};
use crate::bus::{Bus, BusDevice};
use crate::lock;

const SLOTS: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no free PCI slot")]
    NoSlot,
    #[error("no room for a {0:#x}-byte BAR in the PCI window")]
    NoBarSpace(u64),
}

struct Slot {
    dev: Arc<Mutex<dyn PciDevice>>,
    /// Where each BAR is mapped now: (base, is_io).
    mapped: [Option<(u64, bool)>; 6],
}

pub struct PciRoot {
    slots: Vec<Option<Slot>>,
    mmio: Bus,
    pio: Bus,
    next_mmio: u64,
    next_io: u64,
}

impl PciRoot {
    pub fn new(mmio: Bus, pio: Bus) -> PciRoot {
        let mut root = PciRoot {
            slots: (0..SLOTS).map(|_| None).collect(),
            mmio,
            pio,
            next_mmio: super::MMIO_WINDOW_START,
            next_io: super::IO_WINDOW_START,
        };
        root.slots[0] = Some(Slot {
            dev: Arc::new(Mutex::new(HostBridge::new())),
            mapped: [None; 6],
        });
        root
    }

    /// Adds a device in the next free slot, assigns its BARs and returns the slot number.
    pub fn add_device(&mut self, dev: Arc<Mutex<dyn PciDevice>>) -> Result<u8, Error> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Error::NoSlot)?;
        {
            let mut d = lock(&dev);
            for i in 0..6 {
                let Some(bar) = d.config().bar(i) else {
                    continue;
                };
                let (next, end) = match bar.kind {
                    BarKind::Io => (&mut self.next_io, super::IO_WINDOW_END),
                    _ => (&mut self.next_mmio, super::MMIO_WINDOW_END),
                };
                let base = next.next_multiple_of(bar.size);
                if base + bar.size > end {
                    return Err(Error::NoBarSpace(bar.size));
                }
                *next = base + bar.size;
                d.config_mut().set_bar_address(i, base);
            }
        }
        self.slots[slot] = Some(Slot {
            dev,
            mapped: [None; 6],
        });
        Ok(slot as u8)
    }

    pub fn config_read(&self, dev: u8, func: u8, reg: usize) -> u32 {
        match self.slot(dev, func) {
            Some(s) => lock(&s.dev).config().read(reg),
            None => u32::MAX,
        }
    }

    pub fn config_write(&mut self, dev: u8, func: u8, reg: usize, offset: usize, data: &[u8]) {
        let Some(s) = self.slot(dev, func) else {
            return;
        };
        let d = s.dev.clone();
        lock(&d).config_mut().write(reg, offset, data);
        if reg == 1 || ConfigSpace::is_bar_reg(reg) {
            self.update_mappings(dev as usize);
        }
        lock(&d).config_written(reg);
    }

    fn slot(&self, dev: u8, func: u8) -> Option<&Slot> {
        if func != 0 {
            return None;
        }
        self.slots.get(usize::from(dev))?.as_ref()
    }

    /// Makes the buses match the BARs and the command register's decode bits.
    fn update_mappings(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let (mmio, pio) = (&self.mmio, &self.pio);
        let d = lock(&s.dev);
        let cmd = d.config().command();
        for i in 0..6 {
            let Some(bar) = d.config().bar(i) else {
                continue;
            };
            let io = bar.kind == BarKind::Io;
            let decode =
                cmd & if io {
                    super::config::COMMAND_IO
                } else {
                    super::config::COMMAND_MEMORY
                } != 0;
            let addr = d.config().bar_address(i).unwrap_or(0);
            let want = (decode && addr != 0).then_some((addr, io));
            if s.mapped[i] == want {
                continue;
            }
            if let Some((old, was_io)) = s.mapped[i].take() {
                if was_io { pio } else { mmio }.remove(old);
            }
            if let Some((base, io)) = want {
                let window = Arc::new(Mutex::new(BarWindow {
                    dev: s.dev.clone(),
                    bar: i,
                }));
                match if io { pio } else { mmio }.insert(window, base, bar.size) {
                    Ok(()) => s.mapped[i] = want,
                    // A BAR moved over another device (mid-sizing, or a confused guest) decodes
                    // nothing until it moves somewhere free.
                    Err(e) => log::debug!("PCI slot {slot} BAR {i}: {e}"),
                }
            }
        }
    }
}

/// Forwards one BAR's bus accesses to its device.
struct BarWindow {
    dev: Arc<Mutex<dyn PciDevice>>,
    bar: usize,
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.dev).bar_read(self.bar, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.dev).bar_write(self.bar, offset, data);
    }
}

/// A host bridge at 00:00.0 so operating systems recognise the bus.
struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    fn new() -> HostBridge {
        HostBridge {
            config: ConfigSpace::new(PciIds {
                vendor: 0x8086,
                device: 0x29c0,
                class: 0x06,
                subclass: 0x00,
                prog_if: 0,
                revision: 0,
                subsystem_vendor: 0x1af4,
                subsystem: 0x1100,
            }),
        }
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

fn root_lock(root: &Mutex<PciRoot>) -> std::sync::MutexGuard<'_, PciRoot> {
    root.lock().unwrap_or_else(|e| e.into_inner())
}

/// Configuration mechanism #1: the address latch at 0xcf8 and the data window at 0xcfc.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> PciConfigIo {
        PciConfigIo { root, address: 0 }
    }

    /// (device, function, register) the latch selects, if enabled and on bus 0.
    fn target(&self) -> Option<(u8, u8, usize)> {
        let a = self.address;
        let enabled = a & 0x8000_0000 != 0;
        let bus = (a >> 16) & 0xff;
        (enabled && bus == 0).then_some((
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 7) as u8,
            ((a >> 2) & 0x3f) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 if data.len() == 4 => self.address,
            4..=7 => match self.target() {
                Some((dev, func, reg)) => {
                    root_lock(&self.root).config_read(dev, func, reg) >> ((offset - 4) * 8)
                }
                None => u32::MAX,
            },
            _ => u32::MAX,
        };
        let n = data.len().min(4);
        data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                self.address = u32::from_le_bytes(b);
            }
            4..=7 => {
                if let Some((dev, func, reg)) = self.target() {
                    let off = (offset - 4) as usize;
                    let n = data.len().min(4 - off);
                    root_lock(&self.root).config_write(dev, func, reg, off, &data[..n]);
                }
            }
            _ => {}
        }
    }
}

/// ECAM (memory-mapped configuration) for bus 0.
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> PciConfigMmio {
        PciConfigMmio { root }
    }
}

fn ecam_target(offset: u64) -> (u8, u8, usize, usize) {
    (
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 7) as u8,
        ((offset & 0xfff) / 4) as usize,
        (offset & 3) as usize,
    )
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (dev, func, reg, byte) = ecam_target(offset);
        let v = root_lock(&self.root).config_read(dev, func, reg) >> (byte * 8);
        let n = data.len().min(4 - byte);
        data.fill(0);
        data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (dev, func, reg, byte) = ecam_target(offset);
        let n = data.len().min(4 - byte);
        root_lock(&self.root).config_write(dev, func, reg, byte, &data[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{Bar, BarKind};

    struct Dummy {
        config: ConfigSpace,
        writes: Vec<(usize, u64, Vec<u8>)>,
    }

    impl Dummy {
        fn new() -> Dummy {
            let mut config = ConfigSpace::new(PciIds {
                vendor: 0x1234,
                device: 0x5678,
                class: 1,
                subclass: 8,
                prog_if: 2,
                revision: 0,
                subsystem_vendor: 0,
                subsystem: 0,
            });
            config
                .add_bar(
                    0,
                    Bar {
                        kind: BarKind::Mem64 {
                            prefetchable: false,
                        },
                        size: 0x4000,
                    },
                )
                .unwrap();
            config
                .add_bar(
                    2,
                    Bar {
                        kind: BarKind::Io,
                        size: 0x20,
                    },
                )
                .unwrap();
            Dummy {
                config,
                writes: vec![],
            }
        }
    }

    impl PciDevice for Dummy {
        fn config(&self) -> &ConfigSpace {
            &self.config
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.config
        }
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.fill(bar as u8 + offset as u8);
        }
        fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.writes.push((bar, offset, data.to_vec()));
        }
    }

    /// A root with one [`Dummy`] behind it, and the buses its BARs land on.
    struct Setup {
        root: Arc<Mutex<PciRoot>>,
        io: PciConfigIo,
        mmio: Bus,
        pio: Bus,
        dev: Arc<Mutex<Dummy>>,
        slot: u8,
    }

    fn setup() -> Setup {
        let (mmio, pio) = (Bus::new(), Bus::new());
        let root = Arc::new(Mutex::new(PciRoot::new(mmio.clone(), pio.clone())));
        let dev = Arc::new(Mutex::new(Dummy::new()));
        let slot = root.lock().unwrap().add_device(dev.clone()).unwrap();
        let io = PciConfigIo::new(root.clone());
        Setup {
            root,
            io,
            mmio,
            pio,
            dev,
            slot,
        }
    }

    fn cfg_read(io: &mut PciConfigIo, dev: u8, reg: u32) -> u32 {
        io.write(
            0,
            &(0x8000_0000 | u32::from(dev) << 11 | reg << 2).to_le_bytes(),
        );
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    fn cfg_write(io: &mut PciConfigIo, dev: u8, reg: u32, v: u32) {
        io.write(
            0,
            &(0x8000_0000 | u32::from(dev) << 11 | reg << 2).to_le_bytes(),
        );
        io.write(4, &v.to_le_bytes());
    }

    #[test]
    fn enumerates_host_bridge_and_device() {
        let Setup { mut io, .. } = setup();
        assert_eq!(cfg_read(&mut io, 0, 0), 0x29c0_8086);
        assert_eq!(cfg_read(&mut io, 1, 0), 0x5678_1234);
        assert_eq!(cfg_read(&mut io, 2, 0), u32::MAX);
        // Disabled latch and other buses read as nothing.
        io.write(0, &0x0000_0800u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), u32::MAX);
        io.write(0, &(0x8001_0800u32).to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), u32::MAX);
    }

    #[test]
    fn bars_are_preassigned_and_decode_only_when_enabled() {
        let Setup {
            mut io,
            mmio,
            pio,
            dev,
            slot,
            ..
        } = setup();
        let bar0 = u64::from(cfg_read(&mut io, slot, 4) & !0xf)
            | u64::from(cfg_read(&mut io, slot, 5)) << 32;
        assert_eq!(bar0, crate::pci::MMIO_WINDOW_START);
        let bar2 = u64::from(cfg_read(&mut io, slot, 6) & !0x3);
        assert_eq!(bar2, crate::pci::IO_WINDOW_START);
        assert!(
            !mmio.write(bar0 + 8, &[1]),
            "memory decode is off after reset"
        );
        cfg_write(&mut io, slot, 1, 0x3);
        assert!(mmio.write(bar0 + 8, &[1]));
        assert!(pio.write(bar2 + 4, &[2]));
        let mut d = [0u8; 1];
        mmio.read(bar0 + 3, &mut d);
        assert_eq!(d, [3]);
        assert_eq!(
            dev.lock().unwrap().writes,
            vec![(0, 8, vec![1]), (2, 4, vec![2])]
        );
        cfg_write(&mut io, slot, 1, 0x0);
        assert!(!mmio.write(bar0 + 8, &[1]));
    }

    #[test]
    fn moving_a_bar_moves_its_mapping() {
        let Setup {
            mut io, mmio, slot, ..
        } = setup();
        cfg_write(&mut io, slot, 1, 0x2);
        let old = crate::pci::MMIO_WINDOW_START;
        cfg_write(&mut io, slot, 4, 0xc800_0000);
        assert!(!mmio.write(old, &[1]));
        assert!(mmio.write(0xc800_0000, &[1]));
        // Sizing reads back the size while decoding is off, then the address is restored.
        cfg_write(&mut io, slot, 1, 0x0);
        cfg_write(&mut io, slot, 4, 0xffff_ffff);
        assert_eq!(cfg_read(&mut io, slot, 4), 0xffff_c004);
        cfg_write(&mut io, slot, 4, 0xc800_0000);
        cfg_write(&mut io, slot, 1, 0x2);
        assert!(mmio.write(0xc800_0000, &[1]));
    }

    #[test]
    fn ecam_reaches_the_same_config_space() {
        let Setup { root, mut io, .. } = setup();
        let mut ecam = PciConfigMmio::new(root);
        let mut d = [0u8; 2];
        ecam.read(1 << 15 | 2, &mut d);
        assert_eq!(u16::from_le_bytes(d), 0x5678);
        ecam.write(1 << 15 | 0x3c, &[0x0b]);
        assert_eq!(cfg_read(&mut io, 1, 15) & 0xff, 0x0b);
        let mut d4 = [0u8; 4];
        ecam.read(1 << 15 | 1 << 12, &mut d4);
        assert_eq!(u32::from_le_bytes(d4), u32::MAX, "function 1 is absent");
    }

    #[test]
    fn windows_run_out_cleanly() {
        let (mmio, pio) = (Bus::new(), Bus::new());
        let mut root = PciRoot::new(mmio, pio);
        let mut n = 0;
        let err = loop {
            match root.add_device(Arc::new(Mutex::new(Dummy::new()))) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(n, 31);
        assert_eq!(err, Error::NoSlot);
    }
}
