//! PCI on bus 0 through configuration mechanism #1 (ports CF8/CFC), found the way firmware
//! left it: the VMM assigns BAR addresses, so the guest reads them and never sizes or moves
//! them. Only 32-bit configuration accesses are used.

use core::fmt;

use iopath_mailbox::error;
use iopath_mailbox::layout::IDENTITY_MAP_SIZE;

use crate::{arch, log, uart};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const DEVICES: u8 = 32;
const FUNCTIONS: u8 = 8;

/// Vendor ID (bits 15:0) and device ID (31:16).
const ID: u8 = 0x00;
/// Command (bits 15:0) and status (31:16).
const COMMAND: u8 = 0x04;
/// Revision (7:0), programming interface (15:8), subclass (23:16), class (31:24).
const CLASS: u8 = 0x08;
/// Header type in bits 23:16; bit 7 of it marks a multi-function device.
const HEADER: u8 = 0x0c;
const BAR0: u8 = 0x10;
const BARS: u8 = 6;
const CAP_PTR: u8 = 0x34;
/// Capabilities start after the 64-byte standard header.
const CAP_MIN: u8 = 0x40;
/// A well-formed list has at most this many entries, so a longer walk is a loop.
const CAP_MAX: u8 = (256 - CAP_MIN as u16) as u8 / 4;

const CMD_MEMORY: u32 = 1 << 1;
const CMD_BUS_MASTER: u32 = 1 << 2;
/// The guest takes no interrupts; keep INTx quiet too.
const CMD_INTX_DISABLE: u32 = 1 << 10;
/// Status "capabilities list" bit, in the upper half of the COMMAND dword.
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);

/// What to look for.
#[derive(Clone, Copy, Debug)]
pub enum Match {
    Class {
        class: u8,
        subclass: u8,
        prog_if: u8,
    },
    Id {
        vendor: u16,
        device: u16,
    },
}

impl Match {
    pub const NVME: Match = Match::Class {
        class: 0x01,
        subclass: 0x08,
        prog_if: 0x02,
    };
    /// Intel 82540EM, what QEMU and iopath emulate as e1000.
    pub const E1000: Match = Match::Id {
        vendor: 0x8086,
        device: 0x100e,
    };
    /// Modern (virtio 1.0) virtio-blk: 0x1040 + device type 2.
    pub const VIRTIO_BLK: Match = Match::Id {
        vendor: 0x1af4,
        device: 0x1042,
    };
    /// Modern virtio-net: 0x1040 + device type 1.
    pub const VIRTIO_NET: Match = Match::Id {
        vendor: 0x1af4,
        device: 0x1041,
    };
}

/// A function on bus 0.
#[derive(Clone, Copy, Debug)]
pub struct PciDevice {
    device: u8,
    function: u8,
}

/// A capability: its ID and where in configuration space it starts (dword aligned).
#[derive(Clone, Copy, Debug)]
pub struct Capability {
    pub offset: u8,
    pub id: u8,
}

/// The first function on bus 0 that matches, with its identity logged.
pub fn find(m: Match) -> Option<PciDevice> {
    for device in 0..DEVICES {
        let f0 = PciDevice {
            device,
            function: 0,
        };
        if !f0.present() {
            continue;
        }
        let functions = if f0.read8(HEADER + 2) & 0x80 != 0 {
            FUNCTIONS
        } else {
            1
        };
        for function in 0..functions {
            let d = PciDevice { device, function };
            if d.present() && d.matches(m) {
                d.log_identity();
                return Some(d);
            }
        }
    }
    log!("pci: no device matches {:?} on bus 0", m);
    None
}

impl PciDevice {
    pub fn read32(&self, offset: u8) -> u32 {
        arch::outl(CONFIG_ADDRESS, self.address(offset));
        arch::inl(CONFIG_DATA)
    }

    pub fn write32(&self, offset: u8, value: u32) {
        arch::outl(CONFIG_ADDRESS, self.address(offset));
        arch::outl(CONFIG_DATA, value);
    }

    pub fn read8(&self, offset: u8) -> u8 {
        (self.read32(offset) >> ((offset & 3) * 8)) as u8
    }

    fn address(&self, offset: u8) -> u32 {
        (1 << 31)
            | u32::from(self.device) << 11
            | u32::from(self.function) << 8
            | u32::from(offset & 0xfc)
    }

    fn present(&self) -> bool {
        self.read32(ID) as u16 != 0xffff
    }

    fn matches(&self, m: Match) -> bool {
        match m {
            Match::Class {
                class,
                subclass,
                prog_if,
            } => self.read32(CLASS) >> 8 == u32::from_be_bytes([0, class, subclass, prog_if]),
            Match::Id { vendor, device } => {
                self.read32(ID) == u32::from(device) << 16 | u32::from(vendor)
            }
        }
    }

    /// Turns on memory decoding and DMA (bus mastering), and masks INTx.
    pub fn enable_mmio_dma(&self) {
        let command = self.read32(COMMAND) & 0xffff;
        // The status half is zero: its error bits are write-1-to-clear, so zero leaves them.
        self.write32(
            COMMAND,
            command | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE,
        );
    }

    /// The address of memory BAR `index`, checked to be assigned and to map `size` bytes
    /// inside the guest's identity map.
    pub fn mmio_bar(&self, index: u8, size: u64) -> Result<u64, u32> {
        if index >= BARS {
            log!("pci {}: no BAR{}", self, index);
            return Err(error::DEVICE_ERROR);
        }
        let lo = self.read32(BAR0 + 4 * index);
        if lo & 1 != 0 {
            log!("pci {}: BAR{} is an I/O BAR, expected memory", self, index);
            return Err(error::DEVICE_ERROR);
        }
        let base = u64::from(lo & !0xf);
        let addr = match (lo >> 1) & 3 {
            // 32-bit, or "below 1 MiB" (legacy, still 32 bits wide).
            0 | 1 => base,
            2 if index + 1 < BARS => base | u64::from(self.read32(BAR0 + 4 * (index + 1))) << 32,
            _ => {
                log!("pci {}: BAR{} has a bad type ({:#x})", self, index, lo);
                return Err(error::DEVICE_ERROR);
            }
        };
        if addr == 0 {
            log!("pci {}: BAR{} is unassigned", self, index);
            return Err(error::DEVICE_ERROR);
        }
        if addr
            .checked_add(size)
            .is_none_or(|end| end > IDENTITY_MAP_SIZE)
        {
            log!(
                "pci {}: BAR{} at {:#x} (+{:#x}) is outside the guest's identity map",
                self,
                index,
                addr,
                size
            );
            return Err(error::DEVICE_ERROR);
        }
        Ok(addr)
    }

    /// The capability list (empty when the device has none).
    pub fn capabilities(&self) -> Capabilities {
        let next = if self.read32(COMMAND) & STATUS_CAP_LIST != 0 {
            self.read8(CAP_PTR) & 0xfc
        } else {
            0
        };
        Capabilities {
            device: *self,
            next,
            budget: CAP_MAX,
        }
    }

    fn log_identity(&self) {
        let id = self.read32(ID);
        let class = self.read32(CLASS);
        uart::print(format_args!(
            "pci {}: {:04x}:{:04x} class {:06x}, capabilities",
            self,
            id & 0xffff,
            id >> 16,
            class >> 8
        ));
        for cap in self.capabilities() {
            uart::print(format_args!(" {:#04x}@{:#04x}", cap.id, cap.offset));
        }
        log!("");
    }
}

impl fmt::Display for PciDevice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "00:{:02x}.{}", self.device, self.function)
    }
}

/// Walks a capability list; stops at its end, at a pointer into the header, or after more
/// entries than fit in configuration space (a looping list from a broken device).
pub struct Capabilities {
    device: PciDevice,
    next: u8,
    budget: u8,
}

impl Iterator for Capabilities {
    type Item = Capability;

    fn next(&mut self) -> Option<Capability> {
        if self.next < CAP_MIN || self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        let offset = self.next;
        let header = self.device.read32(offset);
        self.next = (header >> 8) as u8 & 0xfc;
        Some(Capability {
            offset,
            id: header as u8,
        })
    }
}
