//! A polled NVMe driver (NVMe 1.4): namespace 1 through one admin and one I/O queue pair,
//! created without interrupts. Only the I/O path ([`BlockQueue`]) runs in the measured loop;
//! everything else is set-up with bounded waits.

mod queue;
mod regs;

use iopath_mailbox::error;

use self::queue::{Command, Completion, QueuePair, QueueSetup, CQE_BYTES, SQE_BYTES};
use self::regs::*;
use crate::block::device::{BlockQueue, Geometry, Op, QueueConfig};
use crate::clock::{self, Deadline};
use crate::log;
use crate::pci::PciDevice;
use crate::scratch::Scratch;

/// Admin queue entries: the guest has one admin command outstanding at a time.
const ADMIN_ENTRIES: u16 = 64;
const IO_QID: u16 = 1;
const NSID: u32 = 1;
/// How long an admin command may take before the controller counts as dead.
const ADMIN_TIMEOUT_MS: u64 = 5_000;
/// The wait for CSTS.RDY when CAP.TO reads 0.
const MIN_READY_TIMEOUT_MS: u64 = 500;
/// The driver's own transfer limit: PRP1 plus one PRP list page. A list page holds 512
/// entries, so 513 pages would fit; 2 MiB is the round number below.
const MAX_TRANSFER: u64 = 512 * PAGE;
/// Largest supported logical block: 2^16 bytes.
const MAX_LBA_SHIFT: u32 = 16;

pub struct Nvme {
    regs: Regs,
    admin: QueuePair,
    io: QueuePair,
    next_admin_cid: u16,
    tsc_khz: u64,
    lba_shift: u32,
    geometry: Geometry,
    /// One PRP list page per slot, when an I/O can span more than two pages.
    prp_lists: Option<u64>,
    /// The first I/O command that failed, for the log.
    first_error: Option<Completion>,
}

/// Scratch memory the driver needs, allocated before the controller is touched.
struct Memory {
    admin_sq: u64,
    admin_cq: u64,
    identify: u64,
    io_sq: u64,
    io_cq: u64,
    prp_lists: Option<u64>,
}

impl Memory {
    fn alloc(scratch: &mut Scratch, entries: u16, cfg: &QueueConfig) -> Option<Memory> {
        let admin = u64::from(ADMIN_ENTRIES);
        let io = u64::from(entries);
        let prp_lists = if u64::from(cfg.io_bytes) > 2 * PAGE {
            Some(scratch.alloc(u64::from(cfg.depth) * PAGE, PAGE)?)
        } else {
            None
        };
        // Queues are page aligned (MPS = 0) and physically contiguous (CAP.CQR may demand it;
        // the identity map makes every allocation contiguous). CQs start zeroed: phase 0.
        Some(Memory {
            admin_sq: scratch.alloc_zeroed(admin * SQE_BYTES, PAGE)?,
            admin_cq: scratch.alloc_zeroed(admin * CQE_BYTES, PAGE)?,
            identify: scratch.alloc_zeroed(PAGE, PAGE)?,
            io_sq: scratch.alloc_zeroed(io * SQE_BYTES, PAGE)?,
            io_cq: scratch.alloc_zeroed(io * CQE_BYTES, PAGE)?,
            prp_lists,
        })
    }
}

impl Nvme {
    /// Resets and enables the controller behind `dev`, identifies namespace 1 and creates one
    /// I/O queue pair with `cfg.depth + 1` entries.
    pub fn open(dev: &PciDevice, scratch: &mut Scratch, cfg: &QueueConfig) -> Result<Nvme, u32> {
        dev.enable_mmio_dma();
        let mut regs = Regs::new(dev.mmio_bar(0, Regs::span(0, 4))?);
        let cap = regs.cap();
        if cap.0 == u64::MAX {
            log!(
                "nvme {}: CAP reads all ones: controller not responding",
                dev
            );
            return Err(error::DEVICE_ERROR);
        }
        if !cap.nvm() || cap.mps_min() != 0 {
            log!(
                "nvme {}: CAP {:#x}: need the NVM command set and 4 KiB pages",
                dev,
                cap.0
            );
            return Err(error::DEVICE_ERROR);
        }
        let stride = cap.doorbell_stride();
        dev.mmio_bar(0, Regs::span(IO_QID, stride))?;
        regs.set_doorbell_stride(stride);

        // One entry stays empty so that a full queue differs from an empty one.
        let entries = u32::from(cfg.depth) + 1;
        if entries > cap.max_entries() {
            log!(
                "nvme {}: queue_depth {} needs {} queue entries, the controller allows {}",
                dev,
                cfg.depth,
                entries,
                cap.max_entries()
            );
            return Err(error::BAD_PARAMETER);
        }
        let entries = u16::try_from(entries).map_err(|_| error::BAD_PARAMETER)?;
        if u64::from(cfg.io_bytes) > MAX_TRANSFER {
            log!(
                "nvme: block_size {} exceeds the driver's limit of {} bytes per command",
                cfg.io_bytes,
                MAX_TRANSFER
            );
            return Err(error::BAD_PARAMETER);
        }
        let Some(mem) = Memory::alloc(scratch, entries, cfg) else {
            log!("nvme: queues do not fit in scratch memory");
            return Err(error::BAD_PARAMETER);
        };

        let ready_ms = cap.timeout_ms().max(MIN_READY_TIMEOUT_MS);
        // Reset: a controller left enabled (by firmware, or a previous guest) must go through
        // CC.EN = 0 before its admin queue registers may change.
        regs.set_cc(0);
        wait_ready(&regs, false, ready_ms, cfg.tsc_khz)?;
        regs.set_admin_queues(ADMIN_ENTRIES, mem.admin_sq, mem.admin_cq);
        // Configure first, then enable, as Linux does: some controllers latch CC only while
        // disabled.
        regs.set_cc(CC_CONFIG);
        regs.set_cc(CC_CONFIG | CC_EN);
        wait_ready(&regs, true, ready_ms, cfg.tsc_khz)?;

        let mut nvme = Nvme {
            regs,
            admin: QueuePair::new(QueueSetup {
                sq: mem.admin_sq,
                cq: mem.admin_cq,
                entries: ADMIN_ENTRIES,
                sq_doorbell: regs.sq_doorbell(0),
                cq_doorbell: regs.cq_doorbell(0),
            }),
            io: QueuePair::new(QueueSetup {
                sq: mem.io_sq,
                cq: mem.io_cq,
                entries,
                sq_doorbell: regs.sq_doorbell(IO_QID),
                cq_doorbell: regs.cq_doorbell(IO_QID),
            }),
            next_admin_cid: 0,
            tsc_khz: cfg.tsc_khz,
            lba_shift: 0,
            geometry: Geometry {
                capacity_bytes: 0,
                lba_bytes: 0,
            },
            prp_lists: mem.prp_lists,
            first_error: None,
        };
        let mdts = nvme.identify_controller(mem.identify)?;
        if let Some(max) = mdts {
            if u64::from(cfg.io_bytes) > max {
                log!(
                    "nvme: block_size {} exceeds the controller's MDTS of {} bytes",
                    cfg.io_bytes,
                    max
                );
                return Err(error::BAD_PARAMETER);
            }
        }
        nvme.identify_namespace(mem.identify)?;
        nvme.create_io_queues(&mem, entries)?;
        let vs = nvme.regs.version();
        log!(
            "nvme {}: NVMe {}.{}, namespace {}: {} blocks of {} bytes, MDTS {} KiB, I/O queue {} entries",
            dev,
            vs >> 16,
            (vs >> 8) & 0xff,
            NSID,
            nvme.geometry.capacity_bytes >> nvme.lba_shift,
            nvme.geometry.lba_bytes,
            mdts.unwrap_or(0) / 1024,
            entries
        );
        Ok(nvme)
    }

    /// Runs one admin command to completion; returns its DW0.
    fn admin(&mut self, mut cmd: Command, what: &str) -> Result<u32, u32> {
        let cid = self.next_admin_cid;
        self.next_admin_cid = cid.wrapping_add(1);
        cmd.cdw0 |= u32::from(cid) << 16;
        self.admin.push(&cmd);
        self.admin.ring();
        let deadline = Deadline::after_ms(self.tsc_khz, ADMIN_TIMEOUT_MS);
        let mut got = None;
        while got.is_none() {
            // Only one command is outstanding; anything after its completion would be bogus
            // and shows up as a CID mismatch on the next command.
            self.admin.poll(|c| {
                got.get_or_insert(c);
            });
            if got.is_none() && deadline.passed() {
                log!(
                    "nvme: {} timed out after {} ms (CSTS {:#x})",
                    what,
                    ADMIN_TIMEOUT_MS,
                    self.regs.csts()
                );
                return Err(error::DEVICE_ERROR);
            }
        }
        let Some(c) = got else {
            return Err(error::DEVICE_ERROR);
        };
        if c.cid != cid {
            log!(
                "nvme: {}: completion carries CID {}, expected {}",
                what,
                c.cid,
                cid
            );
            return Err(error::DEVICE_ERROR);
        }
        if c.status != 0 {
            log!("nvme: {} failed: {}", what, StatusText(c.status));
            return Err(error::DEVICE_ERROR);
        }
        Ok(c.result)
    }

    /// Identify Controller; returns the transfer limit in bytes (`None`: no limit).
    fn identify_controller(&mut self, page: u64) -> Result<Option<u64>, u32> {
        let mut cmd = Command::new(ADMIN_IDENTIFY, 0, 0);
        cmd.prp1 = page;
        cmd.cdw10 = CNS_CONTROLLER;
        self.admin(cmd, "Identify Controller")?;
        // MDTS counts in CAP.MPSMIN pages, which `open` checked to be 4 KiB. 2^20 pages and
        // up are beyond any transfer the guest makes.
        Ok(match read_u8(page + ID_CTRL_MDTS) {
            0 => None,
            n if n >= 20 => None,
            n => Some(PAGE << n),
        })
    }

    /// Identify Namespace 1: its size and logical block size.
    fn identify_namespace(&mut self, page: u64) -> Result<(), u32> {
        let mut cmd = Command::new(ADMIN_IDENTIFY, 0, NSID);
        cmd.prp1 = page;
        cmd.cdw10 = CNS_NAMESPACE;
        self.admin(cmd, "Identify Namespace")?;
        let nsze = read_u64(page + ID_NS_NSZE);
        let nlbaf = read_u8(page + ID_NS_NLBAF);
        let flbas = read_u8(page + ID_NS_FLBAS);
        let format = flbas & 0xf;
        if format > nlbaf {
            log!(
                "nvme: namespace {} uses LBA format {} of {}",
                NSID,
                format,
                u32::from(nlbaf) + 1
            );
            return Err(error::DEVICE_ERROR);
        }
        let lbaf = read_u32(page + ID_NS_LBAF + 4 * u64::from(format));
        let metadata = lbaf & 0xffff;
        let lba_shift = (lbaf >> 16) & 0xff;
        if metadata != 0 || !(9..=MAX_LBA_SHIFT).contains(&lba_shift) {
            log!(
                "nvme: namespace {} LBA format {:#x} unsupported (need 2^9..2^{} byte blocks, no metadata)",
                NSID,
                lbaf,
                MAX_LBA_SHIFT
            );
            return Err(error::DEVICE_ERROR);
        }
        let capacity = nsze.checked_mul(1 << lba_shift).filter(|&c| c != 0);
        let Some(capacity_bytes) = capacity else {
            log!("nvme: namespace {} has a bad size: {} blocks", NSID, nsze);
            return Err(error::DEVICE_ERROR);
        };
        self.lba_shift = lba_shift;
        self.geometry = Geometry {
            capacity_bytes,
            lba_bytes: 1 << lba_shift,
        };
        Ok(())
    }

    /// One I/O queue pair (qid 1), polled: IEN = 0.
    fn create_io_queues(&mut self, mem: &Memory, entries: u16) -> Result<(), u32> {
        let size = u32::from(entries - 1) << 16;
        let qid = u32::from(IO_QID);
        // Number of Queues, both counts 0-based: one SQ and one CQ.
        let mut cmd = Command::new(ADMIN_SET_FEATURES, 0, 0);
        cmd.cdw10 = FEATURE_NUM_QUEUES;
        self.admin(cmd, "Set Features (Number of Queues)")?;

        let mut cmd = Command::new(ADMIN_CREATE_IO_CQ, 0, 0);
        cmd.prp1 = mem.io_cq;
        cmd.cdw10 = size | qid;
        // PC = 1 (contiguous), IEN = 0, IV = 0.
        cmd.cdw11 = 1;
        self.admin(cmd, "Create I/O Completion Queue")?;

        let mut cmd = Command::new(ADMIN_CREATE_IO_SQ, 0, 0);
        cmd.prp1 = mem.io_sq;
        cmd.cdw10 = size | qid;
        // CQID in bits 31:16, QPRIO = 0, PC = 1.
        cmd.cdw11 = qid << 16 | 1;
        self.admin(cmd, "Create I/O Submission Queue")?;
        Ok(())
    }

    /// PRP2 for a page-aligned buffer of `len` bytes on `slot`: nothing, the second page, or
    /// the slot's PRP list filled with every page after the first.
    fn prp2(&mut self, slot: u16, buf: u64, len: u32) -> u64 {
        let pages = u64::from(len).div_ceil(PAGE);
        match (pages, self.prp_lists) {
            (0..=1, _) => 0,
            (2, _) => buf + PAGE,
            (_, Some(lists)) => {
                let list = lists + u64::from(slot) * PAGE;
                for i in 1..pages {
                    // SAFETY: the slot's list page is scratch memory owned by this driver and
                    // holds 512 entries, more than MAX_TRANSFER needs; the device reads it only
                    // after the doorbell, and the slot's previous command has completed.
                    unsafe {
                        core::ptr::write_volatile((list + (i - 1) * 8) as *mut u64, buf + i * PAGE)
                    };
                }
                list
            }
            // `open` allocated lists whenever `io_bytes` spans more than two pages, and the
            // job never submits more than `io_bytes`.
            (_, None) => 0,
        }
    }
}

impl BlockQueue for Nvme {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, slot: u16, op: Op, offset: u64, len: u32, buf: u64) {
        let opcode = match op {
            Op::Read => IO_READ,
            Op::Write => IO_WRITE,
        };
        // The slot is the command identifier: at most one command per slot is outstanding.
        let mut cmd = Command::new(opcode, slot, NSID);
        let slba = offset >> self.lba_shift;
        cmd.cdw10 = slba as u32;
        cmd.cdw11 = (slba >> 32) as u32;
        // NLB, 0-based.
        cmd.cdw12 = (len >> self.lba_shift).saturating_sub(1);
        cmd.prp1 = buf;
        cmd.prp2 = self.prp2(slot, buf, len);
        self.io.push(&cmd);
    }

    fn ring(&mut self) {
        self.io.ring();
    }

    fn poll<F: FnMut(u16, bool)>(&mut self, mut done: F) -> usize {
        let first_error = &mut self.first_error;
        self.io.poll(|c| {
            if c.status != 0 && first_error.is_none() {
                *first_error = Some(c);
            }
            done(c.cid, c.status == 0)
        })
    }

    fn log_state(&mut self) {
        log!("nvme: CSTS {:#x}", self.regs.csts());
        if let Some(c) = self.first_error {
            log!(
                "nvme: first failed I/O: CID {}, {}",
                c.cid,
                StatusText(c.status)
            );
        }
    }
}

/// Waits for CSTS.RDY to equal `ready`. A fatal status counts only when enabling: a reset
/// (CC.EN = 0) is what clears it.
fn wait_ready(regs: &Regs, ready: bool, ms: u64, tsc_khz: u64) -> Result<(), u32> {
    let mut csts = 0;
    let settled = clock::wait_until(tsc_khz, ms, || {
        csts = regs.csts();
        csts == u32::MAX || (ready && csts & CSTS_CFS != 0) || (csts & CSTS_RDY != 0) == ready
    });
    if !settled || csts == u32::MAX || (ready && csts & CSTS_CFS != 0) {
        log!(
            "nvme: CSTS {:#x} after {} ms waiting for RDY={}",
            csts,
            ms,
            u8::from(ready)
        );
        return Err(error::DEVICE_ERROR);
    }
    Ok(())
}

/// A CQE status field for the log: SCT, SC and the Do Not Retry bit.
struct StatusText(u16);

impl core::fmt::Display for StatusText {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let s = self.0;
        write!(
            f,
            "status {:#06x} (SCT {}, SC {:#04x}{})",
            s,
            (s >> 8) & 0x7,
            s & 0xff,
            if s & (1 << 14) != 0 { ", DNR" } else { "" }
        )
    }
}

// The Identify data page is written by the device: read it with volatile loads. Offsets are
// constants from the specification, naturally aligned for their width.

fn read_u8(addr: u64) -> u8 {
    // SAFETY: `addr` is inside the driver's Identify page in scratch memory.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn read_u32(addr: u64) -> u32 {
    // SAFETY: as in `read_u8`; 4-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: as in `read_u8`; 8-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
