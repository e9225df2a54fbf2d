//! Controller registers in BAR0 (NVMe 1.4 section 3.1), command opcodes and Identify offsets.

use crate::arch;

/// Controller Capabilities (64-bit).
const CAP: u64 = 0x00;
/// Version.
const VS: u64 = 0x08;
/// Controller Configuration.
const CC: u64 = 0x14;
/// Controller Status.
const CSTS: u64 = 0x1c;
/// Admin Queue Attributes.
const AQA: u64 = 0x24;
/// Admin Submission / Completion Queue Base Address (64-bit).
const ASQ: u64 = 0x28;
const ACQ: u64 = 0x30;
/// SQ y tail doorbell at `DOORBELLS + 2y * stride`, CQ y head at `+ (2y + 1) * stride`.
const DOORBELLS: u64 = 0x1000;

pub const CC_EN: u32 = 1 << 0;
/// CSS = 0 (NVM), MPS = 0 (4 KiB pages), AMS = 0 (round robin), SHN = 0, and the entry sizes:
/// IOSQES = 6 (64-byte SQEs), IOCQES = 4 (16-byte CQEs).
pub const CC_CONFIG: u32 = (6 << 16) | (4 << 20);
pub const CSTS_RDY: u32 = 1 << 0;
/// Controller Fatal Status.
pub const CSTS_CFS: u32 = 1 << 1;

/// The memory page size CC.MPS = 0 selects; PRPs address pages of this size.
pub const PAGE: u64 = 4096;

/// Admin opcodes (figure 139).
pub const ADMIN_CREATE_IO_SQ: u8 = 0x01;
pub const ADMIN_CREATE_IO_CQ: u8 = 0x05;
pub const ADMIN_IDENTIFY: u8 = 0x06;
pub const ADMIN_SET_FEATURES: u8 = 0x09;
/// NVM I/O opcodes (figure 346).
pub const IO_WRITE: u8 = 0x01;
pub const IO_READ: u8 = 0x02;

/// Identify CNS values (CDW10 bits 7:0).
pub const CNS_NAMESPACE: u32 = 0x00;
pub const CNS_CONTROLLER: u32 = 0x01;
/// Set Features FID: Number of Queues.
pub const FEATURE_NUM_QUEUES: u32 = 0x07;

/// Identify Controller: Maximum Data Transfer Size, 2^n units of CAP.MPSMIN (byte 77).
pub const ID_CTRL_MDTS: u64 = 77;
/// Identify Namespace: size in blocks (bytes 7:0), number of LBA formats (byte 25, 0-based),
/// formatted LBA size (byte 26, bits 3:0 select the format, bit 4 = metadata inline), LBA
/// format table (byte 128 on, 4 bytes each: MS in bits 15:0, LBADS in bits 23:16).
pub const ID_NS_NSZE: u64 = 0;
pub const ID_NS_NLBAF: u64 = 25;
pub const ID_NS_FLBAS: u64 = 26;
pub const ID_NS_LBAF: u64 = 128;

/// CAP, decoded.
#[derive(Clone, Copy, Debug)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum Queue Entries Supported, as a count (the field is 0-based).
    pub fn max_entries(self) -> u32 {
        (self.0 & 0xffff) as u32 + 1
    }
    /// Worst-case time for CSTS.RDY to follow CC.EN (the field counts 500 ms units).
    pub fn timeout_ms(self) -> u64 {
        ((self.0 >> 24) & 0xff) * 500
    }
    /// Bytes between doorbells: 4 << DSTRD.
    pub fn doorbell_stride(self) -> u64 {
        4 << ((self.0 >> 32) & 0xf)
    }
    /// Whether the NVM command set is supported (CSS bit 0, CAP bit 37).
    pub fn nvm(self) -> bool {
        self.0 & (1 << 37) != 0
    }
    /// Minimum memory page size, as MPS: 2^(12 + MPSMIN).
    pub fn mps_min(self) -> u32 {
        ((self.0 >> 48) & 0xf) as u32
    }
}

/// BAR0, with the doorbell stride once CAP is known.
#[derive(Clone, Copy, Debug)]
pub struct Regs {
    base: u64,
    stride: u64,
}

impl Regs {
    pub fn new(base: u64) -> Regs {
        Regs { base, stride: 4 }
    }

    /// Bytes of BAR0 the guest touches when it uses queues up to `qid` with doorbell `stride`.
    pub fn span(qid: u16, stride: u64) -> u64 {
        DOORBELLS + (2 * u64::from(qid) + 2) * stride
    }

    pub fn set_doorbell_stride(&mut self, stride: u64) {
        self.stride = stride;
    }

    fn read32(&self, reg: u64) -> u32 {
        // SAFETY: BAR0 was checked to lie in the identity map (`PciDevice::mmio_bar`) and to
        // cover every register and doorbell used (`Regs::span`).
        unsafe { arch::mmio_read32(self.base + reg) }
    }

    fn write32(&self, reg: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { arch::mmio_write32(self.base + reg, value) }
    }

    /// 64-bit registers as two 32-bit accesses, low dword first (like Linux's lo_hi_readq),
    /// which every controller must accept.
    fn read64(&self, reg: u64) -> u64 {
        let lo = self.read32(reg);
        u64::from(self.read32(reg + 4)) << 32 | u64::from(lo)
    }

    fn write64(&self, reg: u64, value: u64) {
        self.write32(reg, value as u32);
        self.write32(reg + 4, (value >> 32) as u32);
    }

    pub fn cap(&self) -> Cap {
        Cap(self.read64(CAP))
    }
    pub fn version(&self) -> u32 {
        self.read32(VS)
    }
    pub fn set_cc(&self, value: u32) {
        self.write32(CC, value)
    }
    pub fn csts(&self) -> u32 {
        self.read32(CSTS)
    }

    /// Admin queue sizes (entries) and addresses; only valid while CC.EN = 0.
    pub fn set_admin_queues(&self, entries: u16, sq: u64, cq: u64) {
        let n = u32::from(entries - 1);
        self.write32(AQA, n << 16 | n);
        self.write64(ASQ, sq);
        self.write64(ACQ, cq);
    }

    /// Address of the SQ tail doorbell of queue `qid`.
    pub fn sq_doorbell(&self, qid: u16) -> u64 {
        self.base + DOORBELLS + 2 * u64::from(qid) * self.stride
    }

    /// Address of the CQ head doorbell of queue `qid`.
    pub fn cq_doorbell(&self, qid: u16) -> u64 {
        self.base + DOORBELLS + (2 * u64::from(qid) + 1) * self.stride
    }
}
