//! The 82540EM's register file and the state behind it: reset, the EEPROM and PHY, interrupt
//! cause and mask, the TX doorbell and frame reception. Guest accesses arrive here from the
//! vCPU thread (BAR0), received frames from the RX thread; the device lock serialises both.

use std::sync::Arc;

use iommu::AddressSpace;

use super::backend::FrameBackend;
use super::eeprom::Eeprom;
use super::phy::Phy;
use super::regs::*;
use super::ring::{Ring, DESC_BYTES};
use super::rx::{self, Cast, RxError, FCS_BYTES, MAX_LONG_FRAME, MAX_STANDARD_FRAME, MIN_FRAME};
use super::stats::{Counters, Stats};
use super::tx::{Tx, TxEnv};

/// The device's interrupt output: asserted while any unmasked cause is pending.
pub trait InterruptLine: Send + Sync {
    fn set_level(&self, asserted: bool);
}

const TX_RING: [u64; 5] = [TDBAL, TDBAH, TDLEN, TDH, TDT];
const RX_RING: [u64; 5] = [RDBAL, RDBAH, RDLEN, RDH, RDT];

pub struct Nic {
    /// Plain storage for every register without behaviour of its own (TIPG, TIDV, FCAL,
    /// RXCSUM...), and the ring registers the TX and RX paths read.
    regs: Vec<u32>,
    mac: [u8; 6],
    eeprom: Eeprom,
    phy: Phy,
    icr: u32,
    ims: u32,
    irq: Option<Arc<dyn InterruptLine>>,
    irq_asserted: bool,
    tx: Tx,
    stats: Stats,
    counters: Counters,
    dma: Arc<AddressSpace>,
    backend: Arc<dyn FrameBackend>,
    /// Reused for received frames that need padding or an FCS.
    rx_buf: Vec<u8>,
}

impl Nic {
    pub fn new(mac: [u8; 6], dma: Arc<AddressSpace>, backend: Arc<dyn FrameBackend>) -> Nic {
        let mut nic = Nic {
            regs: vec![0; (BAR0_SIZE / 4) as usize],
            mac,
            eeprom: Eeprom::new(mac),
            phy: Phy::new(),
            icr: 0,
            ims: 0,
            irq: None,
            irq_asserted: false,
            tx: Tx::new(),
            stats: Stats::new(),
            counters: Counters::default(),
            dma,
            backend,
            rx_buf: Vec::with_capacity(2048),
        };
        nic.reset();
        nic
    }

    pub fn set_interrupt_line(&mut self, line: Arc<dyn InterruptLine>) {
        self.irq = Some(line);
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn backend(&self) -> Arc<dyn FrameBackend> {
        self.backend.clone()
    }

    /// Power-on and CTRL.RST state: registers cleared, the MAC loaded from the EEPROM into
    /// receive address 0, the link up.
    fn reset(&mut self) {
        self.regs.fill(0);
        self.set(CTRL, CTRL_SLU);
        self.set(PBA, PBA_DEFAULT);
        let [a, b, c, d, e, f] = self.mac;
        self.set(RA, u32::from_le_bytes([a, b, c, d]));
        self.set(RA + 4, u32::from(u16::from_le_bytes([e, f])) | RAH_AV);
        self.eeprom = Eeprom::new(self.mac);
        self.phy = Phy::new();
        self.icr = 0;
        self.ims = 0;
        self.tx.reset();
        self.stats = Stats::new();
        self.update_irq();
    }

    fn get(&self, offset: u64) -> u32 {
        self.regs[(offset / 4) as usize]
    }

    fn set(&mut self, offset: u64, value: u32) {
        self.regs[(offset / 4) as usize] = value;
    }

    /// A 32-bit read at a dword-aligned `offset` inside BAR0.
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset {
            STATUS => STATUS_FD | STATUS_LU | STATUS_SPEED_1000 | STATUS_ASDV_1000,
            EECD => self.eeprom.read_eecd(),
            ICR => {
                // Read-to-clear: the driver acknowledges everything it saw in one read.
                let v = std::mem::take(&mut self.icr);
                self.update_irq();
                v
            }
            IMS => self.ims,
            ICS | IMC => 0,
            o if Stats::contains(o) => self.stats.read_and_clear(o),
            o if o < BAR0_SIZE => self.get(o),
            _ => 0,
        }
    }

    /// A 32-bit write at a dword-aligned `offset` inside BAR0.
    pub fn write(&mut self, offset: u64, value: u32) {
        match offset {
            CTRL => {
                if value & CTRL_RST != 0 {
                    self.reset();
                    return;
                }
                let link_set = value & !self.get(CTRL) & CTRL_SLU != 0;
                // PHY reset completes at once.
                self.set(CTRL, value & !CTRL_PHY_RST);
                if link_set {
                    // The link is always up: setting SLU is a link status change to report.
                    self.raise(ICR_LSC);
                }
            }
            STATUS => {}
            EECD => self.eeprom.write_eecd(value),
            EERD => {
                let v = self.eeprom.eerd(value);
                self.set(EERD, v);
            }
            MDIC => {
                let v = self.phy.mdic(value);
                self.set(MDIC, v);
            }
            ICR => {
                self.icr &= !value;
                self.update_irq();
            }
            ICS => self.raise(value),
            IMS => {
                self.ims |= value & ICR_VALID;
                self.update_irq();
            }
            IMC => {
                self.ims &= !value;
                self.update_irq();
            }
            TDLEN | RDLEN => self.set(offset, value & RING_LEN_MASK),
            TDBAL | RDBAL => self.set(offset, value & !0xf),
            TDH | RDH | RDT => self.set(offset, value & RING_INDEX_MASK),
            TDT => {
                self.set(TDT, value & RING_INDEX_MASK);
                self.transmit();
            }
            TCTL => {
                self.set(TCTL, value);
                self.transmit();
            }
            o if Stats::contains(o) => {}
            o if o < BAR0_SIZE => self.set(o, value),
            _ => {}
        }
    }

    fn ring(&self, [bal, bah, len, head, tail]: [u64; 5]) -> Ring {
        Ring {
            base: u64::from(self.get(bah)) << 32 | u64::from(self.get(bal)),
            count: (u64::from(self.get(len)) / DESC_BYTES) as u32,
            head: self.get(head),
            tail: self.get(tail),
        }
    }

    /// Runs the TX ring up to TDT (the doorbell's work, on the vCPU thread).
    fn transmit(&mut self) {
        if self.get(TCTL) & TCTL_EN == 0 {
            return;
        }
        let mut ring = self.ring(TX_RING);
        if ring.head == ring.tail {
            return;
        }
        if !ring.is_valid() {
            self.counters.ring_errors += 1;
            return;
        }
        let mut env = TxEnv {
            dma: &self.dma,
            backend: self.backend.as_ref(),
            vlan: self.get(CTRL) & CTRL_VME != 0,
            stats: &mut self.stats,
            counters: &mut self.counters,
        };
        let done = self.tx.process(&mut ring, &mut env);
        self.set(TDH, ring.head);
        let mut causes = 0;
        if done.written_back {
            causes |= ICR_TXDW;
        }
        if done.emptied {
            causes |= ICR_TXQE;
        }
        self.raise(causes);
    }

    /// Takes one frame (without FCS) from the backend into the RX ring, or drops and counts
    /// it. Returns whether it was delivered.
    pub fn receive(&mut self, frame: &[u8]) -> bool {
        let rctl = self.get(RCTL);
        if rctl & RCTL_EN == 0 {
            self.counters.rx_disabled += 1;
            return false;
        }
        let wire = frame.len().max(MIN_FRAME) + FCS_BYTES;
        let limit = if rctl & RCTL_LPE != 0 {
            MAX_LONG_FRAME
        } else {
            MAX_STANDARD_FRAME
        };
        if wire > limit {
            self.counters.rx_oversized += 1;
            self.stats.add(stat::ROC, 1);
            return false;
        }
        // Runts are padded to the wire minimum, so every frame has its MACs.
        let mut dst = [0u8; 6];
        for (d, s) in dst.iter_mut().zip(frame) {
            *d = *s;
        }
        let Some(cast) = rx::filter(rctl, dst, |o| self.get(o)) else {
            self.counters.rx_filtered += 1;
            return false;
        };
        let mut ring = self.ring(RX_RING);
        if !ring.is_valid() {
            self.counters.ring_errors += 1;
            self.no_descriptor();
            return false;
        }
        // Pad short frames; with SECRC clear the driver expects the FCS in the buffer.
        let mut buf = std::mem::take(&mut self.rx_buf);
        buf.clear();
        buf.extend_from_slice(frame);
        buf.resize(frame.len().max(MIN_FRAME), 0);
        if rctl & RCTL_SECRC == 0 {
            let fcs = crc32fast::hash(&buf);
            buf.extend_from_slice(&fcs.to_le_bytes());
        }
        let result = rx::deliver(&mut ring, &self.dma, &buf, rx::buffer_size(rctl));
        self.rx_buf = buf;
        match result {
            Ok(d) => {
                self.set(RDH, ring.head);
                if d.buffer_error {
                    self.counters.rx_dma_errors += 1;
                    return false;
                }
                self.count_received(wire, cast);
                let mut causes = ICR_RXT0;
                // RDMTS: the free share falls to 1/2, 1/4 or 1/8 of the ring.
                let rdmts = (rctl >> RCTL_RDMTS_SHIFT) & 3;
                if rdmts < 3 && ring.owned() <= ring.count >> (rdmts + 1) {
                    causes |= ICR_RXDMT0;
                }
                self.raise(causes);
                true
            }
            Err(RxError::NoDescriptor) => {
                self.no_descriptor();
                false
            }
            Err(RxError::Ring) => {
                self.counters.rx_dma_errors += 1;
                false
            }
        }
    }

    fn no_descriptor(&mut self) {
        self.counters.rx_no_descriptor += 1;
        self.stats.add(stat::RNBC, 1);
        self.stats.add(stat::MPC, 1);
        self.raise(ICR_RXO);
    }

    fn count_received(&mut self, wire: usize, cast: Cast) {
        self.counters.rx_frames += 1;
        let s = &mut self.stats;
        s.add(stat::GPRC, 1);
        s.add(stat::TPR, 1);
        s.add64(stat::GORCL, wire as u64);
        s.add64(stat::TORL, wire as u64);
        if wire <= 64 {
            s.add(stat::PRC64, 1);
        }
        match cast {
            Cast::Broadcast => s.add(stat::BPRC, 1),
            Cast::Multicast => s.add(stat::MPRC, 1),
            Cast::Unicast => {}
        }
    }

    fn raise(&mut self, causes: u32) {
        self.icr |= causes & ICR_VALID;
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let asserted = self.icr & self.ims != 0;
        if asserted != self.irq_asserted {
            self.irq_asserted = asserted;
            if let Some(irq) = &self.irq {
                irq.set_level(asserted);
            }
        }
    }
}
