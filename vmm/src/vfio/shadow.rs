//! The guest's view of a passthrough function's configuration space, built once from the
//! device's own: its identity (IDs, class, revision, subsystem), its BARs (types and sizes,
//! placed by our PCI root and sized by the VMM's register model), a command register and an
//! MSI-X capability that the VMM emulates. No interrupt pin (INTx is off).
//!
//! Deliberately a synthesized space, not a window onto the device's: the guest never writes
//! the device's BAR registers, MSI-X control or anything it could use to escape; the command
//! register is forwarded (see [`super::device`]). Other capabilities (power management, PCIe,
//! MSI) and the extended space are hidden: drivers that poll or use MSI-X do not need them.

use std::ops::Range;

use super::transport::{self, Transport, BAR_REGIONS};
use crate::pci::config::{self as pci_config, ConfigSpace};
use crate::pci::msix::{self, Msix};
use crate::pci::{Bar, BarKind, PciIds};

/// Bytes of the device's configuration space read: the type-0 header and capabilities.
const HEADER_BYTES: usize = 256;
const STATUS_CAP_LIST: u16 = 1 << 4;
const CAP_PTR: usize = 0x34;
const BAR0: usize = 0x10;
/// Capabilities followed before giving up on a looping list.
const MAX_CAPS: usize = 48;
/// BARs larger than this are refused (they would not fit the PCI window anyway).
const MAX_BAR: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the device's configuration space failed")]
    Read(#[source] transport::Error),
    #[error("header type {0:#x}: only type-0 functions (not bridges) can be passed through")]
    HeaderType(u8),
    #[error("BAR {index}: a {size:#x}-byte region cannot be a BAR")]
    BarSize { index: usize, size: u64 },
    #[error("building the guest's configuration space failed")]
    Config(#[source] pci_config::Error),
}

/// Where the MSI-X table and PBA live, and the capability in the guest's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Offset of the capability in the shadow configuration space.
    pub cap: usize,
    pub vectors: u16,
    pub table_bar: usize,
    pub table_offset: u64,
    pub pba_bar: usize,
    pub pba_offset: u64,
}

impl MsixLayout {
    pub fn table(&self) -> Range<u64> {
        self.table_offset..self.table_offset + 16 * u64::from(self.vectors)
    }

    pub fn pba(&self) -> Range<u64> {
        self.pba_offset..self.pba_offset + 8 * u64::from(self.vectors).div_ceil(64)
    }

    /// The ranges of BAR `bar` the VMM must trap (table and PBA).
    pub fn trapped_in(&self, bar: usize) -> Vec<Range<u64>> {
        let mut r = Vec::new();
        if self.table_bar == bar {
            r.push(self.table());
        }
        if self.pba_bar == bar {
            r.push(self.pba());
        }
        r
    }
}

/// A BAR as the guest sees it, and the region behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    pub kind: BarKind,
    /// The region's size; the BAR may be larger (a power of two), the tail reads as ones.
    pub region_size: u64,
}

pub struct Shadow {
    pub config: ConfigSpace,
    pub bars: [Option<BarInfo>; 6],
    pub msix: Option<MsixLayout>,
}

/// Reads the device's header and builds the guest's configuration space from it.
pub fn probe(t: &mut dyn Transport) -> Result<Shadow, Error> {
    let mut raw = [0u8; HEADER_BYTES];
    let n = t
        .region(transport::CONFIG_REGION)
        .map_or(HEADER_BYTES as u64, |r| r.size)
        .min(HEADER_BYTES as u64) as usize;
    t.config_read(0, &mut raw[..n]).map_err(Error::Read)?;
    let header_type = raw[0x0e] & 0x7f;
    if header_type != 0 {
        return Err(Error::HeaderType(header_type));
    }
    let ids = PciIds {
        vendor: u16_at(&raw, 0x00),
        device: u16_at(&raw, 0x02),
        revision: raw[0x08],
        prog_if: raw[0x09],
        subclass: raw[0x0a],
        class: raw[0x0b],
        subsystem_vendor: u16_at(&raw, 0x2c),
        subsystem: u16_at(&raw, 0x2e),
    };
    let mut config = ConfigSpace::new(ids);
    let bars = bars(t, &raw)?;
    for (i, bar) in bars.iter().enumerate() {
        if let Some(b) = bar {
            let size = bar_size(b);
            config
                .add_bar(i, Bar { kind: b.kind, size })
                .map_err(Error::Config)?;
        }
    }
    let msix = match find_msix(&raw, &bars) {
        Some(mut layout) => {
            let m = Msix::new(layout.vectors);
            let (body, writable) = m.capability(
                layout.table_bar as u8,
                layout.table_offset as u32,
                layout.pba_bar as u8,
                layout.pba_offset as u32,
            );
            layout.cap = config
                .add_capability(&body, &writable)
                .map_err(Error::Config)?;
            Some(layout)
        }
        None => None,
    };
    Ok(Shadow { config, bars, msix })
}

/// The BAR size the guest sees: the region rounded up to a power of two, at least 16 bytes
/// (the smallest BAR the register model takes), at least a page for memory (so BARs never
/// share a page and each can be mapped on its own).
pub fn bar_size(b: &BarInfo) -> u64 {
    let min = if b.kind == BarKind::Io { 16 } else { 4096 };
    b.region_size.next_power_of_two().max(min)
}

/// Each region that exists, typed by the device's BAR register (I/O, 32- or 64-bit memory).
fn bars(t: &dyn Transport, raw: &[u8]) -> Result<[Option<BarInfo>; 6], Error> {
    let mut bars = [None; 6];
    let mut i = 0;
    while i < BAR_REGIONS as usize {
        let reg = u32_at(raw, BAR0 + 4 * i);
        let kind = if reg & 1 != 0 {
            BarKind::Io
        } else if (reg >> 1) & 3 == 2 && i < 5 {
            BarKind::Mem64 {
                prefetchable: reg & 8 != 0,
            }
        } else {
            BarKind::Mem32
        };
        let wide = matches!(kind, BarKind::Mem64 { .. });
        if let Some(region) = t.region(i as u32) {
            let size = region.size;
            let limit = match kind {
                BarKind::Io => 1 << 16,
                BarKind::Mem32 => 1 << 31,
                BarKind::Mem64 { .. } => MAX_BAR,
            };
            if size > limit {
                return Err(Error::BarSize { index: i, size });
            }
            bars[i] = Some(BarInfo {
                kind,
                region_size: size,
            });
        }
        i += if wide { 2 } else { 1 };
    }
    Ok(bars)
}

/// The device's MSI-X capability, if it has a sane one: table and PBA inside memory BARs.
fn find_msix(raw: &[u8], bars: &[Option<BarInfo>; 6]) -> Option<MsixLayout> {
    if u16_at(raw, 0x06) & STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut at = usize::from(raw[CAP_PTR] & 0xfc);
    for _ in 0..MAX_CAPS {
        if at < 0x40 || at + 12 > raw.len() {
            return None;
        }
        if raw[at] == msix::CAP_ID {
            return layout(raw, at, bars);
        }
        at = usize::from(raw[at + 1] & 0xfc);
    }
    None
}

fn layout(raw: &[u8], at: usize, bars: &[Option<BarInfo>; 6]) -> Option<MsixLayout> {
    let ctrl = u16_at(raw, at + 2);
    let table = u32_at(raw, at + 4);
    let pba = u32_at(raw, at + 8);
    let l = MsixLayout {
        cap: 0,
        vectors: (ctrl & 0x7ff) + 1,
        table_bar: (table & 7) as usize,
        table_offset: u64::from(table & !7),
        pba_bar: (pba & 7) as usize,
        pba_offset: u64::from(pba & !7),
    };
    let inside = |bar: usize, r: Range<u64>| {
        bars.get(bar)
            .copied()
            .flatten()
            .is_some_and(|b| b.kind != BarKind::Io && r.end <= b.region_size)
    };
    if inside(l.table_bar, l.table()) && inside(l.pba_bar, l.pba()) {
        Some(l)
    } else {
        log::warn!(
            "passthrough: ignoring an MSI-X capability whose table or PBA is outside its BAR"
        );
        None
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::testing::FakeDevice;

    #[test]
    fn identity_bars_and_msix_come_from_the_device() {
        let mut dev = FakeDevice::nvme();
        let s = probe(&mut dev).unwrap();
        let c = &s.config;
        assert_eq!(c.read(0), 0x0010_1b36, "vendor and device");
        assert_eq!(c.read(2), 0x0108_0202, "class 01:08:02, revision 2");
        assert_eq!(c.read(11), 0x1100_1af4, "subsystem");
        assert_eq!(c.read(15) >> 8 & 0xff, 0, "no INTx pin");
        assert_eq!(c.bar(0).map(|b| b.size), Some(0x4000));
        assert_eq!(c.bar(4).map(|b| b.size), Some(0x2000));
        assert!(c.bar(1).is_none() && c.bar(2).is_none());
        let m = s.msix.expect("MSI-X");
        assert_eq!((m.vectors, m.table_bar, m.pba_bar), (65, 4, 4));
        assert_eq!((m.table(), m.pba()), (0..65 * 16, 0x1000..0x1010));
        // The guest's capability list holds only the emulated MSI-X capability.
        assert_eq!(c.read(0x34 / 4) & 0xff, m.cap as u32);
        let cap = c.read(m.cap / 4);
        assert_eq!(cap & 0xff, 0x11);
        assert_eq!(cap >> 8 & 0xff, 0, "the last capability");
        assert_eq!(cap >> 16 & 0x7ff, 64);
        assert_eq!(c.read(m.cap / 4 + 1), 4, "table in BAR4 at 0");
        assert_eq!(c.read(m.cap / 4 + 2), 0x1004, "PBA in BAR4 at 0x1000");
    }

    #[test]
    fn bar_sizing_is_answered_from_the_shadow() {
        let mut dev = FakeDevice::nvme();
        let mut s = probe(&mut dev).unwrap();
        s.config.write(4, 0, &[0xff; 4]);
        s.config.write(5, 0, &[0xff; 4]);
        assert_eq!(s.config.read(4), 0xffff_c004, "16 KiB, 64-bit");
        assert_eq!(s.config.read(5), 0xffff_ffff);
        assert!(
            dev.config_writes.is_empty(),
            "sizing never reaches the device"
        );
    }

    #[test]
    fn small_and_odd_regions_round_up_and_huge_ones_are_refused() {
        let io = BarInfo {
            kind: BarKind::Io,
            region_size: 8,
        };
        assert_eq!(bar_size(&io), 16);
        let mem = BarInfo {
            kind: BarKind::Mem32,
            region_size: 0x1800,
        };
        assert_eq!(bar_size(&mem), 0x2000);
        let tiny = BarInfo {
            kind: BarKind::Mem32,
            region_size: 0x100,
        };
        assert_eq!(bar_size(&tiny), 0x1000, "memory BARs take whole pages");
        let mut dev = FakeDevice::nvme();
        dev.regions[0].size = 1 << 41;
        assert!(matches!(
            probe(&mut dev),
            Err(Error::BarSize { index: 0, .. })
        ));
    }

    #[test]
    fn bridges_are_refused() {
        let mut dev = FakeDevice::nvme();
        dev.config[0x0e] = 0x01;
        assert!(matches!(probe(&mut dev), Err(Error::HeaderType(1))));
    }

    #[test]
    fn a_broken_msix_capability_is_ignored() {
        let mut dev = FakeDevice::nvme();
        // Table in BAR 2, which does not exist.
        dev.config[0x44] = 2;
        let s = probe(&mut dev).unwrap();
        assert!(s.msix.is_none());
        assert_eq!(s.config.read(0x34 / 4) & 0xff, 0, "no capabilities");
        // A capability list that loops.
        let mut dev = FakeDevice::nvme();
        dev.config[0x41] = 0x40;
        dev.config[0x40] = 0x01;
        assert!(probe(&mut dev).unwrap().msix.is_none());
    }
}
