//! Wire formats from the NVMe base specification 1.4: submission and completion queue entries,
//! opcodes, and status codes.

/// Bytes in one submission queue entry (CC.IOSQES = 6).
pub const SQE_SIZE: usize = 64;
/// Bytes in one completion queue entry (CC.IOCQES = 4).
pub const CQE_SIZE: usize = 16;
/// log2 of [`SQE_SIZE`], the only value of CC.IOSQES and of both nibbles of Identify SQES.
pub const SQES_LOG2: u8 = 6;
/// log2 of [`CQE_SIZE`].
pub const CQES_LOG2: u8 = 4;

/// The only namespace.
pub const NSID: u32 = 1;
/// "All namespaces" in commands that accept it.
pub const NSID_BROADCAST: u32 = 0xffff_ffff;

/// Admin command opcodes (figure 139).
pub mod admin_opc {
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0a;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    pub const KEEP_ALIVE: u8 = 0x18;
}

/// NVM command set I/O opcodes (figure 346).
pub mod io_opc {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Status Code Type values.
const SCT_GENERIC: u16 = 0;
const SCT_COMMAND_SPECIFIC: u16 = 1;
const SCT_MEDIA: u16 = 2;

/// A completion status: Status Code Type and Status Code. The Do Not Retry bit is derived
/// ([`Status::dnr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(u16);

impl Status {
    const fn new(sct: u16, sc: u16) -> Self {
        Status((sct << 8) | sc)
    }

    // Generic command status (figure 128).
    pub const SUCCESS: Status = Status::new(SCT_GENERIC, 0x00);
    pub const INVALID_OPCODE: Status = Status::new(SCT_GENERIC, 0x01);
    pub const INVALID_FIELD: Status = Status::new(SCT_GENERIC, 0x02);
    pub const DATA_TRANSFER_ERROR: Status = Status::new(SCT_GENERIC, 0x04);
    pub const INTERNAL_ERROR: Status = Status::new(SCT_GENERIC, 0x06);
    pub const ABORTED_SQ_DELETION: Status = Status::new(SCT_GENERIC, 0x08);
    pub const INVALID_NAMESPACE: Status = Status::new(SCT_GENERIC, 0x0b);
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::new(SCT_GENERIC, 0x0c);
    pub const PRP_OFFSET_INVALID: Status = Status::new(SCT_GENERIC, 0x13);
    pub const NAMESPACE_WRITE_PROTECTED: Status = Status::new(SCT_GENERIC, 0x20);
    pub const LBA_OUT_OF_RANGE: Status = Status::new(SCT_GENERIC, 0x80);
    pub const CAPACITY_EXCEEDED: Status = Status::new(SCT_GENERIC, 0x81);

    // Command specific status (figure 129).
    pub const COMPLETION_QUEUE_INVALID: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x00);
    pub const INVALID_QUEUE_IDENTIFIER: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x01);
    pub const INVALID_QUEUE_SIZE: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x02);
    pub const AER_LIMIT_EXCEEDED: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x05);
    pub const INVALID_INTERRUPT_VECTOR: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x08);
    pub const INVALID_LOG_PAGE: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x09);
    pub const INVALID_QUEUE_DELETION: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x0c);
    pub const FEATURE_NOT_SAVEABLE: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x0d);

    // Media and data integrity errors (figure 131).
    pub const WRITE_FAULT: Status = Status::new(SCT_MEDIA, 0x80);
    pub const UNRECOVERED_READ_ERROR: Status = Status::new(SCT_MEDIA, 0x81);

    pub fn is_success(self) -> bool {
        self == Status::SUCCESS
    }

    #[cfg(test)]
    pub fn sct(self) -> u8 {
        (self.0 >> 8) as u8 & 0x7
    }

    #[cfg(test)]
    pub fn sc(self) -> u8 {
        self.0 as u8
    }

    /// Do Not Retry: set for every error a retry cannot fix, i.e. all but internal and media
    /// errors and commands aborted because their queue went away.
    pub fn dnr(self) -> bool {
        !matches!(
            self,
            Status::SUCCESS
                | Status::INTERNAL_ERROR
                | Status::ABORTED_SQ_DELETION
                | Status::WRITE_FAULT
                | Status::UNRECOVERED_READ_ERROR
        )
    }

    /// The 15-bit Status Field of CQE DW3 bits 31:17 (SC, SCT, CRD=0, M=0, DNR).
    pub fn field(self) -> u16 {
        let dnr = if self.dnr() { 1 << 14 } else { 0 };
        (self.0 & 0x7ff) | dnr
    }
}

/// A submission queue entry, decoded (figure 105/106). Reserved fields are not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sqe {
    pub opcode: u8,
    /// Fused operation (CDW0 bits 9:8); only 0 is supported.
    pub fuse: u8,
    /// PRP or SGL (CDW0 bits 15:14); only 0 (PRPs) is supported.
    pub psdt: u8,
    pub cid: u16,
    pub nsid: u32,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

impl Sqe {
    pub fn parse(bytes: &[u8; SQE_SIZE]) -> Sqe {
        let mut dw = [0u32; SQE_SIZE / 4];
        for (d, c) in dw.iter_mut().zip(bytes.chunks_exact(4)) {
            *d = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let qw = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
        Sqe {
            opcode: dw[0] as u8,
            fuse: ((dw[0] >> 8) & 0x3) as u8,
            psdt: ((dw[0] >> 14) & 0x3) as u8,
            cid: (dw[0] >> 16) as u16,
            nsid: dw[1],
            prp1: qw(dw[6], dw[7]),
            prp2: qw(dw[8], dw[9]),
            cdw10: dw[10],
            cdw11: dw[11],
            cdw12: dw[12],
            cdw13: dw[13],
            cdw14: dw[14],
            cdw15: dw[15],
        }
    }

    /// The inverse of [`Sqe::parse`], for drivers (tests).
    #[cfg(test)]
    pub fn encode(&self) -> [u8; SQE_SIZE] {
        let mut dw = [0u32; SQE_SIZE / 4];
        dw[0] = u32::from(self.opcode)
            | (u32::from(self.fuse) << 8)
            | (u32::from(self.psdt) << 14)
            | (u32::from(self.cid) << 16);
        dw[1] = self.nsid;
        dw[6] = self.prp1 as u32;
        dw[7] = (self.prp1 >> 32) as u32;
        dw[8] = self.prp2 as u32;
        dw[9] = (self.prp2 >> 32) as u32;
        dw[10] = self.cdw10;
        dw[11] = self.cdw11;
        dw[12] = self.cdw12;
        dw[13] = self.cdw13;
        dw[14] = self.cdw14;
        dw[15] = self.cdw15;
        let mut out = [0u8; SQE_SIZE];
        for (c, d) in out.chunks_exact_mut(4).zip(dw) {
            c.copy_from_slice(&d.to_le_bytes());
        }
        out
    }
}

/// A completion queue entry before it gets its phase tag (figure 124).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cqe {
    pub dw0: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub status: Status,
}

impl Cqe {
    /// DW0..DW2 as bytes, and DW3 (CID, phase tag, status), which must reach memory last.
    pub fn encode(&self, phase: bool) -> ([u8; 12], u32) {
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&self.dw0.to_le_bytes());
        head[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        head[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        let dw3 =
            u32::from(self.cid) | (u32::from(phase) << 16) | (u32::from(self.status.field()) << 17);
        (head, dw3)
    }

    /// Decodes a posted entry (tests play the driver): the entry and its phase tag.
    #[cfg(test)]
    pub fn decode(bytes: &[u8; CQE_SIZE]) -> (Cqe, bool) {
        let dw =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let dw3 = dw(12);
        let sf = (dw3 >> 17) as u16;
        let cqe = Cqe {
            dw0: dw(0),
            sq_head: dw(8) as u16,
            sq_id: (dw(8) >> 16) as u16,
            cid: dw3 as u16,
            status: Status(sf & 0x7ff),
        };
        (cqe, dw3 & (1 << 16) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_fields_round_trip_at_spec_offsets() {
        let sqe = Sqe {
            opcode: 0x02,
            fuse: 1,
            psdt: 2,
            cid: 0xbeef,
            nsid: 1,
            prp1: 0x1122_3344_5566_7788,
            prp2: 0x99aa_bbcc_ddee_f000,
            cdw10: 10,
            cdw11: 11,
            cdw12: 12,
            cdw13: 13,
            cdw14: 14,
            cdw15: 15,
        };
        let b = sqe.encode();
        assert_eq!(b[0], 0x02);
        assert_eq!(b[1], 0x01 | (2 << 6));
        assert_eq!(&b[2..4], &0xbeef_u16.to_le_bytes());
        assert_eq!(&b[4..8], &1u32.to_le_bytes());
        assert_eq!(&b[24..32], &0x1122_3344_5566_7788_u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x99aa_bbcc_ddee_f000_u64.to_le_bytes());
        assert_eq!(&b[40..44], &10u32.to_le_bytes());
        assert_eq!(&b[60..64], &15u32.to_le_bytes());
        assert_eq!(Sqe::parse(&b), sqe);
    }

    #[test]
    fn cqe_layout_phase_and_status() {
        let cqe = Cqe {
            dw0: 0xdead_beef,
            sq_head: 7,
            sq_id: 3,
            cid: 0x1234,
            status: Status::LBA_OUT_OF_RANGE,
        };
        let (head, dw3) = cqe.encode(true);
        assert_eq!(&head[0..4], &0xdead_beef_u32.to_le_bytes());
        assert_eq!(&head[8..12], &[7, 0, 3, 0]);
        assert_eq!(dw3 & 0xffff, 0x1234);
        assert_eq!(dw3 & (1 << 16), 1 << 16);
        // SC 0x80 at bits 24:17, SCT 0 at 27:25, DNR at bit 31.
        assert_eq!((dw3 >> 17) & 0xff, 0x80);
        assert_eq!((dw3 >> 25) & 0x7, 0);
        assert_eq!(dw3 >> 31, 1);

        let mut bytes = [0u8; 16];
        bytes[..12].copy_from_slice(&head);
        bytes[12..].copy_from_slice(&dw3.to_le_bytes());
        assert_eq!(Cqe::decode(&bytes), (cqe, true));
        let (_, dw3) = cqe.encode(false);
        assert_eq!(dw3 & (1 << 16), 0);
    }

    #[test]
    fn status_codes_match_the_spec() {
        assert_eq!(Status::SUCCESS.field(), 0);
        assert_eq!(
            (
                Status::INVALID_QUEUE_DELETION.sct(),
                Status::INVALID_QUEUE_DELETION.sc()
            ),
            (1, 0x0c)
        );
        assert_eq!(
            (
                Status::UNRECOVERED_READ_ERROR.sct(),
                Status::UNRECOVERED_READ_ERROR.sc()
            ),
            (2, 0x81)
        );
        assert_eq!(Status::INVALID_FIELD.field(), 0x02 | (1 << 14));
        assert_eq!(Status::INTERNAL_ERROR.field(), 0x06);
        assert_eq!(Status::WRITE_FAULT.field(), 0x280);
        assert!(Status::DATA_TRANSFER_ERROR.dnr());
        assert!(!Status::SUCCESS.dnr());
    }
}
