//! Identify data structures (NVMe 1.4 section 5.15.2): controller, namespace, active namespace
//! list, namespace identification descriptors.

use super::aer::AERL;
use super::config::ControllerConfig;
use super::features::WARNING_TEMPERATURE;
use super::namespace::Namespace;
use super::regs::VERSION;
use super::spec::{CQES_LOG2, NSID, SQES_LOG2};

/// Every Identify data structure is one 4 KiB page.
pub const IDENTIFY_SIZE: usize = 4096;

/// Identify CNS values.
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
    pub const NS_DESCRIPTORS: u8 = 0x03;
}

/// PCI vendor id reported in VID/SSVID: Red Hat's, as QEMU's emulated NVMe uses.
pub const PCI_VENDOR_ID: u16 = 0x1b36;
/// Critical composite temperature (Kelvin).
const CRITICAL_TEMPERATURE: u16 = 373;
/// Keep Alive granularity in 100 ms units (KAS); the timer is accepted, never enforced.
const KEEP_ALIVE_GRANULARITY: u16 = 1;

struct Page(Vec<u8>);

impl Page {
    fn new() -> Self {
        Page(vec![0; IDENTIFY_SIZE])
    }

    fn put(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(dst) = self.0.get_mut(offset..offset + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    /// An ASCII field, truncated to `len` and padded with `pad` (non-printable characters
    /// become spaces).
    fn text(&mut self, offset: usize, len: usize, s: &str, pad: u8) {
        let text = s
            .bytes()
            .map(|b| if b.is_ascii_graphic() { b } else { b' ' })
            .chain(std::iter::repeat(pad))
            .take(len)
            .collect::<Vec<u8>>();
        self.put(offset, &text);
    }
}

/// Namespace Globally Unique Identifier, derived from the serial number (FNV-1a).
pub fn nguid(serial: &str) -> [u8; 16] {
    let hash = |seed: u64| {
        serial.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hash(0xcbf2_9ce4_8422_2325).to_be_bytes());
    out[8..].copy_from_slice(&hash(0x6c62_272e_07bb_0142).to_be_bytes());
    out
}

/// The NVM Subsystem NVMe Qualified Name.
fn subnqn(serial: &str) -> String {
    format!("nqn.2024-01.dev.iopath:nvme:{serial}")
}

/// Identify Controller (CNS 1).
pub fn controller(cfg: &ControllerConfig) -> Vec<u8> {
    let mut p = Page::new();
    p.put(0x000, &PCI_VENDOR_ID.to_le_bytes()); // VID
    p.put(0x002, &PCI_VENDOR_ID.to_le_bytes()); // SSVID
    p.text(0x004, 20, &cfg.serial, b' '); // SN
    p.text(0x018, 40, &cfg.model, b' '); // MN
    p.text(0x040, 8, &cfg.firmware, b' '); // FR
    p.put(0x048, &[6]); // RAB: 64 commands
    p.put(0x04d, &[cfg.mdts_pages_shift]); // MDTS
                                           // CNTLID 0.
    p.put(0x050, &VERSION.to_le_bytes()); // VER
    p.put(0x06f, &[1]); // CNTRLTYPE: I/O controller
                        // OACS 0: no optional admin commands.
    p.put(0x102, &[0]); // ACL: one outstanding Abort (0-based)
    p.put(0x103, &[AERL]); // AERL
    p.put(0x104, &[0x03]); // FRMW: one slot, slot 1 read only
    p.put(0x105, &[1 << 2]); // LPA: extended data for Get Log Page (NUMDU, LPO)
                             // ELPE 0: one error log entry. NPSS 0: one power state.
    p.put(0x10a, &WARNING_TEMPERATURE.to_le_bytes()); // WCTEMP
    p.put(0x10c, &CRITICAL_TEMPERATURE.to_le_bytes()); // CCTEMP
    p.put(0x140, &KEEP_ALIVE_GRANULARITY.to_le_bytes()); // KAS
    p.put(0x200, &[(SQES_LOG2 << 4) | SQES_LOG2]); // SQES
    p.put(0x201, &[(CQES_LOG2 << 4) | CQES_LOG2]); // CQES
    p.put(0x204, &1u32.to_le_bytes()); // NN
                                       // ONCS: Dataset Management (bit 2), Write Zeroes (bit 3).
    p.put(0x208, &((1u16 << 2) | (1 << 3)).to_le_bytes());
    // VWC: present, and Flush with NSID FFFFFFFFh supported (bits 2:1 = 11b).
    p.put(0x20d, &[0x07]);
    // SGLS 0: PRPs only.
    p.text(0x300, 256, &subnqn(&cfg.serial), 0); // SUBNQN
                                                 // Power state 0: MP = 25.00 W in centiwatts.
    p.put(0x800, &2500u16.to_le_bytes());
    p.0
}

/// Identify Namespace (CNS 0) for namespace 1.
pub fn namespace(ns: &Namespace, nguid: &[u8; 16]) -> Vec<u8> {
    let mut p = Page::new();
    p.put(0x00, &ns.blocks.to_le_bytes()); // NSZE
    p.put(0x08, &ns.blocks.to_le_bytes()); // NCAP
    p.put(0x10, &ns.blocks.to_le_bytes()); // NUSE
                                           // NSFEAT 0, NLBAF 0 (one format), FLBAS 0.
    p.put(0x21, &[0x01]); // DLFEAT: deallocated blocks read as zeroes
    p.put(0x63, &[u8::from(ns.read_only)]); // NSATTR: write protected
    p.put(0x68, nguid); // NGUID
                        // LBAF0: MS 0, LBADS, RP 0 (best).
    p.put(0x80, &(u32::from(ns.lbads) << 16).to_le_bytes());
    p.0
}

/// Active Namespace ID list (CNS 2): namespaces above `after`.
pub fn active_namespaces(after: u32) -> Vec<u8> {
    let mut p = Page::new();
    if after < NSID {
        p.put(0, &NSID.to_le_bytes());
    }
    p.0
}

/// Namespace Identification Descriptor list (CNS 3): the NGUID.
pub fn ns_descriptors(nguid: &[u8; 16]) -> Vec<u8> {
    const NIDT_NGUID: u8 = 0x02;
    let mut p = Page::new();
    p.put(0, &[NIDT_NGUID, 16]);
    p.put(4, nguid);
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(d: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(d[o..o + 2].try_into().unwrap())
    }

    fn u32_at(d: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(d[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn controller_fields() {
        let cfg = ControllerConfig {
            serial: "SN123".into(),
            model: "a model name that is much longer than forty characters in total".into(),
            firmware: "1.2\u{e9}".into(),
            mdts_pages_shift: 5,
            ..Default::default()
        };
        let d = controller(&cfg);
        assert_eq!(d.len(), 4096);
        assert_eq!(u16_at(&d, 0), PCI_VENDOR_ID);
        assert_eq!(&d[4..24], b"SN123               ");
        assert_eq!(&d[24..64], &cfg.model.as_bytes()[..40]);
        assert_eq!(&d[64..72], b"1.2     ");
        assert_eq!(d[77], 5);
        assert_eq!(u32_at(&d, 80), 0x0001_0400);
        assert_eq!(d[0x103], 3);
        assert_eq!(d[0x200], 0x66);
        assert_eq!(d[0x201], 0x44);
        assert_eq!(u32_at(&d, 0x204), 1);
        assert_eq!(u16_at(&d, 0x208), 0x0c);
        assert_eq!(d[0x20d] & 1, 1);
        assert_eq!(u32_at(&d, 0x218), 0, "no SGLs");
        assert!(d[0x300..].starts_with(b"nqn.2024-01.dev.iopath:nvme:SN123\0"));
    }

    #[test]
    fn namespace_fields() {
        let ns = Namespace::new(1 << 20, 4096, false);
        let d = namespace(&ns, &nguid("x"));
        assert_eq!(u32_at(&d, 0), 256);
        assert_eq!(u32_at(&d, 8), 256);
        assert_eq!(u32_at(&d, 16), 256);
        assert_eq!(d[0x19], 0, "one LBA format");
        assert_eq!(d[0x1a], 0, "format 0 in use");
        assert_eq!((u32_at(&d, 0x80) >> 16) & 0xff, 12);
        assert_eq!(d[0x63], 0);
        assert_eq!(&d[0x68..0x78], &nguid("x"));
        let d = namespace(&Namespace::new(1 << 20, 512, true), &[0; 16]);
        assert_eq!(u32_at(&d, 0), 2048);
        assert_eq!((u32_at(&d, 0x80) >> 16) & 0xff, 9);
        assert_eq!(d[0x63], 1);
    }

    #[test]
    fn namespace_lists() {
        assert_eq!(u32_at(&active_namespaces(0), 0), 1);
        assert!(active_namespaces(1).iter().all(|&b| b == 0));
        let d = ns_descriptors(&nguid("a"));
        assert_eq!(&d[..4], &[2, 16, 0, 0]);
        assert_eq!(&d[4..20], &nguid("a"));
        assert!(d[20..].iter().all(|&b| b == 0));
        assert_ne!(nguid("a"), nguid("b"));
    }
}
