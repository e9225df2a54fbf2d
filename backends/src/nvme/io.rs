//! NVM command set I/O commands (NVMe 1.4 section 6): Read, Write, Flush, Write Zeroes and
//! Dataset Management, turned into engine requests.
//!
//! Every check that can fail a command (namespace, range, transfer size, read-only, the whole
//! PRP list) runs before the first request reaches the engine, so a refused command has touched
//! neither guest memory nor the disk.

use iommu::Access;

use super::controller::{Controller, Outcome};
use super::inflight::{self, Command};
use super::prp;
use super::spec::{io_opc, Sqe, Status, NSID, NSID_BROADCAST};
use crate::engine::{BlockOp, BlockRequest, CompletionError};

/// `Outcome::Later` once the command's requests are with the engine; an error status if it
/// was refused before any of them.
type IoResult = Result<Outcome, Status>;

/// Force Unit Access (CDW12 bit 30 of Read, Write and Write Zeroes).
const FUA: u32 = 1 << 30;
/// Dataset Management CDW11: Attribute - Deallocate.
const DSM_DEALLOCATE: u32 = 1 << 2;
/// Bytes of one Dataset Management range entry.
const DSM_RANGE_SIZE: usize = 16;

/// The NVMe status for an engine failure of a request doing `op`.
pub(super) fn engine_status(e: CompletionError, op: BlockOp) -> Status {
    match e {
        CompletionError::OutOfRange => Status::LBA_OUT_OF_RANGE,
        CompletionError::ReadOnly => Status::NAMESPACE_WRITE_PROTECTED,
        CompletionError::Unsupported => Status::INVALID_OPCODE,
        CompletionError::Unaligned(_) => Status::INVALID_FIELD,
        CompletionError::Io(libc::ENOSPC) => Status::CAPACITY_EXCEEDED,
        CompletionError::Short { .. } | CompletionError::Io(_) => match op {
            BlockOp::Read => Status::UNRECOVERED_READ_ERROR,
            _ => Status::WRITE_FAULT,
        },
    }
}

/// The LBA range of a Read, Write or Write Zeroes command: SLBA in CDW10-11, NLB (0-based) in
/// CDW12 bits 15:0.
fn lba_range(sqe: &Sqe) -> (u64, u64) {
    let slba = u64::from(sqe.cdw10) | (u64::from(sqe.cdw11) << 32);
    let nlb = u64::from(sqe.cdw12 & 0xffff) + 1;
    (slba, nlb)
}

impl Controller {
    /// Executes one I/O command fetched from submission queue `sqid`.
    pub(super) fn execute_io(&mut self, sqid: u16, cqid: u16, sqe: &Sqe) -> Outcome {
        let result = match sqe.opcode {
            io_opc::READ => {
                self.stats.reads += 1;
                self.read_write(sqid, cqid, sqe, BlockOp::Read)
            }
            io_opc::WRITE => {
                self.stats.writes += 1;
                self.read_write(sqid, cqid, sqe, BlockOp::Write)
            }
            io_opc::FLUSH => {
                self.stats.flushes += 1;
                self.flush(sqid, cqid, sqe)
            }
            io_opc::WRITE_ZEROES => {
                self.stats.write_zeroes += 1;
                self.write_zeroes(sqid, cqid, sqe)
            }
            io_opc::DATASET_MANAGEMENT => {
                self.stats.dataset_management += 1;
                self.dataset_management(sqid, cqid, sqe)
            }
            _ => {
                self.stats.other_io += 1;
                Err(Status::INVALID_OPCODE)
            }
        };
        result.unwrap_or_else(|status| Outcome::Done(status, 0))
    }

    /// Checks what every I/O command shares: no fused operation, PRPs, and the namespace.
    fn check_common(&self, sqe: &Sqe, broadcast_ok: bool) -> Result<(), Status> {
        if sqe.fuse != 0 || sqe.psdt != 0 {
            return Err(Status::INVALID_FIELD);
        }
        if sqe.nsid == NSID || (broadcast_ok && sqe.nsid == NSID_BROADCAST) {
            Ok(())
        } else {
            Err(Status::INVALID_NAMESPACE)
        }
    }

    fn check_writable(&self) -> Result<(), Status> {
        if self.ns.read_only {
            Err(Status::NAMESPACE_WRITE_PROTECTED)
        } else {
            Ok(())
        }
    }

    /// Registers a command that becomes `requests` engine requests, built by `build` from the
    /// engine tags, and hands them to the engine.
    fn start(
        &mut self,
        sqid: u16,
        cqid: u16,
        sqe: &Sqe,
        op: BlockOp,
        flush_after: bool,
        requests: Vec<(u64, u64, Vec<iommu::DmaSlice>)>,
    ) {
        let slot = self.inflight.insert(Command {
            sqid,
            cqid,
            cid: sqe.cid,
            op,
            remaining: requests.len() as u32,
            status: Status::SUCCESS,
            flush_after,
            bytes: 0,
        });
        for (part, (offset, len, segments)) in requests.into_iter().enumerate() {
            self.push_request(BlockRequest {
                op,
                offset,
                len,
                segments,
                // At most 256 parts (Dataset Management ranges).
                tag: inflight::tag(slot, part as u16),
            });
        }
    }

    fn read_write(&mut self, sqid: u16, cqid: u16, sqe: &Sqe, op: BlockOp) -> IoResult {
        self.check_common(sqe, false)?;
        let (slba, nlb) = lba_range(sqe);
        let (offset, len) = self
            .ns
            .byte_range(slba, nlb)
            .ok_or(Status::LBA_OUT_OF_RANGE)?;
        if len > self.cfg.max_transfer() {
            return Err(Status::INVALID_FIELD);
        }
        // A read makes the device write guest memory.
        let access = match op {
            BlockOp::Write => {
                self.check_writable()?;
                Access::Read
            }
            _ => Access::Write,
        };
        let segments = prp::walk(&self.dma, sqe.prp1, sqe.prp2, len, access)?;
        let flush_after = op == BlockOp::Write && self.needs_flush(sqe);
        self.start(
            sqid,
            cqid,
            sqe,
            op,
            flush_after,
            vec![(offset, len, segments)],
        );
        Ok(Outcome::Later)
    }

    /// Whether a write must be durable before it completes: FUA, or no volatile write cache.
    fn needs_flush(&self, sqe: &Sqe) -> bool {
        sqe.cdw12 & FUA != 0 || !self.features.write_cache
    }

    fn flush(&mut self, sqid: u16, cqid: u16, sqe: &Sqe) -> IoResult {
        self.check_common(sqe, true)?;
        self.start(
            sqid,
            cqid,
            sqe,
            BlockOp::Flush,
            false,
            vec![(0, 0, Vec::new())],
        );
        Ok(Outcome::Later)
    }

    fn write_zeroes(&mut self, sqid: u16, cqid: u16, sqe: &Sqe) -> IoResult {
        self.check_common(sqe, false)?;
        let (slba, nlb) = lba_range(sqe);
        let (offset, len) = self
            .ns
            .byte_range(slba, nlb)
            .ok_or(Status::LBA_OUT_OF_RANGE)?;
        self.check_writable()?;
        let flush_after = self.needs_flush(sqe);
        let requests = vec![(offset, len, Vec::new())];
        self.start(sqid, cqid, sqe, BlockOp::WriteZeroes, flush_after, requests);
        Ok(Outcome::Later)
    }

    /// Dataset Management: deallocate becomes one discard per non-empty range; the other
    /// attributes are hints and need nothing.
    fn dataset_management(&mut self, sqid: u16, cqid: u16, sqe: &Sqe) -> IoResult {
        self.check_common(sqe, false)?;
        if sqe.cdw11 & DSM_DEALLOCATE == 0 {
            return Ok(Outcome::Done(Status::SUCCESS, 0));
        }
        self.check_writable()?;
        let ranges = (sqe.cdw10 & 0xff) as usize + 1;
        let mut raw = vec![0u8; ranges * DSM_RANGE_SIZE];
        prp::copy_from_guest(&self.dma, sqe.prp1, sqe.prp2, &mut raw)?;
        let mut requests = Vec::with_capacity(ranges);
        for r in raw.chunks_exact(DSM_RANGE_SIZE) {
            let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            let slba = u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
            if nlb == 0 {
                continue;
            }
            let (offset, len) = self
                .ns
                .byte_range(slba, u64::from(nlb))
                .ok_or(Status::LBA_OUT_OF_RANGE)?;
            requests.push((offset, len, Vec::new()));
        }
        if requests.is_empty() {
            return Ok(Outcome::Done(Status::SUCCESS, 0));
        }
        self.start(sqid, cqid, sqe, BlockOp::Discard, false, requests);
        Ok(Outcome::Later)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MemEngine, MemOp};
    use crate::nvme::config::ControllerConfig;
    use crate::nvme::features::fid;
    use crate::nvme::spec::Cqe;
    use crate::nvme::testing::{cmd, pattern, Driver, GuestMem, DATA, LISTS, PAGE};

    /// An enabled controller over a 1 MiB, 512-byte-block device with I/O queue pair 1.
    fn driver() -> Driver {
        driver_with(MemEngine::new(1 << 20))
    }

    fn driver_with(engine: MemEngine) -> Driver {
        let mut d = Driver::with_engine(ControllerConfig::default(), engine);
        d.create_io_queues(1, 32, 32);
        d
    }

    fn ok(c: Cqe) {
        assert_eq!(c.status, Status::SUCCESS, "{c:?}");
    }

    #[test]
    fn write_then_read_round_trips_through_the_disk() {
        let mut d = driver();
        let data = pattern(7, 4096);
        d.mem.write(DATA, &data);
        ok(d.io(1, cmd::write(10, 8, DATA, 0)));
        assert_eq!(d.disk.read(10 * 512, 4096), data);
        ok(d.io(1, cmd::read(10, 8, DATA + PAGE, 0)));
        assert_eq!(d.mem.read(DATA + PAGE, 4096), data);
        let s = d.ctrl.stats();
        assert_eq!((s.reads, s.writes), (1, 1));
        assert_eq!((s.bytes_read, s.bytes_written), (4096, 4096));
    }

    #[test]
    fn prp1_with_offset_and_prp2_page_cover_a_page_boundary() {
        let mut d = driver();
        let data = pattern(3, 2048);
        d.disk.write(0, &data);
        // 2 KiB starting 1 KiB before the end of a page: the rest is in PRP2's page.
        let prp1 = DATA + PAGE - 1024;
        let prp2 = DATA + 4 * PAGE;
        ok(d.io(1, cmd::read(0, 4, prp1, prp2)));
        assert_eq!(d.mem.read(prp1, 1024), data[..1024]);
        assert_eq!(d.mem.read(prp2, 1024), data[1024..]);
    }

    #[test]
    fn prp_list_transfers_scatter_over_listed_pages() {
        let mut d = driver();
        // 16 KiB: PRP1 plus a list of three pages, deliberately out of order in memory.
        let pages = [DATA + 7 * PAGE, DATA + 2 * PAGE, DATA + 5 * PAGE];
        d.mem.write_u64s(LISTS, &pages);
        let data = pattern(9, 16384);
        d.mem.write(DATA, &data[..4096]);
        for (i, p) in pages.iter().enumerate() {
            d.mem.write(*p, &data[4096 * (i + 1)..4096 * (i + 2)]);
        }
        ok(d.io(1, cmd::write(64, 32, DATA, LISTS)));
        assert_eq!(d.disk.read(64 * 512, 16384), data);
    }

    #[test]
    fn out_of_range_lbas_fail_without_touching_the_disk() {
        let mut d = driver();
        let blocks = (1u64 << 20) / 512;
        assert_eq!(
            d.io(1, cmd::read(blocks, 1, DATA, 0)).status,
            Status::LBA_OUT_OF_RANGE
        );
        assert_eq!(
            d.io(1, cmd::write(blocks - 1, 2, DATA, 0)).status,
            Status::LBA_OUT_OF_RANGE
        );
        assert_eq!(
            d.io(1, cmd::write_zeroes(u64::MAX, 1)).status,
            Status::LBA_OUT_OF_RANGE
        );
        assert!(d.disk.ops().is_empty());
    }

    #[test]
    fn unmapped_buffer_is_a_transfer_error_and_no_access() {
        let mut d = driver();
        d.disk.write(0, &pattern(1, 512));
        let outside = (crate::nvme::testing::GUEST_PAGES as u64) * PAGE;
        let c = d.io(1, cmd::read(0, 1, outside, 0));
        assert_eq!(c.status, Status::DATA_TRANSFER_ERROR);
        // A list whose second entry is outside memory: nothing is transferred.
        d.mem.write_u64s(LISTS, &[DATA + PAGE, outside]);
        let c = d.io(1, cmd::read(0, 24, DATA, LISTS));
        assert_eq!(c.status, Status::DATA_TRANSFER_ERROR);
        assert!(d.disk.ops().is_empty());
        assert!(d.mem.read(DATA, 512).iter().all(|&b| b == 0));
    }

    #[test]
    fn read_into_read_only_memory_is_refused() {
        let ro = 0x100_0000;
        let mut d = Driver::with_engine(ControllerConfig::default(), MemEngine::new(1 << 20));
        d.mem = GuestMem::with_ro(crate::nvme::testing::GUEST_PAGES, ro, 2, 0xaa);
        d.ctrl.set_address_space(d.mem.arc());
        d.enable();
        d.create_io_queues(1, 8, 8);
        d.disk.write(0, &pattern(2, 512));
        assert_eq!(
            d.io(1, cmd::read(0, 1, ro, 0)).status,
            Status::DATA_TRANSFER_ERROR
        );
        assert!(d.mem.read(ro, 512).iter().all(|&b| b == 0xaa));
        // Writing from it is fine: the device only reads.
        ok(d.io(1, cmd::write(0, 1, ro, 0)));
        assert_eq!(d.disk.read(0, 512), vec![0xaa; 512]);
    }

    #[test]
    fn misaligned_prps_are_offset_errors() {
        let mut d = driver();
        assert_eq!(
            d.io(1, cmd::read(0, 1, DATA + 2, 0)).status,
            Status::PRP_OFFSET_INVALID
        );
        assert_eq!(
            d.io(1, cmd::read(0, 16, DATA, DATA + PAGE + 8)).status,
            Status::PRP_OFFSET_INVALID
        );
        d.mem.write_u64s(LISTS, &[DATA + PAGE + 512]);
        assert_eq!(
            d.io(1, cmd::read(0, 24, DATA, LISTS)).status,
            Status::PRP_OFFSET_INVALID
        );
        assert!(d.disk.ops().is_empty());
    }

    #[test]
    fn transfers_beyond_mdts_are_invalid() {
        let cfg = ControllerConfig {
            mdts_pages_shift: 1,
            ..ControllerConfig::default()
        };
        let mut d = Driver::with_engine(cfg, MemEngine::new(1 << 20));
        d.create_io_queues(1, 8, 8);
        d.mem.write_u64s(LISTS, &[DATA + PAGE, DATA + 2 * PAGE]);
        assert_eq!(
            d.io(1, cmd::read(0, 24, DATA, LISTS)).status,
            Status::INVALID_FIELD
        );
        ok(d.io(1, cmd::read(0, 16, DATA, DATA + PAGE)));
    }

    #[test]
    fn wrong_namespace_fused_and_sgl_commands_are_refused() {
        let mut d = driver();
        let mut sqe = cmd::read(0, 1, DATA, 0);
        sqe.nsid = 2;
        assert_eq!(d.io(1, sqe).status, Status::INVALID_NAMESPACE);
        sqe.nsid = NSID_BROADCAST;
        assert_eq!(d.io(1, sqe).status, Status::INVALID_NAMESPACE);
        let mut sqe = cmd::write(0, 1, DATA, 0);
        sqe.fuse = 1;
        assert_eq!(d.io(1, sqe).status, Status::INVALID_FIELD);
        let mut sqe = cmd::write(0, 1, DATA, 0);
        sqe.psdt = 1;
        assert_eq!(d.io(1, sqe).status, Status::INVALID_FIELD);
        let mut sqe = cmd::flush();
        sqe.nsid = 0;
        assert_eq!(d.io(1, sqe).status, Status::INVALID_NAMESPACE);
        assert!(d.disk.ops().is_empty());
    }

    #[test]
    fn unknown_io_opcode_is_invalid_and_counted() {
        let mut d = driver();
        let mut sqe = cmd::flush();
        sqe.opcode = 0x7f;
        let c = d.io(1, sqe);
        assert_eq!(c.status, Status::INVALID_OPCODE);
        assert!(c.status.dnr());
        assert_eq!(d.ctrl.stats().other_io, 1);
    }

    #[test]
    fn flush_reaches_the_engine_for_the_namespace_and_broadcast() {
        let mut d = driver();
        ok(d.io(1, cmd::flush()));
        let mut sqe = cmd::flush();
        sqe.nsid = NSID_BROADCAST;
        ok(d.io(1, sqe));
        let flushes = d
            .disk
            .ops()
            .iter()
            .filter(|o| o.op == BlockOp::Flush)
            .count();
        assert_eq!(flushes, 2);
    }

    #[test]
    fn fua_write_is_followed_by_a_flush_before_it_completes() {
        let mut d = driver();
        let mut sqe = cmd::write(0, 1, DATA, 0);
        sqe.cdw12 |= FUA;
        ok(d.io(1, sqe));
        let ops: Vec<BlockOp> = d.disk.ops().iter().map(|o| o.op).collect();
        assert_eq!(ops, [BlockOp::Write, BlockOp::Flush]);
    }

    #[test]
    fn disabling_the_write_cache_makes_every_write_durable() {
        let mut d = driver();
        ok(d.admin(cmd::set_features(fid::VOLATILE_WRITE_CACHE, 0)));
        ok(d.io(1, cmd::write(0, 1, DATA, 0)));
        ok(d.io(1, cmd::write_zeroes(1, 1)));
        let ops: Vec<BlockOp> = d.disk.ops().iter().map(|o| o.op).collect();
        assert_eq!(
            ops,
            [
                BlockOp::Write,
                BlockOp::Flush,
                BlockOp::WriteZeroes,
                BlockOp::Flush
            ]
        );
    }

    #[test]
    fn write_zeroes_clears_the_range() {
        let mut d = driver();
        d.disk.write(0, &pattern(5, 4096));
        ok(d.io(1, cmd::write_zeroes(2, 3)));
        let disk = d.disk.read(0, 4096);
        assert_eq!(disk[..1024], pattern(5, 4096)[..1024]);
        assert!(disk[1024..2560].iter().all(|&b| b == 0));
        assert_eq!(disk[2560..], pattern(5, 4096)[2560..]);
        assert_eq!(
            d.disk.ops(),
            [MemOp {
                op: BlockOp::WriteZeroes,
                offset: 1024,
                len: 1536,
                tag: d.disk.ops()[0].tag,
            }]
        );
    }

    #[test]
    fn deallocate_discards_each_non_empty_range() {
        let mut d = driver();
        d.disk.write(0, &pattern(5, 8192));
        d.mem.write(DATA, &cmd::ranges(&[(0, 2), (100, 0), (8, 4)]));
        ok(d.io(1, cmd::deallocate(3, DATA)));
        let ops: Vec<(BlockOp, u64, u64)> = d
            .disk
            .ops()
            .iter()
            .map(|o| (o.op, o.offset, o.len))
            .collect();
        assert_eq!(
            ops,
            [(BlockOp::Discard, 0, 1024), (BlockOp::Discard, 4096, 2048)]
        );
        assert!(d.disk.read(0, 1024).iter().all(|&b| b == 0));
        assert_eq!(d.disk.read(1024, 3072), pattern(5, 8192)[1024..4096]);
        assert_eq!(d.ctrl.stats().dataset_management, 1);
    }

    #[test]
    fn deallocate_with_a_bad_range_discards_nothing() {
        let mut d = driver();
        let blocks = (1u64 << 20) / 512;
        d.mem.write(DATA, &cmd::ranges(&[(0, 2), (blocks - 1, 2)]));
        assert_eq!(
            d.io(1, cmd::deallocate(2, DATA)).status,
            Status::LBA_OUT_OF_RANGE
        );
        let outside = (crate::nvme::testing::GUEST_PAGES as u64) * PAGE;
        assert_eq!(
            d.io(1, cmd::deallocate(1, outside)).status,
            Status::DATA_TRANSFER_ERROR
        );
        assert!(d.disk.ops().is_empty());
    }

    #[test]
    fn dataset_management_hints_without_deallocate_succeed_at_once() {
        let mut d = driver();
        let mut sqe = cmd::deallocate(1, DATA);
        sqe.cdw11 = 1; // Integral Dataset for Read only.
        ok(d.io(1, sqe));
        assert!(d.disk.ops().is_empty());
    }

    #[test]
    fn read_only_namespace_refuses_every_modification() {
        let mut d = driver_with(MemEngine::new(1 << 20).with_read_only(true));
        d.mem.write(DATA, &cmd::ranges(&[(0, 1)]));
        for sqe in [
            cmd::write(0, 1, DATA, 0),
            cmd::write_zeroes(0, 1),
            cmd::deallocate(1, DATA),
        ] {
            let c = d.io(1, sqe);
            assert_eq!(c.status, Status::NAMESPACE_WRITE_PROTECTED);
            assert!(c.status.dnr());
        }
        ok(d.io(1, cmd::read(0, 1, DATA, 0)));
        ok(d.io(1, cmd::flush()));
        assert!(d
            .disk
            .ops()
            .iter()
            .all(|o| matches!(o.op, BlockOp::Read | BlockOp::Flush)));
    }

    #[test]
    fn engine_errors_map_to_media_and_range_statuses() {
        let mut d = driver();
        d.disk.fail_next(CompletionError::Io(libc::EIO));
        let c = d.io(1, cmd::read(0, 1, DATA, 0));
        assert_eq!(c.status, Status::UNRECOVERED_READ_ERROR);
        assert!(!c.status.dnr(), "a media error may be retried");
        d.disk
            .fail_next(CompletionError::Short { done: 0, want: 512 });
        assert_eq!(
            d.io(1, cmd::write(0, 1, DATA, 0)).status,
            Status::WRITE_FAULT
        );
        d.disk.fail_next(CompletionError::Io(libc::ENOSPC));
        assert_eq!(
            d.io(1, cmd::write(0, 1, DATA, 0)).status,
            Status::CAPACITY_EXCEEDED
        );
        d.disk.fail_next(CompletionError::Unsupported);
        assert_eq!(
            d.io(1, cmd::write_zeroes(0, 1)).status,
            Status::INVALID_OPCODE
        );
        // The queue keeps working afterwards.
        ok(d.io(1, cmd::read(0, 1, DATA, 0)));
        assert_eq!(d.ctrl.stats().error_completions, 4);
    }

    #[test]
    fn failed_write_skips_the_fua_flush() {
        let mut d = driver();
        d.disk.fail_next(CompletionError::Io(libc::EIO));
        let mut sqe = cmd::write(0, 1, DATA, 0);
        sqe.cdw12 |= FUA;
        assert_eq!(d.io(1, sqe).status, Status::WRITE_FAULT);
        assert!(d.disk.ops().iter().all(|o| o.op != BlockOp::Flush));
    }

    #[test]
    fn a_deep_queue_completes_every_command_once() {
        let mut d = driver();
        for i in 0..16u64 {
            d.mem.write(DATA + i * PAGE, &pattern(i as u8, 4096));
        }
        let cids: Vec<u16> = (0..16u64)
            .map(|i| d.push(1, cmd::write(i * 8, 8, DATA + i * PAGE, 0)))
            .collect();
        d.gate().reverse = true;
        d.ring(1);
        d.ctrl.process_completions();
        let mut seen: Vec<u16> = std::iter::from_fn(|| d.reap(1))
            .map(|c| {
                assert_eq!(c.status, Status::SUCCESS);
                c.cid
            })
            .collect();
        d.ring_cq(1);
        seen.sort_unstable();
        let mut want = cids.clone();
        want.sort_unstable();
        assert_eq!(seen, want);
        for i in 0..16u64 {
            assert_eq!(d.disk.read(i * 4096, 4096), pattern(i as u8, 4096));
        }
    }

    /// splitmix64: a fixed stream of "guest" values.
    fn rng(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn random_io_commands_each_complete_once_and_the_queue_survives() {
        let mut d = driver();
        let mut st = 42u64;
        // Data pointers: inside the data area (some misaligned), at page 0, or unmapped.
        let addr = |st: &mut u64| match rng(st) % 4 {
            0 => DATA + (rng(st) % 64) * PAGE,
            1 => (DATA + (rng(st) % (64 * PAGE))) & !1,
            2 => rng(st) % PAGE,
            _ => rng(st),
        };
        let opcodes = [0x00, 0x01, 0x02, 0x08, 0x09, 0x04, 0x7f, 0xff];
        for i in 0..3000u64 {
            let mut sqe = Sqe {
                opcode: opcodes[(rng(&mut st) % opcodes.len() as u64) as usize],
                fuse: rng(&mut st).is_multiple_of(8) as u8,
                psdt: rng(&mut st).is_multiple_of(8) as u8,
                nsid: [NSID, NSID, NSID, 0, 2, NSID_BROADCAST][(rng(&mut st) % 6) as usize],
                prp1: addr(&mut st),
                prp2: addr(&mut st),
                cdw10: rng(&mut st) as u32 % 4096,
                cdw11: if i % 5 == 0 { rng(&mut st) as u32 } else { 0 },
                cdw12: (rng(&mut st) as u32) & 0xc000_003f,
                ..Default::default()
            };
            if sqe.opcode == io_opc::DATASET_MANAGEMENT {
                sqe.cdw10 &= 0xff;
            }
            let c = d.io(1, sqe);
            if c.status.is_success() {
                assert!(
                    matches!(sqe.opcode, 0x00 | 0x01 | 0x02 | 0x08 | 0x09),
                    "{sqe:?} succeeded"
                );
            }
        }
        assert_eq!(d.ctrl.stats().fatal_errors, 0);
        d.mem.write(DATA, &pattern(1, 512));
        ok(d.io(1, cmd::write(0, 1, DATA, 0)));
        ok(d.io(1, cmd::read(0, 1, DATA + PAGE, 0)));
        assert_eq!(d.mem.read(DATA + PAGE, 512), pattern(1, 512));
    }
}
