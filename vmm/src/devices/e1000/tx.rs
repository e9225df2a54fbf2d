//! Transmit: walks the TX ring from TDH to TDT on the tail doorbell, assembles each frame from
//! its descriptors (legacy, or TCP/IP context plus data), inserts the checksums it was asked
//! for, hands it to the backend and writes DD back where RS asks for it.
//!
//! TCP segmentation (TSE) is not offered: such a frame is dropped and counted, so a Linux
//! guest needs `ethtool -K eth0 tso off` (its e1000 driver enables TSO on an 82540EM).

use iommu::AddressSpace;

use super::backend::FrameBackend;
use super::regs::stat;
use super::ring::Ring;
use super::stats::{Counters, Stats};

/// The longest frame the model assembles (the 82540EM's TX packet limit is 16288 bytes).
pub const MAX_TX_FRAME: usize = 16288;

/// Command bits, in byte 11 of every TX descriptor.
const CMD_EOP: u8 = 1 << 0;
const CMD_IC: u8 = 1 << 2;
/// In a data descriptor (DEXT) the same bit asks for TCP segmentation.
const CMD_TSE: u8 = 1 << 2;
const CMD_RS: u8 = 1 << 3;
const CMD_RPS: u8 = 1 << 4;
const CMD_DEXT: u8 = 1 << 5;
const CMD_VLE: u8 = 1 << 6;
/// Status byte 12: descriptor done.
const STA_DD: u8 = 1 << 0;
/// Data descriptor POPTS (byte 13): insert the IP checksum, the TCP/UDP checksum.
const POPTS_IXSM: u8 = 1 << 0;
const POPTS_TXSM: u8 = 1 << 1;
const DTYP_CONTEXT: u8 = 0;
const DTYP_DATA: u8 = 1;
const VLAN_TPID: u16 = 0x8100;

/// Checksum offsets from the last context descriptor; ends are inclusive, 0 means the end of
/// the frame.
#[derive(Clone, Copy, Debug, Default)]
struct Context {
    ipcss: u8,
    ipcso: u8,
    ipcse: u16,
    tucss: u8,
    tucso: u8,
    tucse: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checksum {
    None,
    /// Legacy descriptor with IC: from CSS to the end, stored at CSO.
    Legacy {
        css: u8,
        cso: u8,
    },
    /// Data descriptor POPTS, with the offsets of the current context.
    Offload {
        ip: bool,
        l4: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drop {
    Dma,
    Oversized,
    Unsupported,
}

/// Where a TX pass sends frames and counts what it did.
pub struct TxEnv<'a> {
    pub dma: &'a AddressSpace,
    pub backend: &'a dyn FrameBackend,
    /// CTRL.VME: VLE descriptors get an 802.1Q tag.
    pub vlan: bool,
    pub stats: &'a mut Stats,
    pub counters: &'a mut Counters,
}

/// What a TX pass did, for the interrupt causes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxDone {
    /// Descriptors written back (TXDW).
    pub written_back: bool,
    /// The ring was walked up to the tail (TXQE).
    pub emptied: bool,
}

/// The frame being assembled, which may span several doorbells.
pub struct Tx {
    ctx: Context,
    frame: Vec<u8>,
    /// Set by the frame's first descriptor.
    started: bool,
    checksum: Checksum,
    vlan_tag: Option<u16>,
    drop: Option<Drop>,
}

impl Tx {
    pub fn new() -> Tx {
        Tx {
            ctx: Context::default(),
            frame: Vec::with_capacity(2048),
            started: false,
            checksum: Checksum::None,
            vlan_tag: None,
            drop: None,
        }
    }

    /// Forgets a half-assembled frame and the context (device reset).
    pub fn reset(&mut self) {
        *self = Tx {
            frame: std::mem::take(&mut self.frame),
            ..Tx::new()
        };
        self.frame.clear();
    }

    /// Processes descriptors from head to tail. A descriptor the device cannot read stops the
    /// pass there (counted): the guest sees TDH stop.
    pub fn process(&mut self, ring: &mut Ring, env: &mut TxEnv) -> TxDone {
        let mut done = TxDone::default();
        while ring.head != ring.tail {
            let addr = ring.desc_addr(ring.head);
            let mut d = [0u8; 16];
            if env.dma.read(addr, &mut d).is_err() {
                env.counters.tx_dma_errors += 1;
                return done;
            }
            self.descriptor(&d, env);
            if d[11] & (CMD_RS | CMD_RPS) != 0 {
                match env.dma.write(addr + 12, &[STA_DD]) {
                    Ok(()) => done.written_back = true,
                    Err(_) => env.counters.tx_dma_errors += 1,
                }
            }
            ring.advance();
        }
        done.emptied = true;
        done
    }

    fn descriptor(&mut self, d: &[u8; 16], env: &mut TxEnv) {
        let cmd = d[11];
        let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let special = u16::from_le_bytes([d[14], d[15]]);
        if cmd & CMD_DEXT == 0 {
            let len = usize::from(u16::from_le_bytes([d[8], d[9]]));
            if !self.started && cmd & CMD_IC != 0 {
                self.checksum = Checksum::Legacy {
                    css: d[13],
                    cso: d[10],
                };
            }
            self.start(cmd, special);
            self.append(addr, len, env.dma);
        } else {
            match d[10] >> 4 {
                DTYP_CONTEXT => {
                    self.ctx = Context {
                        ipcss: d[0],
                        ipcso: d[1],
                        ipcse: u16::from_le_bytes([d[2], d[3]]),
                        tucss: d[4],
                        tucso: d[5],
                        tucse: u16::from_le_bytes([d[6], d[7]]),
                    };
                    return;
                }
                DTYP_DATA => {
                    let len = (u32::from_le_bytes([d[8], d[9], d[10], d[11]]) & 0xf_ffff) as usize;
                    if !self.started {
                        let popts = d[13];
                        self.checksum = Checksum::Offload {
                            ip: popts & POPTS_IXSM != 0,
                            l4: popts & POPTS_TXSM != 0,
                        };
                    }
                    if cmd & CMD_TSE != 0 {
                        self.drop.get_or_insert(Drop::Unsupported);
                    }
                    self.start(cmd, special);
                    self.append(addr, len, env.dma);
                }
                _ => {
                    self.start(cmd, special);
                    self.drop.get_or_insert(Drop::Unsupported);
                }
            }
        }
        if cmd & CMD_EOP != 0 {
            self.finish(env);
        }
    }

    fn start(&mut self, cmd: u8, special: u16) {
        if !self.started {
            self.started = true;
            self.vlan_tag = (cmd & CMD_VLE != 0).then_some(special);
        }
    }

    fn append(&mut self, addr: u64, len: usize, dma: &AddressSpace) {
        if self.drop.is_some() || len == 0 {
            return;
        }
        let old = self.frame.len();
        if old + len > MAX_TX_FRAME {
            self.drop = Some(Drop::Oversized);
            return;
        }
        self.frame.resize(old + len, 0);
        if dma.read(addr, &mut self.frame[old..]).is_err() {
            self.frame.truncate(old);
            self.drop = Some(Drop::Dma);
        }
    }

    fn finish(&mut self, env: &mut TxEnv) {
        match self.drop {
            Some(Drop::Dma) => env.counters.tx_dma_errors += 1,
            Some(Drop::Oversized) => env.counters.tx_oversized += 1,
            Some(Drop::Unsupported) => env.counters.tx_unsupported += 1,
            None => {
                self.insert_checksums();
                if let (Some(tag), true) = (self.vlan_tag, env.vlan) {
                    if self.frame.len() >= 12 {
                        let mut t = [0u8; 4];
                        t[..2].copy_from_slice(&VLAN_TPID.to_be_bytes());
                        t[2..].copy_from_slice(&tag.to_be_bytes());
                        self.frame.splice(12..12, t);
                    }
                }
                match env.backend.send(&self.frame) {
                    Ok(()) => count_sent(&self.frame, env),
                    Err(_) => env.counters.tx_backend_errors += 1,
                }
            }
        }
        self.frame.clear();
        self.started = false;
        self.checksum = Checksum::None;
        self.vlan_tag = None;
        self.drop = None;
    }

    fn insert_checksums(&mut self) {
        let f = &mut self.frame;
        match self.checksum {
            Checksum::None => {}
            Checksum::Legacy { css, cso } => insert_checksum(f, css.into(), cso.into(), 0),
            Checksum::Offload { ip, l4 } => {
                let c = self.ctx;
                // The IP header first: a TCP/UDP checksum never covers it.
                if ip {
                    insert_checksum(f, c.ipcss.into(), c.ipcso.into(), c.ipcse.into());
                }
                if l4 {
                    insert_checksum(f, c.tucss.into(), c.tucso.into(), c.tucse.into());
                }
            }
        }
    }
}

fn count_sent(frame: &[u8], env: &mut TxEnv) {
    env.counters.tx_frames += 1;
    let wire = frame.len() as u64 + 4;
    let s = &mut *env.stats;
    s.add(stat::GPTC, 1);
    s.add(stat::TPT, 1);
    s.add64(stat::GOTCL, wire);
    s.add64(stat::TOTL, wire);
    if wire <= 64 {
        s.add(stat::PTC64, 1);
    }
    match frame.first() {
        Some(0xff) if frame[..6] == [0xff; 6] => s.add(stat::BPTC, 1),
        Some(b) if b & 1 != 0 => s.add(stat::MPTC, 1),
        _ => {}
    }
}

/// The Internet checksum of `frame[start..=end]` (`end` 0: to the end of the frame) stored at
/// `offset`; offsets outside the frame leave it as it is.
fn insert_checksum(frame: &mut [u8], start: usize, offset: usize, end: usize) {
    let stop = if end == 0 {
        frame.len()
    } else {
        (end + 1).min(frame.len())
    };
    if start >= stop || offset + 2 > frame.len() {
        return;
    }
    let sum = internet_checksum(&frame[start..stop]);
    frame[offset..offset + 2].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071: the ones' complement of the ones' complement sum of big-endian 16-bit words.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = data
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // An odd tail is padded with zero.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
    }

    #[test]
    fn a_stored_checksum_verifies() {
        let mut f = vec![0u8; 60];
        for (i, b) in f.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        f[24] = 0;
        f[25] = 0;
        insert_checksum(&mut f, 14, 24, 33);
        assert_eq!(internet_checksum(&f[14..34]), 0);
        // Offsets past the frame are ignored.
        let before = f.clone();
        insert_checksum(&mut f, 14, 59, 0);
        insert_checksum(&mut f, 70, 20, 0);
        assert_eq!(f, before);
    }
}
