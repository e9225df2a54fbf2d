//! BAR0 register offsets and bits of the Intel 82540EM (PCI/PCI-X Family of Gigabit Ethernet
//! Controllers Software Developer's Manual, section 13), as far as the model uses them.

/// BAR0 is 128 KiB of registers.
pub const BAR0_SIZE: u64 = 0x2_0000;

pub const CTRL: u64 = 0x0000;
pub const STATUS: u64 = 0x0008;
pub const EECD: u64 = 0x0010;
pub const EERD: u64 = 0x0014;
pub const MDIC: u64 = 0x0020;
pub const ICR: u64 = 0x00c0;
pub const ICS: u64 = 0x00c8;
pub const IMS: u64 = 0x00d0;
pub const IMC: u64 = 0x00d8;
pub const RCTL: u64 = 0x0100;
pub const TCTL: u64 = 0x0400;
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
/// Multicast table array: 128 dwords, a 4096-bit hash filter.
pub const MTA: u64 = 0x5200;
/// Receive address pairs: RAL(n) at `RA + 8n`, RAH(n) at `RA + 8n + 4`, 16 of them.
pub const RA: u64 = 0x5400;
pub const RA_ENTRIES: u64 = 16;
/// Statistics: 64 read-to-clear dwords.
pub const STATS: u64 = 0x4000;
pub const STATS_END: u64 = 0x4100;
/// Packet buffer allocation: the reset value Linux reads to size its FIFOs.
pub const PBA: u64 = 0x1000;
pub const PBA_DEFAULT: u32 = 0x0010_0030;

pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const CTRL_VME: u32 = 1 << 30;
pub const CTRL_PHY_RST: u32 = 1 << 31;
/// Full duplex, link up, 1000 Mb/s, and the auto-detected speed to match.
pub const STATUS_FD: u32 = 1 << 0;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_SPEED_1000: u32 = 2 << 6;
pub const STATUS_ASDV_1000: u32 = 2 << 8;

/// Interrupt causes (ICR/ICS/IMS/IMC bits).
pub const ICR_TXDW: u32 = 1 << 0;
pub const ICR_TXQE: u32 = 1 << 1;
pub const ICR_LSC: u32 = 1 << 2;
pub const ICR_RXDMT0: u32 = 1 << 4;
pub const ICR_RXO: u32 = 1 << 6;
pub const ICR_RXT0: u32 = 1 << 7;
/// The causes the 82540EM defines; writes to the others are ignored.
pub const ICR_VALID: u32 = 0x0001_f6df;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_LPE: u32 = 1 << 5;
pub const RCTL_RDMTS_SHIFT: u32 = 8;
pub const RCTL_MO_SHIFT: u32 = 12;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_BSIZE_SHIFT: u32 = 16;
pub const RCTL_BSEX: u32 = 1 << 25;
pub const RCTL_SECRC: u32 = 1 << 26;

pub const TCTL_EN: u32 = 1 << 1;

/// RAH: address valid.
pub const RAH_AV: u32 = 1 << 31;

/// EERD: start a read; done; word address at bit 8, data at bit 16.
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 4;
pub const EERD_ADDR_SHIFT: u32 = 8;
pub const EERD_DATA_SHIFT: u32 = 16;

/// Ring lengths are multiples of 128 bytes (8 descriptors); the low bits read as zero.
pub const RING_LEN_MASK: u32 = 0x000f_ff80;
/// Head and tail registers are 16 bits wide.
pub const RING_INDEX_MASK: u32 = 0xffff;

/// Statistics the model counts, as offsets into the statistics block.
pub mod stat {
    pub const MPC: u64 = 0x4010;
    pub const PRC64: u64 = 0x405c;
    pub const GPRC: u64 = 0x4074;
    pub const BPRC: u64 = 0x4078;
    pub const MPRC: u64 = 0x407c;
    pub const GPTC: u64 = 0x4080;
    pub const GORCL: u64 = 0x4088;
    pub const GOTCL: u64 = 0x4090;
    pub const RNBC: u64 = 0x40a0;
    pub const ROC: u64 = 0x40ac;
    pub const TORL: u64 = 0x40c0;
    pub const TOTL: u64 = 0x40c8;
    pub const TPR: u64 = 0x40d0;
    pub const TPT: u64 = 0x40d4;
    pub const PTC64: u64 = 0x40d8;
    pub const MPTC: u64 = 0x40f0;
    pub const BPTC: u64 = 0x40f4;
}
