//! A polled e1000 (Intel 82540EM) driver: one TX and one RX ring of legacy descriptors in
//! scratch memory, interrupts masked. TX buffers are reclaimed by their DD bit; RX buffers go
//! back to the device with one RDT write per `recv` call, and queued frames reach it with one
//! TDT write per `flush`: each of those writes is the exit the emulated path pays.

mod regs;

use core::sync::atomic::{fence, Ordering};

use iopath_mailbox::error;

use self::regs::*;
use crate::clock;
use crate::log;
use crate::net::device::{NetConfig, NetQueue};
use crate::pci::PciDevice;
use crate::scratch::{Scratch, PAGE};

/// Descriptors per ring (a multiple of 8: ring lengths are multiples of 128 bytes). One TX
/// entry stays empty so that a full ring differs from an empty one.
const ENTRIES: u16 = 256;
/// Bytes per buffer; RCTL.BSIZE 0 matches.
const BUF_BYTES: u64 = 2048;
const RESET_TIMEOUT_MS: u64 = 100;

pub struct E1000 {
    regs: Regs,
    mac: [u8; 6],
    tx_ring: u64,
    tx_bufs: u64,
    /// Next TX descriptor to fill.
    tx_next: u16,
    /// Oldest TX descriptor the device may still own.
    tx_clean: u16,
    /// The TDT value the device was last told.
    tx_published: u16,
    rx_ring: u64,
    rx_bufs: u64,
    /// Next RX descriptor the device fills.
    rx_next: u16,
    /// Dropping the rest of a frame that did not fit one buffer.
    rx_discarding: bool,
}

fn next(i: u16) -> u16 {
    (i + 1) % ENTRIES
}

impl E1000 {
    /// Resets the NIC behind `dev`, reads its MAC from the EEPROM and starts both rings.
    pub fn open(dev: &PciDevice, scratch: &mut Scratch, cfg: &NetConfig) -> Result<E1000, u32> {
        if u64::from(cfg.max_frame) > BUF_BYTES || cfg.tx_frames >= ENTRIES {
            log!(
                "e1000: {} frames of {} bytes do not fit the driver's rings",
                cfg.tx_frames,
                cfg.max_frame
            );
            return Err(error::BAD_PARAMETER);
        }
        dev.enable_mmio_dma();
        let regs = Regs(dev.mmio_bar(0, BAR0_SIZE)?);
        let ring_bytes = u64::from(ENTRIES) * DESC_BYTES;
        let bufs_bytes = u64::from(ENTRIES) * BUF_BYTES;
        let (Some(tx_ring), Some(rx_ring), Some(tx_bufs), Some(rx_bufs)) = (
            scratch.alloc_zeroed(ring_bytes, PAGE),
            scratch.alloc_zeroed(ring_bytes, PAGE),
            scratch.alloc(bufs_bytes, PAGE),
            scratch.alloc(bufs_bytes, PAGE),
        ) else {
            log!("e1000: rings do not fit in scratch memory");
            return Err(error::BAD_PARAMETER);
        };

        regs.write(CTRL, CTRL_RST);
        if !clock::wait_until(cfg.tsc_khz, RESET_TIMEOUT_MS, || {
            regs.read(CTRL) & CTRL_RST == 0
        }) {
            log!("e1000 {}: reset did not complete", dev);
            return Err(error::DEVICE_ERROR);
        }
        // No interrupts: mask every cause and drop whatever was pending.
        regs.write(IMC, u32::MAX);
        let _ = regs.read(ICR);
        regs.write(CTRL, CTRL_SLU);
        if regs.read(STATUS) & STATUS_LU == 0 {
            log!("e1000 {}: link down", dev);
            return Err(error::DEVICE_ERROR);
        }
        let mac = read_mac(regs, cfg.tsc_khz).ok_or_else(|| {
            log!("e1000 {}: EEPROM read did not complete", dev);
            error::DEVICE_ERROR
        })?;
        let [a, b, c, d, e, f] = mac;
        regs.write(RAL0, u32::from_le_bytes([a, b, c, d]));
        regs.write(RAH0, u32::from(u16::from_le_bytes([e, f])) | RAH_AV);
        for i in 0..MTA_ENTRIES {
            regs.write(MTA + 4 * i, 0);
        }

        let mut nic = E1000 {
            regs,
            mac,
            tx_ring,
            tx_bufs,
            tx_next: 0,
            tx_clean: 0,
            tx_published: 0,
            rx_ring,
            rx_bufs,
            rx_next: 0,
            rx_discarding: false,
        };
        nic.start_tx(ring_bytes);
        nic.start_rx(ring_bytes);
        log!(
            "e1000 {}: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {} descriptors per ring",
            dev,
            a,
            b,
            c,
            d,
            e,
            f,
            ENTRIES
        );
        Ok(nic)
    }

    fn start_tx(&mut self, ring_bytes: u64) {
        // Each descriptor keeps its own buffer: only length and command change per frame.
        for i in 0..u64::from(ENTRIES) {
            let desc = self.tx_ring + i * DESC_BYTES;
            // SAFETY: `desc` is inside the TX ring this driver allocated; the device does not
            // own it yet (TDT = TDH).
            unsafe { core::ptr::write_volatile(desc as *mut u64, self.tx_bufs + i * BUF_BYTES) };
        }
        let r = self.regs;
        r.write(TDBAL, self.tx_ring as u32);
        r.write(TDBAH, (self.tx_ring >> 32) as u32);
        r.write(TDLEN, ring_bytes as u32);
        r.write(TDH, 0);
        r.write(TDT, 0);
        r.write(TIPG, TIPG_COPPER);
        r.write(TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD_FD);
    }

    fn start_rx(&mut self, ring_bytes: u64) {
        for i in 0..u64::from(ENTRIES) {
            let desc = self.rx_ring + i * DESC_BYTES;
            // SAFETY: as in `start_tx`; the ring was zeroed, so the status bytes read 0.
            unsafe { core::ptr::write_volatile(desc as *mut u64, self.rx_bufs + i * BUF_BYTES) };
        }
        let r = self.regs;
        r.write(RDBAL, self.rx_ring as u32);
        r.write(RDBAH, (self.rx_ring >> 32) as u32);
        r.write(RDLEN, ring_bytes as u32);
        r.write(RDH, 0);
        // Every descriptor but one belongs to the device.
        r.write(RDT, u32::from(ENTRIES - 1));
        r.write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
    }

    fn desc_status(ring: u64, i: u16) -> u64 {
        ring + u64::from(i) * DESC_BYTES + DESC_STATUS
    }

    /// Takes back TX descriptors the device has written back.
    fn reclaim(&mut self) {
        while self.tx_clean != self.tx_next {
            let status = Self::desc_status(self.tx_ring, self.tx_clean);
            // SAFETY: a status byte inside the driver's TX ring; the device writes it.
            if unsafe { core::ptr::read_volatile(status as *const u8) } & STA_DD == 0 {
                break;
            }
            self.tx_clean = next(self.tx_clean);
        }
    }
}

/// Words 0..3 of the EEPROM, through EERD.
fn read_mac(regs: Regs, tsc_khz: u64) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    for (word, pair) in mac.chunks_exact_mut(2).enumerate() {
        regs.write(EERD, (word as u32) << EERD_ADDR_SHIFT | EERD_START);
        let mut v = 0;
        if !clock::wait_until(tsc_khz, RESET_TIMEOUT_MS, || {
            v = regs.read(EERD);
            v & EERD_DONE != 0
        }) {
            return None;
        }
        pair.copy_from_slice(&((v >> EERD_DATA_SHIFT) as u16).to_le_bytes());
    }
    Some(mac)
}

impl NetQueue for E1000 {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        if frame.len() as u64 > BUF_BYTES {
            return false;
        }
        self.reclaim();
        if next(self.tx_next) == self.tx_clean {
            return false;
        }
        let i = u64::from(self.tx_next);
        let buf = self.tx_bufs + i * BUF_BYTES;
        let cmd = TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS;
        // Length (bits 15:0), CSO 0, command (31:24), status 0 (the device sets DD).
        let upper = frame.len() as u64 | u64::from(cmd) << 24;
        // SAFETY: `buf` is this descriptor's 2 KiB buffer and the frame fits it; the device
        // does not own the descriptor (it is past the published tail).
        unsafe {
            core::ptr::copy_nonoverlapping(frame.as_ptr(), buf as *mut u8, frame.len());
            core::ptr::write_volatile((self.tx_ring + i * DESC_BYTES + 8) as *mut u64, upper);
        }
        self.tx_next = next(self.tx_next);
        true
    }

    fn flush(&mut self) {
        if self.tx_published == self.tx_next {
            return;
        }
        // Descriptors and buffers before the doorbell.
        fence(Ordering::Release);
        self.regs.write(TDT, u32::from(self.tx_next));
        self.tx_published = self.tx_next;
    }

    fn recv<F: FnMut(&[u8])>(&mut self, mut f: F) -> usize {
        let mut frames = 0;
        let mut taken = 0;
        while taken < ENTRIES {
            let status_at = Self::desc_status(self.rx_ring, self.rx_next);
            // SAFETY: a status byte inside the driver's RX ring; the device writes it.
            let status = unsafe { core::ptr::read_volatile(status_at as *const u8) };
            if status & STA_DD == 0 {
                break;
            }
            // The rest of the descriptor and the buffer after DD.
            fence(Ordering::Acquire);
            let desc = status_at - DESC_STATUS;
            // SAFETY: length and errors of the same descriptor.
            let (len, errors) = unsafe {
                (
                    core::ptr::read_volatile((desc + 8) as *const u16),
                    core::ptr::read_volatile((desc + 13) as *const u8),
                )
            };
            let eop = status & RX_STA_EOP != 0;
            if eop && !self.rx_discarding && errors == 0 && u64::from(len) <= BUF_BYTES {
                let buf = self.rx_bufs + u64::from(self.rx_next) * BUF_BYTES;
                // SAFETY: the device wrote `len` bytes of this descriptor's buffer and gave it
                // to the driver (DD); it stays the driver's until RDT moves past it.
                f(unsafe { core::slice::from_raw_parts(buf as *const u8, usize::from(len)) });
                frames += 1;
            }
            self.rx_discarding = !eop;
            // SAFETY: the status byte read above, cleared before the device gets it back.
            unsafe { core::ptr::write_volatile(status_at as *mut u8, 0) };
            self.rx_next = next(self.rx_next);
            taken += 1;
        }
        if taken > 0 {
            fence(Ordering::Release);
            // The device may fill up to, not including, the descriptor before `rx_next`.
            self.regs
                .write(RDT, u32::from((self.rx_next + ENTRIES - 1) % ENTRIES));
        }
        frames
    }

    fn log_state(&mut self) {
        let r = self.regs;
        log!(
            "e1000: TDH {} TDT {} (next {}, clean {}), RDH {} RDT {} (next {}), STATUS {:#x}, \
             GPTC {} GPRC {} MPC {} RNBC {}",
            r.read(TDH),
            r.read(TDT),
            self.tx_next,
            self.tx_clean,
            r.read(RDH),
            r.read(RDT),
            self.rx_next,
            r.read(STATUS),
            r.read(GPTC),
            r.read(GPRC),
            r.read(MPC),
            r.read(RNBC)
        );
    }
}
