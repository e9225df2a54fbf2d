//! The 82540EM registers and descriptor bits the driver uses (Intel PCI/PCI-X Family of Gigabit
//! Ethernet Controllers Software Developer's Manual, section 13).

use crate::arch;

/// BAR0: 128 KiB of registers.
pub const BAR0_SIZE: u64 = 0x2_0000;

pub const CTRL: u64 = 0x0000;
pub const STATUS: u64 = 0x0008;
pub const EERD: u64 = 0x0014;
pub const ICR: u64 = 0x00c0;
pub const IMC: u64 = 0x00d8;
pub const RCTL: u64 = 0x0100;
pub const TCTL: u64 = 0x0400;
pub const TIPG: u64 = 0x0410;
pub const RDBAL: u64 = 0x2800;
pub const RDBAH: u64 = 0x2804;
pub const RDLEN: u64 = 0x2808;
pub const RDH: u64 = 0x2810;
pub const RDT: u64 = 0x2818;
pub const TDBAL: u64 = 0x3800;
pub const TDBAH: u64 = 0x3804;
pub const TDLEN: u64 = 0x3808;
pub const TDH: u64 = 0x3810;
pub const TDT: u64 = 0x3818;
/// Statistics the log shows: missed packets, no RX buffers, good packets in and out.
pub const MPC: u64 = 0x4010;
pub const GPRC: u64 = 0x4074;
pub const GPTC: u64 = 0x4080;
pub const RNBC: u64 = 0x40a0;
pub const MTA: u64 = 0x5200;
pub const MTA_ENTRIES: u64 = 128;
pub const RAL0: u64 = 0x5400;
pub const RAH0: u64 = 0x5404;

pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS_LU: u32 = 1 << 1;
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 4;
pub const EERD_ADDR_SHIFT: u32 = 8;
pub const EERD_DATA_SHIFT: u32 = 16;

/// Receiver on, broadcasts accepted, FCS stripped; BSIZE 0 (2048-byte buffers), RDMTS 1/2.
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_SECRC: u32 = 1 << 26;
/// Transmitter on, short frames padded, collision threshold 15, full-duplex collision
/// distance (the manual's recommended values).
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT: u32 = 0x0f << 4;
pub const TCTL_COLD_FD: u32 = 0x40 << 12;
/// IPGT 10, IPGR1 8, IPGR2 6: IEEE 802.3 copper values.
pub const TIPG_COPPER: u32 = 10 | 8 << 10 | 6 << 20;
pub const RAH_AV: u32 = 1 << 31;

/// Both rings use 16-byte descriptors; status is byte 12 of each.
pub const DESC_BYTES: u64 = 16;
pub const DESC_STATUS: u64 = 12;
pub const STA_DD: u8 = 1 << 0;
pub const RX_STA_EOP: u8 = 1 << 1;
/// Legacy TX command: end of packet, insert FCS, report status.
pub const TX_CMD_EOP: u8 = 1 << 0;
pub const TX_CMD_IFCS: u8 = 1 << 1;
pub const TX_CMD_RS: u8 = 1 << 3;

/// BAR0 accesses, each one an exit to the VMM.
#[derive(Clone, Copy)]
pub struct Regs(pub u64);

impl Regs {
    pub fn read(self, reg: u64) -> u32 {
        // SAFETY: BAR0 lies in the identity map (checked by `PciDevice::mmio_bar`) and `reg`
        // is one of the register offsets above, inside it.
        unsafe { arch::mmio_read32(self.0 + reg) }
    }

    pub fn write(self, reg: u64, value: u32) {
        // SAFETY: as in `read`.
        unsafe { arch::mmio_write32(self.0 + reg, value) }
    }
}
