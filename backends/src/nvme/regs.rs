//! Controller registers (NVMe 1.4 section 3.1): offsets in BAR0 and bit fields.

/// Controller Capabilities (64-bit, read-only).
pub const CAP: u64 = 0x00;
/// Version.
pub const VS: u64 = 0x08;
/// Interrupt Mask Set / Clear (pin-based and MSI only; kept, not acted on).
pub const INTMS: u64 = 0x0c;
pub const INTMC: u64 = 0x10;
/// Controller Configuration.
pub const CC: u64 = 0x14;
/// Controller Status.
pub const CSTS: u64 = 0x1c;
/// Admin Queue Attributes.
pub const AQA: u64 = 0x24;
/// Admin Submission / Completion Queue Base Address (64-bit).
pub const ASQ: u64 = 0x28;
pub const ACQ: u64 = 0x30;
/// First doorbell: SQ y tail at `DOORBELL_BASE + 2y * 4`, CQ y head at `+ (2y + 1) * 4`
/// (CAP.DSTRD = 0).
pub const DOORBELL_BASE: u64 = 0x1000;
/// Bytes of BAR0: registers plus 0x600 doorbell pairs.
pub const BAR0_SIZE: u64 = 0x4000;
/// Highest queue id whose doorbells fit in BAR0.
pub const MAX_QID: u16 = ((BAR0_SIZE - DOORBELL_BASE) / 8 - 1) as u16;

/// NVMe 1.4.0.
pub const VERSION: u32 = 0x0001_0400;

/// Memory page size; CAP.MPSMIN = CAP.MPSMAX = 0 make it the only one.
pub const PAGE_SIZE: u64 = 4096;

/// CAP.TO: worst-case CSTS.RDY transition time in 500 ms units. Disabling drains in-flight
/// I/O, so allow 10 s.
const CAP_TIMEOUT: u64 = 20;

/// The CAP value for a controller with `max_queue_entries` entries per I/O queue.
pub fn cap(max_queue_entries: u16) -> u64 {
    let mqes = u64::from(max_queue_entries.saturating_sub(1));
    let cqr = 1 << 16; // queues must be physically contiguous
    let to = CAP_TIMEOUT << 24;
    let css_nvm = 1 << 37;
    // AMS = 0 (round robin only), DSTRD = 0, NSSRS = 0, MPSMIN = MPSMAX = 0, BPS/CMBS/PMRS = 0.
    mqes | cqr | to | css_nvm
}

/// Controller Configuration fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cc(pub u32);

impl Cc {
    pub fn en(self) -> bool {
        self.0 & 1 != 0
    }
    /// I/O Command Set Selected (0 = NVM).
    pub fn css(self) -> u32 {
        (self.0 >> 4) & 0x7
    }
    /// Memory Page Size: 2^(12 + MPS).
    pub fn mps(self) -> u32 {
        (self.0 >> 7) & 0xf
    }
    /// Arbitration Mechanism Selected (0 = round robin).
    pub fn ams(self) -> u32 {
        (self.0 >> 11) & 0x7
    }
    /// Shutdown Notification (0 none, 1 normal, 2 abrupt).
    pub fn shn(self) -> u32 {
        (self.0 >> 14) & 0x3
    }
    pub fn iosqes(self) -> u32 {
        (self.0 >> 16) & 0xf
    }
    pub fn iocqes(self) -> u32 {
        (self.0 >> 20) & 0xf
    }
}

/// CSTS bits.
pub const CSTS_RDY: u32 = 1 << 0;
pub const CSTS_CFS: u32 = 1 << 1;
pub const CSTS_SHST_MASK: u32 = 0x3 << 2;
pub const CSTS_SHST_COMPLETE: u32 = 0x2 << 2;

/// Admin queue sizes from AQA: (submission, completion) entries (the fields are 0-based).
pub fn aqa_sizes(aqa: u32) -> (u32, u32) {
    ((aqa & 0xfff) + 1, ((aqa >> 16) & 0xfff) + 1)
}

/// Where a BAR0 offset lands in the doorbell area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doorbell {
    SqTail(u16),
    CqHead(u16),
}

/// The doorbell at `offset`, if it is one (4-byte aligned, inside BAR0).
pub fn doorbell(offset: u64) -> Option<Doorbell> {
    if !(DOORBELL_BASE..BAR0_SIZE).contains(&offset) || !offset.is_multiple_of(4) {
        return None;
    }
    let index = (offset - DOORBELL_BASE) / 4;
    let qid = u16::try_from(index / 2).ok()?;
    Some(if index.is_multiple_of(2) {
        Doorbell::SqTail(qid)
    } else {
        Doorbell::CqHead(qid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        let cap = cap(1024);
        assert_eq!(cap & 0xffff, 1023, "MQES is 0-based");
        assert_eq!((cap >> 16) & 1, 1, "CQR");
        assert_eq!((cap >> 17) & 3, 0, "AMS");
        assert_eq!((cap >> 24) & 0xff, CAP_TIMEOUT, "TO");
        assert_eq!((cap >> 32) & 0xf, 0, "DSTRD");
        assert_eq!((cap >> 37) & 0xff, 1, "CSS: NVM command set");
        assert_eq!((cap >> 48) & 0xf, 0, "MPSMIN");
        assert_eq!((cap >> 52) & 0xf, 0, "MPSMAX");
    }

    #[test]
    fn cc_fields() {
        // EN, CSS=0, MPS=1, AMS=0, SHN=1, IOSQES=6, IOCQES=4.
        let cc = Cc(1 | (1 << 7) | (1 << 14) | (6 << 16) | (4 << 20));
        assert!(cc.en());
        assert_eq!((cc.css(), cc.mps(), cc.ams(), cc.shn()), (0, 1, 0, 1));
        assert_eq!((cc.iosqes(), cc.iocqes()), (6, 4));
        assert_eq!(Cc(7 << 11).ams(), 7);
    }

    #[test]
    fn aqa_is_zero_based() {
        assert_eq!(aqa_sizes(0x001f_003f), (64, 32));
        assert_eq!(aqa_sizes(0xffff_ffff), (4096, 4096));
    }

    #[test]
    fn doorbell_decoding() {
        assert_eq!(doorbell(0x1000), Some(Doorbell::SqTail(0)));
        assert_eq!(doorbell(0x1004), Some(Doorbell::CqHead(0)));
        assert_eq!(doorbell(0x1008), Some(Doorbell::SqTail(1)));
        assert_eq!(doorbell(0x100c), Some(Doorbell::CqHead(1)));
        assert_eq!(doorbell(0x3ffc), Some(Doorbell::CqHead(MAX_QID)));
        assert_eq!(MAX_QID, 0x5ff);
        assert_eq!(doorbell(0x1002), None);
        assert_eq!(doorbell(0x4000), None);
        assert_eq!(doorbell(0xffc), None);
    }
}
