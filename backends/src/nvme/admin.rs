//! Admin commands (NVMe 1.4 section 5).

use iommu::Access;

use super::controller::{Controller, Outcome};
use super::identify::{self, cns, IDENTIFY_SIZE};
use super::logs::{self, lid};
use super::prp;
use super::queue::{CompQueue, SubQueue};
use super::regs::PAGE_SIZE;
use super::spec::{
    admin_opc, Sqe, Status, CQES_LOG2, CQE_SIZE, NSID, NSID_BROADCAST, SQES_LOG2, SQE_SIZE,
};

type AdminResult = Result<u32, Status>;

impl Controller {
    /// Executes one admin command.
    pub(super) fn execute_admin(&mut self, sqe: &Sqe) -> Outcome {
        self.stats.admin_commands += 1;
        if sqe.fuse != 0 || sqe.psdt != 0 {
            return Outcome::from(Err(Status::INVALID_FIELD));
        }
        let result = match sqe.opcode {
            admin_opc::DELETE_IO_SQ => self.delete_io_sq(sqe),
            admin_opc::CREATE_IO_SQ => self.create_io_sq(sqe),
            admin_opc::GET_LOG_PAGE => self.get_log_page(sqe),
            admin_opc::DELETE_IO_CQ => self.delete_io_cq(sqe),
            admin_opc::CREATE_IO_CQ => self.create_io_cq(sqe),
            admin_opc::IDENTIFY => self.identify(sqe),
            // Nothing is ever aborted: DW0 bit 0 = 1, "command not aborted".
            admin_opc::ABORT => Ok(1),
            admin_opc::SET_FEATURES => {
                self.features
                    .set(sqe.cdw10, sqe.cdw11, self.io_queues_created)
            }
            admin_opc::GET_FEATURES => self.features.get(sqe.cdw10, sqe.cdw11),
            admin_opc::ASYNC_EVENT_REQUEST => match self.aer.request(sqe.cid) {
                Ok(Some(dw0)) => Ok(dw0),
                Ok(None) => return Outcome::Later,
                Err(status) => Err(status),
            },
            admin_opc::KEEP_ALIVE => Ok(0),
            _ => Err(Status::INVALID_OPCODE),
        };
        Outcome::from(result)
    }

    /// Copies `data` to the command's data buffer, zero-filling it to `total` bytes.
    fn send(&self, sqe: &Sqe, data: &[u8], total: u64) -> AdminResult {
        prp::copy_to_guest(&self.dma, sqe.prp1, sqe.prp2, data, total)?;
        Ok(0)
    }

    fn identify(&self, sqe: &Sqe) -> AdminResult {
        let data = match sqe.cdw10 as u8 {
            cns::NAMESPACE if sqe.nsid == NSID => identify::namespace(&self.ns, &self.nguid),
            cns::CONTROLLER => identify::controller(&self.cfg),
            cns::ACTIVE_NAMESPACES if sqe.nsid < NSID_BROADCAST - 1 => {
                identify::active_namespaces(sqe.nsid)
            }
            cns::NS_DESCRIPTORS if sqe.nsid == NSID => identify::ns_descriptors(&self.nguid),
            cns::NAMESPACE | cns::ACTIVE_NAMESPACES | cns::NS_DESCRIPTORS => {
                return Err(Status::INVALID_NAMESPACE)
            }
            _ => return Err(Status::INVALID_FIELD),
        };
        self.send(sqe, &data, IDENTIFY_SIZE as u64)
    }

    /// Checks the parts of Create I/O SQ/CQ that are the same for both; returns the entries.
    fn check_new_queue(
        &self,
        sqe: &Sqe,
        entry_size: usize,
        entry_log2: u32,
        access: Access,
    ) -> Result<u32, Status> {
        let entries = (sqe.cdw10 >> 16) + 1;
        if entries < 2 || entries > u32::from(self.cfg.max_queue_entries) {
            return Err(Status::INVALID_QUEUE_SIZE);
        }
        // Physically contiguous queues only (CAP.CQR = 1).
        if sqe.cdw11 & 1 == 0 {
            return Err(Status::INVALID_FIELD);
        }
        let configured = match access {
            Access::Read => self.cc().iosqes(),
            Access::Write => self.cc().iocqes(),
        };
        if configured != entry_log2 {
            return Err(Status::INVALID_FIELD);
        }
        if sqe.prp1 & (PAGE_SIZE - 1) != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        // entries <= 65536, so this is at most 4 MiB.
        let bytes = entries as usize * entry_size;
        self.dma
            .translate(sqe.prp1, bytes, access)
            .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        Ok(entries)
    }

    fn create_io_cq(&mut self, sqe: &Sqe) -> AdminResult {
        let qid = sqe.cdw10 as u16;
        if qid == 0 || qid > self.features.cq_granted || self.cq_exists(qid) {
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        let ien = sqe.cdw11 & 0x2 != 0;
        let vector = (sqe.cdw11 >> 16) as u16;
        if ien && vector >= self.cfg.interrupt_vectors {
            return Err(Status::INVALID_INTERRUPT_VECTOR);
        }
        let entries = self.check_new_queue(sqe, CQE_SIZE, u32::from(CQES_LOG2), Access::Write)?;
        let slot = self
            .cqs
            .get_mut(usize::from(qid))
            .ok_or(Status::INVALID_QUEUE_IDENTIFIER)?;
        *slot = Some(CompQueue::new(sqe.prp1, entries, ien, vector));
        self.io_queues_created = true;
        Ok(0)
    }

    fn create_io_sq(&mut self, sqe: &Sqe) -> AdminResult {
        let qid = sqe.cdw10 as u16;
        if qid == 0 || qid > self.features.sq_granted || self.sq_exists(qid) {
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        let cqid = (sqe.cdw11 >> 16) as u16;
        if cqid == 0 || !self.cq_exists(cqid) {
            return Err(Status::COMPLETION_QUEUE_INVALID);
        }
        // QPRIO (bits 2:1) is ignored: round robin arbitration only.
        let entries = self.check_new_queue(sqe, SQE_SIZE, u32::from(SQES_LOG2), Access::Read)?;
        let slot = self
            .sqs
            .get_mut(usize::from(qid))
            .ok_or(Status::INVALID_QUEUE_IDENTIFIER)?;
        *slot = Some(SubQueue::new(sqe.prp1, entries, cqid));
        if let Some(cq) = self.cq_mut(cqid) {
            cq.sqs += 1;
        }
        self.io_queues_created = true;
        Ok(0)
    }

    fn delete_io_sq(&mut self, sqe: &Sqe) -> AdminResult {
        let qid = sqe.cdw10 as u16;
        if qid == 0 || !self.sq_exists(qid) {
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        self.drain_sq(qid);
        let removed = self.sqs.get_mut(usize::from(qid)).and_then(Option::take);
        if let Some(cq) = removed.and_then(|sq| self.cq_mut(sq.cqid)) {
            cq.sqs = cq.sqs.saturating_sub(1);
        }
        Ok(0)
    }

    fn delete_io_cq(&mut self, sqe: &Sqe) -> AdminResult {
        let qid = sqe.cdw10 as u16;
        if qid == 0 {
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        match self.cq_mut(qid) {
            None => Err(Status::INVALID_QUEUE_IDENTIFIER),
            Some(cq) if cq.sqs > 0 => Err(Status::INVALID_QUEUE_DELETION),
            Some(_) => {
                if let Some(slot) = self.cqs.get_mut(usize::from(qid)) {
                    *slot = None;
                }
                Ok(0)
            }
        }
    }

    fn get_log_page(&mut self, sqe: &Sqe) -> AdminResult {
        let id = sqe.cdw10 as u8;
        let retain_event = sqe.cdw10 & (1 << 15) != 0;
        let dwords = ((u64::from(sqe.cdw11 & 0xffff) << 16) | u64::from(sqe.cdw10 >> 16)) + 1;
        let len = dwords * 4;
        let offset = u64::from(sqe.cdw12) | (u64::from(sqe.cdw13) << 32);
        let page =
            logs::page(id, &self.stats, &self.cfg.firmware).ok_or(Status::INVALID_LOG_PAGE)?;
        // SMART is controller-wide only (LPA bit 0 = 0).
        if id == lid::SMART && sqe.nsid != 0 && sqe.nsid != NSID_BROADCAST {
            return Err(Status::INVALID_FIELD);
        }
        if offset % 4 != 0 || offset >= page.len() as u64 || len > self.cfg.max_transfer() {
            return Err(Status::INVALID_FIELD);
        }
        let data = page.get(offset as usize..).unwrap_or_default();
        self.send(sqe, data, len)?;
        if id == lid::ERROR && !retain_event {
            self.aer.unmask_errors();
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;
    use crate::nvme::config::ControllerConfig;
    use crate::nvme::testing::{cmd, io_cq_addr, io_sq_addr, Driver, DATA, LISTS};

    fn u32_at(d: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(d[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn identify_controller_namespace_and_lists() {
        let engine = MemEngine::new(1 << 20).with_block_size(4096);
        let mut d = Driver::with_engine(ControllerConfig::default(), engine);
        // Controller, with PRP1 at an offset so it spills into PRP2.
        let mut sqe = cmd::identify(1, 0, DATA + 0x800);
        sqe.prp2 = DATA + 0x2000;
        assert_eq!(d.admin(sqe).status, Status::SUCCESS);
        let mut id = d.mem.read(DATA + 0x800, 0x800);
        id.extend(d.mem.read(DATA + 0x2000, 0x800));
        assert_eq!(id, identify::controller(&ControllerConfig::default()));
        assert_eq!(&id[4..14], b"IOPATH0001");

        assert_eq!(d.admin(cmd::identify(0, 1, DATA)).status, Status::SUCCESS);
        let ns = d.mem.read(DATA, 4096);
        assert_eq!(u32_at(&ns, 0), 256, "NSZE = capacity / block size");
        assert_eq!((u32_at(&ns, 0x80) >> 16) & 0xff, 12, "LBADS");

        d.mem.write(DATA, &[0xff; 4096]);
        assert_eq!(d.admin(cmd::identify(2, 0, DATA)).status, Status::SUCCESS);
        let list = d.mem.read(DATA, 4096);
        assert_eq!(u32_at(&list, 0), 1);
        assert!(list[4..].iter().all(|&b| b == 0));
        assert_eq!(d.admin(cmd::identify(2, 1, DATA)).status, Status::SUCCESS);
        assert_eq!(u32_at(&d.mem.read(DATA, 4), 0), 0);

        assert_eq!(d.admin(cmd::identify(3, 1, DATA)).status, Status::SUCCESS);
        assert_eq!(d.mem.read(DATA, 2), [2, 16]);
    }

    #[test]
    fn identify_errors() {
        let mut d = Driver::new();
        d.mem.write(DATA, &[0xee; 16]);
        for (cns, nsid, want) in [
            (0, 2, Status::INVALID_NAMESPACE),
            (0, 0, Status::INVALID_NAMESPACE),
            (0, 0xffff_ffff, Status::INVALID_NAMESPACE),
            (2, 0xffff_fffe, Status::INVALID_NAMESPACE),
            (3, 7, Status::INVALID_NAMESPACE),
            (4, 1, Status::INVALID_FIELD),
            (0x10, 0, Status::INVALID_FIELD),
        ] {
            let c = d.admin(cmd::identify(cns, nsid, DATA));
            assert_eq!(c.status, want, "CNS {cns} NSID {nsid:#x}");
        }
        assert_eq!(d.mem.read(DATA, 16), [0xee; 16], "nothing written");
        // Unmapped buffer: data transfer error, not a crash.
        let c = d.admin(cmd::identify(1, 0, 0x4000_0000));
        assert_eq!(c.status, Status::DATA_TRANSFER_ERROR);
        // Misaligned PRP1.
        let c = d.admin(cmd::identify(1, 0, DATA + 2));
        assert_eq!(c.status, Status::PRP_OFFSET_INVALID);
    }

    #[test]
    fn create_queue_errors() {
        let cfg = ControllerConfig {
            max_io_queues: 4,
            max_queue_entries: 64,
            interrupt_vectors: 2,
            ..Default::default()
        };
        let mut d = Driver::with_engine(cfg, MemEngine::new(1 << 20));
        let cq = |qid, entries| cmd::create_cq(qid, entries, io_cq_addr(1), None);
        let sq = |qid, entries, cqid| cmd::create_sq(qid, entries, io_sq_addr(1), cqid);
        for (sqe, want) in [
            (cq(0, 16), Status::INVALID_QUEUE_IDENTIFIER),
            (cq(5, 16), Status::INVALID_QUEUE_IDENTIFIER),
            (cq(1, 1), Status::INVALID_QUEUE_SIZE),
            (cq(1, 65), Status::INVALID_QUEUE_SIZE),
            (
                cmd::create_cq(1, 16, io_cq_addr(1), Some(2)),
                Status::INVALID_INTERRUPT_VECTOR,
            ),
            (
                cmd::create_cq(1, 16, io_cq_addr(1) + 0x100, None),
                Status::PRP_OFFSET_INVALID,
            ),
            (
                cmd::create_cq(1, 16, 0x4000_0000, None),
                Status::DATA_TRANSFER_ERROR,
            ),
            (sq(1, 16, 1), Status::COMPLETION_QUEUE_INVALID),
            (sq(1, 16, 0), Status::COMPLETION_QUEUE_INVALID),
        ] {
            assert_eq!(d.admin(sqe).status, want, "{sqe:?}");
        }
        let mut not_contiguous = cq(1, 16);
        not_contiguous.cdw11 &= !1;
        assert_eq!(d.admin(not_contiguous).status, Status::INVALID_FIELD);

        assert!(d.create_cq(1, 16, Some(1)).status.is_success());
        assert_eq!(
            d.admin(cq(1, 16)).status,
            Status::INVALID_QUEUE_IDENTIFIER,
            "exists"
        );
        for (sqe, want) in [
            (sq(0, 16, 1), Status::INVALID_QUEUE_IDENTIFIER),
            (sq(5, 16, 1), Status::INVALID_QUEUE_IDENTIFIER),
            (sq(1, 16, 2), Status::COMPLETION_QUEUE_INVALID),
            (sq(1, 65, 1), Status::INVALID_QUEUE_SIZE),
            (
                cmd::create_sq(1, 16, io_sq_addr(1) + 8, 1),
                Status::PRP_OFFSET_INVALID,
            ),
            (
                cmd::create_sq(1, 16, 0x4000_0000, 1),
                Status::DATA_TRANSFER_ERROR,
            ),
        ] {
            assert_eq!(d.admin(sqe).status, want, "{sqe:?}");
        }
        assert!(d.create_sq(1, 64, 1).status.is_success());
        assert_eq!(
            d.admin(sq(1, 16, 1)).status,
            Status::INVALID_QUEUE_IDENTIFIER,
            "exists"
        );
        // Two SQs may share a CQ.
        assert!(d.create_sq(2, 16, 1).status.is_success());
        assert!(d.io(2, cmd::flush()).status.is_success());
        assert!(d.io(1, cmd::flush()).status.is_success());
    }

    #[test]
    fn queue_entry_sizes_must_be_configured() {
        let mut d = Driver::new();
        d.write32(crate::nvme::regs::CC, 1);
        let c = d.admin(cmd::create_cq(1, 4, io_cq_addr(1), None));
        assert_eq!(c.status, Status::INVALID_FIELD);
        d.write32(crate::nvme::regs::CC, 1 | (4 << 20));
        assert!(d.create_cq(1, 4, None).status.is_success());
        let c = d.admin(cmd::create_sq(1, 4, io_sq_addr(1), 1));
        assert_eq!(c.status, Status::INVALID_FIELD);
    }

    #[test]
    fn number_of_queues_limits_queue_ids() {
        let mut d = Driver::new();
        // Ask for 2 SQs, 1 CQ.
        let c = d.admin(cmd::set_features(7, 1));
        assert_eq!((c.status, c.dw0), (Status::SUCCESS, 1));
        assert_eq!(d.admin(cmd::get_features(7, 0, 0)).dw0, 1);
        assert_eq!(
            d.admin(cmd::create_cq(2, 4, io_cq_addr(2), None)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        d.create_io_queues(1, 4, 4);
        assert!(d.create_sq(2, 4, 1).status.is_success());
        assert_eq!(
            d.admin(cmd::create_sq(3, 4, io_sq_addr(3), 1)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert_eq!(
            d.admin(cmd::set_features(7, 7 | (7 << 16))).status,
            Status::COMMAND_SEQUENCE_ERROR
        );
        // Granting more than the maximum is capped.
        let mut d = Driver::with_engine(
            ControllerConfig {
                max_io_queues: 3,
                ..Default::default()
            },
            MemEngine::new(1 << 20),
        );
        let c = d.admin(cmd::set_features(7, 99 | (99 << 16)));
        assert_eq!(c.dw0, 2 | (2 << 16));
    }

    #[test]
    fn delete_queues() {
        let mut d = Driver::new();
        d.create_io_queues(1, 8, 8);
        assert_eq!(
            d.admin(cmd::delete_sq(0)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert_eq!(
            d.admin(cmd::delete_sq(2)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert_eq!(
            d.admin(cmd::delete_sq(9999)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert_eq!(
            d.admin(cmd::delete_cq(0)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert_eq!(
            d.admin(cmd::delete_cq(2)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert_eq!(
            d.admin(cmd::delete_cq(1)).status,
            Status::INVALID_QUEUE_DELETION
        );
        assert!(d.admin(cmd::delete_sq(1)).status.is_success());
        d.forget_sq(1);
        assert_eq!(
            d.admin(cmd::delete_sq(1)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        assert!(d.admin(cmd::delete_cq(1)).status.is_success());
        d.forget_cq(1);
        assert_eq!(
            d.admin(cmd::delete_cq(1)).status,
            Status::INVALID_QUEUE_IDENTIFIER
        );
        // The ids can be reused; Number of Queues stays fixed.
        d.create_io_queues(1, 8, 8);
        assert!(d.io(1, cmd::flush()).status.is_success());
    }

    #[test]
    fn delete_sq_completes_its_in_flight_commands_first() {
        let mut d = Driver::new();
        d.create_io_queues(1, 8, 8);
        d.gate().hold = true;
        let cids: Vec<u16> = (0..3)
            .map(|_| d.push(1, cmd::read(0, 1, DATA, 0)))
            .collect();
        d.ring(1);
        assert!(d.reap(1).is_none());
        assert!(d.admin(cmd::delete_sq(1)).status.is_success());
        d.forget_sq(1);
        let got: Vec<u16> = std::iter::from_fn(|| d.reap(1)).map(|c| c.cid).collect();
        assert_eq!(got, cids);
        assert!(d.admin(cmd::delete_cq(1)).status.is_success());
    }

    #[test]
    fn delete_sq_aborts_commands_the_engine_never_took() {
        let engine = MemEngine::new(1 << 20).with_queue_depth(1);
        let mut d = Driver::with_engine(ControllerConfig::default(), engine);
        d.create_io_queues(1, 8, 8);
        d.gate().hold = true;
        let first = d.push(1, cmd::read(0, 1, DATA, 0));
        let second = d.push(1, cmd::read(1, 1, DATA + 0x1000, 0));
        d.ring(1);
        assert_eq!(d.ctrl.stats().engine_backlogged, 1);
        assert!(d.admin(cmd::delete_sq(1)).status.is_success());
        let a = d.reap(1).unwrap();
        let b = d.reap(1).unwrap();
        // The aborted one completes first (while the other is still in the engine).
        assert_eq!((b.cid, b.status), (first, Status::SUCCESS));
        assert_eq!((a.cid, a.status), (second, Status::ABORTED_SQ_DELETION));
        assert!(!a.status.dnr());
    }

    #[test]
    fn features_and_small_commands() {
        let mut d = Driver::new();
        assert!(d.admin(cmd::set_features(6, 0)).status.is_success());
        assert_eq!(d.admin(cmd::get_features(6, 0, 0)).dw0, 0);
        assert_eq!(d.admin(cmd::get_features(6, 1, 0)).dw0, 1, "default");
        assert!(d.admin(cmd::set_features(1, 3)).status.is_success());
        assert!(d.admin(cmd::set_features(2, 0)).status.is_success());
        assert_eq!(
            d.admin(cmd::set_features(0xee, 0)).status,
            Status::INVALID_FIELD
        );

        let c = d.admin(cmd::abort(1, 5));
        assert_eq!((c.status, c.dw0 & 1), (Status::SUCCESS, 1));
        assert!(d.admin(cmd::keep_alive()).status.is_success());
        let c = d.admin(Sqe {
            opcode: 0x80, // Format NVM: not supported
            ..Default::default()
        });
        assert_eq!(c.status, Status::INVALID_OPCODE);
        assert!(c.status.dnr());
        let c = d.admin(Sqe {
            opcode: 0x7f,
            ..Default::default()
        });
        assert_eq!(c.status, Status::INVALID_OPCODE);
        let mut sgl = cmd::identify(1, 0, DATA);
        sgl.psdt = 1;
        assert_eq!(d.admin(sgl).status, Status::INVALID_FIELD);
        let mut fused = cmd::keep_alive();
        fused.fuse = 1;
        assert_eq!(d.admin(fused).status, Status::INVALID_FIELD);
        assert_eq!(d.ctrl.stats().admin_commands, 12);
    }

    #[test]
    fn async_event_requests_are_held_up_to_the_limit() {
        let mut d = Driver::new();
        for _ in 0..4 {
            d.submit(0, cmd::async_event_request());
        }
        assert!(d.reap(0).is_none());
        let c = d.admin(cmd::async_event_request());
        assert_eq!(c.status, Status::AER_LIMIT_EXCEEDED);
        assert!(d.admin(cmd::keep_alive()).status.is_success());
        assert_eq!(d.ctrl.aer.held(), 4);
    }

    #[test]
    fn get_log_page_lengths_and_offsets() {
        let mut d = Driver::new();
        d.create_io_queues(1, 4, 4);
        d.io(1, cmd::read(0, 2, DATA, 0));
        // SMART: 512 bytes.
        d.mem.write(DATA, &[0xff; 8192]);
        assert!(d.admin(cmd::get_log_page(2, 128, DATA)).status.is_success());
        let smart = d.mem.read(DATA, 512);
        assert_eq!(smart[3], 100);
        assert_eq!(smart[64], 1, "host read commands");
        assert_eq!(
            d.mem.read(DATA + 512, 8),
            [0xff; 8],
            "exactly the requested length"
        );
        // Longer than the page, across two pages: zero filled.
        let mut sqe = cmd::get_log_page(3, 1024 + 16, DATA + 0x800);
        sqe.prp2 = LISTS;
        d.mem.write(LISTS, &[0xff; 4096]);
        d.mem.write(DATA + 0x800, &[0xff; 2048]);
        assert!(d.admin(sqe).status.is_success());
        assert_eq!(d.mem.read(DATA + 0x800, 1), [1]);
        assert!(d.mem.read(DATA + 0xa00, 0x600).iter().all(|&b| b == 0));
        assert!(d.mem.read(LISTS, 2112).iter().all(|&b| b == 0));
        assert_eq!(d.mem.read(LISTS + 2112, 4), [0xff; 4]);
        // With an offset: firmware revision of slot 1 is at byte 8.
        let mut sqe = cmd::get_log_page(3, 2, DATA);
        sqe.cdw12 = 8;
        assert!(d.admin(sqe).status.is_success());
        assert_eq!(&d.mem.read(DATA, 8)[..5], b"0.1.0");
        // Errors.
        let mut bad_offset = cmd::get_log_page(3, 2, DATA);
        bad_offset.cdw12 = 6;
        assert_eq!(d.admin(bad_offset).status, Status::INVALID_FIELD);
        let mut past_end = cmd::get_log_page(3, 2, DATA);
        past_end.cdw12 = 512;
        assert_eq!(d.admin(past_end).status, Status::INVALID_FIELD);
        let mut high = cmd::get_log_page(3, 2, DATA);
        high.cdw13 = 1;
        assert_eq!(d.admin(high).status, Status::INVALID_FIELD);
        let too_long = cmd::get_log_page(2, (512 << 10) / 4 + 1, DATA);
        assert_eq!(d.admin(too_long).status, Status::INVALID_FIELD);
        assert_eq!(
            d.admin(cmd::get_log_page(0x7f, 16, DATA)).status,
            Status::INVALID_LOG_PAGE
        );
        let mut smart_ns = cmd::get_log_page(2, 128, DATA);
        smart_ns.nsid = 1;
        assert_eq!(d.admin(smart_ns).status, Status::INVALID_FIELD);
        assert_eq!(
            d.admin(cmd::get_log_page(1, 16, 0x4000_0000)).status,
            Status::DATA_TRANSFER_ERROR
        );
        // Error log: 64 bytes of zeroes.
        d.mem.write(DATA, &[0xff; 64]);
        assert!(d.admin(cmd::get_log_page(1, 16, DATA)).status.is_success());
        assert_eq!(d.mem.read(DATA, 64), [0; 64]);
    }
}
