//! The model against guest memory in a test address space, with a backend double that records
//! what was sent.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iommu::{AddressSpace, DmaRegion, Perm};
use vmm_sys_util::eventfd::EventFd;

use super::regs::*;
use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MEM: u64 = 0x10_0000;
const MEM_LEN: u64 = 0x10_0000;
const TX_RING: u64 = MEM;
const RX_RING: u64 = MEM + 0x1000;
const TX_BUFS: u64 = MEM + 0x1_0000;
const RX_BUFS: u64 = MEM + 0x8_0000;
const BUF: u64 = 0x800;
/// Not guest memory.
const HOLE: u64 = 0x4000_0000;

/// Records sent frames; can be told to refuse them.
struct Recorder {
    sent: Mutex<Vec<Vec<u8>>>,
    refuse: bool,
    ready: EventFd,
}

impl Recorder {
    fn new(refuse: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            sent: Mutex::new(Vec::new()),
            refuse,
            ready: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        })
    }

    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl FrameBackend for Recorder {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        if self.refuse {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        self.sent.lock().unwrap().push(frame.to_vec());
        Ok(())
    }

    fn recv(&self, _buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }

    fn rx_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

/// Records every level change of the interrupt line.
#[derive(Default)]
struct Line(Mutex<Vec<bool>>);

impl InterruptLine for Line {
    fn set_level(&self, asserted: bool) {
        self.0.lock().unwrap().push(asserted);
    }
}

fn guest_memory() -> Arc<AddressSpace> {
    // Leaked: the tests' guest RAM lives as long as the test process.
    let mem: &'static mut [u8] = vec![0u8; MEM_LEN as usize].leak();
    let mut space = AddressSpace::new();
    // SAFETY: `mem` is never freed and is reached only through this address space.
    let region = unsafe { DmaRegion::new(MEM, MEM_LEN, mem.as_mut_ptr(), Perm::RW, Arc::new(())) };
    space.map(region).unwrap();
    Arc::new(space)
}

struct Guest {
    nic: Nic,
    dma: Arc<AddressSpace>,
    backend: Arc<Recorder>,
    line: Arc<Line>,
}

fn guest() -> Guest {
    guest_with(Recorder::new(false))
}

fn guest_with(backend: Arc<Recorder>) -> Guest {
    let dma = guest_memory();
    let mut nic = Nic::new(MAC, dma.clone(), backend.clone());
    let line = Arc::new(Line::default());
    nic.set_interrupt_line(line.clone());
    Guest {
        nic,
        dma,
        backend,
        line,
    }
}

fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&MAC);
    for (i, b) in f[12..].iter_mut().enumerate() {
        *b = tag.wrapping_add(i as u8);
    }
    f
}

impl Guest {
    fn tx_ring(&mut self, count: u32) {
        self.nic.write(TDBAL, TX_RING as u32);
        self.nic.write(TDBAH, 0);
        self.nic.write(TDLEN, count * 16);
        self.nic.write(TDH, 0);
        self.nic.write(TDT, 0);
        self.nic.write(TCTL, TCTL_EN);
    }

    /// A legacy descriptor at `index` for `len` bytes at `addr`.
    fn tx_desc(&self, index: u32, addr: u64, len: u16, cmd: u8) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..10].copy_from_slice(&len.to_le_bytes());
        d[11] = cmd;
        self.dma.write(TX_RING + 16 * u64::from(index), &d).unwrap();
    }

    /// Copies `f` into TX buffer `index` and describes it as a whole frame.
    fn queue(&self, index: u32, f: &[u8], cmd: u8) {
        let addr = TX_BUFS + BUF * u64::from(index);
        self.dma.write(addr, f).unwrap();
        self.tx_desc(index, addr, f.len() as u16, cmd);
    }

    fn tx_status(&self, index: u32) -> u8 {
        let mut b = [0u8];
        self.dma
            .read(TX_RING + 16 * u64::from(index) + 12, &mut b)
            .unwrap();
        b[0]
    }

    /// An RX ring of `count` descriptors with one buffer each, `owned` of them given to the
    /// device.
    fn rx_ring(&mut self, count: u32, owned: u32, rctl: u32) {
        for i in 0..count {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&(RX_BUFS + BUF * u64::from(i)).to_le_bytes());
            self.dma.write(RX_RING + 16 * u64::from(i), &d).unwrap();
        }
        self.nic.write(RDBAL, RX_RING as u32);
        self.nic.write(RDBAH, 0);
        self.nic.write(RDLEN, count * 16);
        self.nic.write(RDH, 0);
        self.nic.write(RDT, owned);
        self.nic.write(RCTL, rctl);
    }

    /// (length, status, errors) of RX descriptor `index`.
    fn rx_desc(&self, index: u32) -> (u16, u8, u8) {
        let mut d = [0u8; 16];
        self.dma
            .read(RX_RING + 16 * u64::from(index), &mut d)
            .unwrap();
        (u16::from_le_bytes([d[8], d[9]]), d[12], d[13])
    }

    fn rx_buf(&self, index: u32, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.dma
            .read(RX_BUFS + BUF * u64::from(index), &mut b)
            .unwrap();
        b
    }
}

const CMD_EOP: u8 = 0x01;
const CMD_IFCS: u8 = 0x02;
const CMD_RS: u8 = 0x08;
const DD: u8 = 0x01;
const EOP: u8 = 0x02;
const RXE: u8 = 0x80;
const RX_ON: u32 = RCTL_EN | RCTL_BAM | RCTL_SECRC;

#[test]
fn reset_loads_the_mac_and_brings_the_link_up() {
    let mut g = guest();
    assert_eq!(g.nic.read(RA), 0x1200_5452);
    assert_eq!(g.nic.read(RA + 4), 0x5634 | RAH_AV);
    assert_ne!(g.nic.read(STATUS) & STATUS_LU, 0);
    g.nic.write(EERD, 2 << EERD_ADDR_SHIFT | EERD_START);
    let eerd = g.nic.read(EERD);
    assert_ne!(eerd & EERD_DONE, 0);
    assert_eq!(eerd >> EERD_DATA_SHIFT, 0x5634);
    // Registers without behaviour keep what is written (TIPG).
    g.nic.write(0x0410, 0x0060_200a);
    assert_eq!(g.nic.read(0x0410), 0x0060_200a);
    g.nic.write(IMS, ICR_RXT0);
    g.tx_ring(8);
    g.nic.write(CTRL, CTRL_RST | CTRL_SLU);
    assert_eq!(g.nic.read(CTRL) & CTRL_RST, 0, "RST clears itself");
    assert_eq!(g.nic.read(IMS), 0);
    assert_eq!(g.nic.read(TDLEN), 0);
    assert_eq!(g.nic.read(TCTL), 0);
    assert_eq!(g.nic.read(RA + 4), 0x5634 | RAH_AV);
}

#[test]
fn icr_is_read_to_clear_and_the_line_follows_the_mask() {
    let mut g = guest();
    g.nic.write(ICS, ICR_LSC | ICR_RXT0);
    assert!(
        g.line.0.lock().unwrap().is_empty(),
        "masked causes stay quiet"
    );
    g.nic.write(IMS, ICR_RXT0);
    assert_eq!(g.nic.read(IMS), ICR_RXT0);
    assert_eq!(*g.line.0.lock().unwrap(), [true]);
    g.nic.write(IMC, ICR_RXT0);
    assert_eq!(*g.line.0.lock().unwrap(), [true, false]);
    g.nic.write(IMS, ICR_RXT0 | ICR_LSC);
    assert_eq!(g.nic.read(ICR), ICR_LSC | ICR_RXT0);
    assert_eq!(g.nic.read(ICR), 0, "a read clears every cause");
    assert_eq!(*g.line.0.lock().unwrap(), [true, false, true, false]);
    // Writing 1s also clears.
    g.nic.write(ICS, ICR_TXDW | ICR_TXQE);
    g.nic.write(ICR, ICR_TXDW);
    assert_eq!(g.nic.read(ICR), ICR_TXQE);
}

#[test]
fn tx_sends_frames_writes_dd_back_and_wraps() {
    let mut g = guest();
    g.tx_ring(8);
    let frames: Vec<_> = (0..12).map(|i| frame(60 + i, i as u8)).collect();
    // Five frames, RS on all but the third.
    for (i, f) in frames[..5].iter().enumerate() {
        let rs = if i == 2 { 0 } else { CMD_RS };
        g.queue(i as u32, f, CMD_EOP | CMD_IFCS | rs);
    }
    g.nic.write(TDT, 5);
    assert_eq!(g.nic.read(TDH), 5);
    assert_eq!(g.backend.take(), frames[..5]);
    assert_eq!(g.tx_status(0) & DD, DD);
    assert_eq!(g.tx_status(2) & DD, 0, "no RS, no write-back");
    assert_eq!(g.nic.read(ICR), ICR_TXDW | ICR_TXQE);
    // Seven more: across the end of the ring.
    for (n, f) in frames[5..].iter().enumerate() {
        g.queue((5 + n as u32) % 8, f, CMD_EOP | CMD_RS);
    }
    g.nic.write(TDT, 4);
    assert_eq!(g.nic.read(TDH), 4);
    assert_eq!(g.backend.take(), frames[5..]);
    assert_eq!(g.nic.read(stat::GPTC), 12);
    assert_eq!(g.nic.read(stat::GPTC), 0, "statistics clear on read");
    assert_eq!(g.nic.read(stat::BPTC), 12);
    assert_eq!(g.nic.counters().tx_frames, 12);
}

#[test]
fn tx_assembles_descriptors_and_inserts_checksums() {
    let mut g = guest();
    g.tx_ring(8);
    // Ethernet + IPv4 (20 bytes at 14) + UDP (8 bytes at 34) + payload.
    let mut f = frame(100, 3);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[24..26].copy_from_slice(&[0, 0]); // IP checksum field
    f[40..42].copy_from_slice(&[0x12, 0x34]); // pseudo-header sum the driver seeds
                                              // Context: IP 14..=33, sum at 24; UDP from 34 to the end, sum at 40.
    let mut ctx = [0u8; 16];
    ctx[0] = 14;
    ctx[1] = 24;
    ctx[2..4].copy_from_slice(&33u16.to_le_bytes());
    ctx[4] = 34;
    ctx[5] = 40;
    ctx[11] = 0x20 | CMD_RS; // DEXT, DTYP 0
    g.dma.write(TX_RING, &ctx).unwrap();
    // Two data descriptors: 40 + 60 bytes, POPTS IXSM | TXSM on the first.
    for (i, (start, len)) in [(0usize, 40usize), (40, 60)].into_iter().enumerate() {
        let addr = TX_BUFS + BUF * i as u64;
        g.dma.write(addr, &f[start..start + len]).unwrap();
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        let lower = len as u32 | 1 << 20 | u32::from(0x20 | CMD_RS) << 24;
        d[8..12].copy_from_slice(&lower.to_le_bytes());
        d[11] |= if i == 1 { CMD_EOP } else { 0 };
        d[13] = 0x3;
        g.dma.write(TX_RING + 16 * (i as u64 + 1), &d).unwrap();
    }
    g.nic.write(TDT, 3);
    let sent = g.backend.take();
    assert_eq!(sent.len(), 1);
    let s = &sent[0];
    assert_eq!(s.len(), 100);
    assert_eq!(tx::internet_checksum(&s[14..34]), 0, "IP header checksum");
    let mut udp = s[34..].to_vec();
    let seeded = f[34..].to_vec();
    let stored = [udp[6], udp[7]];
    udp[6..8].copy_from_slice(&[0x12, 0x34]);
    assert_eq!(udp, seeded, "only the checksum field changed");
    assert_eq!(
        u16::from_be_bytes(stored),
        tx::internet_checksum(&seeded),
        "UDP checksum over the seeded header"
    );
    assert_eq!(
        g.tx_status(0) & DD,
        DD,
        "context descriptors are written back"
    );
}

#[test]
fn tx_bad_addresses_fail_their_frame_only() {
    let mut g = guest();
    g.tx_ring(8);
    g.tx_desc(0, HOLE, 64, CMD_EOP | CMD_RS);
    g.queue(1, &frame(64, 1), CMD_EOP | CMD_RS);
    // A frame whose first half is fine and second half is not.
    g.tx_desc(2, TX_BUFS, 32, CMD_RS);
    g.tx_desc(3, u64::MAX - 8, 32, CMD_EOP | CMD_RS);
    g.queue(4, &frame(64, 4), CMD_EOP | CMD_RS);
    g.nic.write(TDT, 5);
    assert_eq!(g.backend.take(), [frame(64, 1), frame(64, 4)]);
    assert_eq!(g.nic.counters().tx_dma_errors, 2);
    assert_eq!(
        g.tx_status(0) & DD,
        DD,
        "a failed descriptor is still completed"
    );
    assert_eq!(g.nic.read(TDH), 5);

    // A ring that is not guest memory: nothing happens, TDH stays.
    g.nic.write(TDBAL, HOLE as u32);
    g.nic.write(TDT, 6);
    assert_eq!(g.nic.read(TDH), 5);
    assert_eq!(g.nic.counters().tx_dma_errors, 3);
    // A tail past the ring's end is refused.
    g.nic.write(TDBAL, TX_RING as u32);
    g.nic.write(TDT, 9);
    assert_eq!(g.nic.counters().ring_errors, 1);
    assert_eq!(g.nic.read(TDH), 5);
}

#[test]
fn tx_refuses_tso_oversized_frames_and_counts_backend_errors() {
    let mut g = guest();
    g.tx_ring(8);
    // Data descriptor with TSE.
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&TX_BUFS.to_le_bytes());
    let lower = 64u32 | 1 << 20 | u32::from(0x20 | 0x04 | CMD_EOP | CMD_RS) << 24;
    d[8..12].copy_from_slice(&lower.to_le_bytes());
    g.dma.write(TX_RING, &d).unwrap();
    // One legacy descriptor longer than any frame.
    g.tx_desc(1, TX_BUFS, 20_000, CMD_EOP | CMD_RS);
    g.nic.write(TDT, 2);
    assert!(g.backend.take().is_empty());
    let c = g.nic.counters();
    assert_eq!((c.tx_unsupported, c.tx_oversized), (1, 1));

    let mut g = guest_with(Recorder::new(true));
    g.tx_ring(8);
    g.queue(0, &frame(64, 0), CMD_EOP | CMD_RS);
    g.nic.write(TDT, 1);
    assert_eq!(g.nic.counters().tx_backend_errors, 1);
    assert_eq!(g.nic.read(TDH), 1);
}

#[test]
fn rx_fills_descriptors_wraps_and_drops_without_one() {
    let mut g = guest();
    g.rx_ring(8, 7, RX_ON);
    g.nic.write(IMS, ICR_RXT0 | ICR_RXO);
    for i in 0..7u8 {
        assert!(g.nic.receive(&frame(64 + usize::from(i), i)));
    }
    assert_eq!(g.nic.read(RDH), 7);
    assert_eq!(g.rx_desc(3), (67, DD | EOP | 0x04, 0));
    assert_eq!(g.rx_buf(3, 67), frame(67, 3));
    // The ring is full: dropped, counted, RXO raised.
    assert!(!g.nic.receive(&frame(64, 9)));
    assert_eq!(g.nic.counters().rx_no_descriptor, 1);
    assert_eq!(g.nic.read(stat::RNBC), 1);
    assert_ne!(g.nic.read(ICR) & ICR_RXO, 0);
    // The guest hands back four descriptors: delivery wraps to 0.
    g.nic.write(RDT, 3);
    for i in 0..4u8 {
        assert!(g.nic.receive(&frame(100, 10 + i)));
    }
    assert_eq!(g.nic.read(RDH), 3);
    assert_eq!(g.rx_buf(7, 100), frame(100, 10));
    assert_eq!(g.rx_buf(0, 100), frame(100, 11));
    assert_eq!(g.nic.read(stat::GPRC), 11);
    assert_eq!(g.nic.read(stat::BPRC), 11);
}

#[test]
fn rx_pads_runts_and_appends_the_fcs_unless_stripped() {
    let mut g = guest();
    g.rx_ring(8, 7, RCTL_EN | RCTL_BAM);
    let f = frame(42, 1);
    assert!(g.nic.receive(&f));
    let (len, _, _) = g.rx_desc(0);
    assert_eq!(len, 64, "padded to 60, plus FCS");
    let got = g.rx_buf(0, 64);
    let mut padded = f.clone();
    padded.resize(60, 0);
    assert_eq!(got[..60], padded[..]);
    assert_eq!(got[60..], crc32fast::hash(&padded).to_le_bytes());
}

#[test]
fn rx_filters_by_address() {
    let mut g = guest();
    g.rx_ring(8, 7, RCTL_EN | RCTL_SECRC);
    let mut f = frame(64, 0);
    assert!(!g.nic.receive(&f), "broadcast needs BAM");
    f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    assert!(!g.nic.receive(&f), "another NIC's unicast");
    f[..6].copy_from_slice(&MAC);
    assert!(g.nic.receive(&f));
    // Multicast 01:00:5e:00:00:fb with MO = 0 hashes to (0xfb00 >> 4) & 0xfff = 0xfb0.
    f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    assert!(!g.nic.receive(&f));
    g.nic.write(MTA + 4 * (0xfb0 >> 5), 1 << (0xfb0 & 31));
    assert!(g.nic.receive(&f));
    assert_eq!(g.nic.counters().rx_filtered, 3);
    assert_eq!(g.nic.read(stat::MPRC), 1);
}

#[test]
fn rx_oversized_frames_are_dropped_or_spread_with_lpe() {
    let mut g = guest();
    g.rx_ring(16, 15, RX_ON);
    assert!(!g.nic.receive(&frame(1600, 0)));
    assert_eq!(g.nic.counters().rx_oversized, 1);
    assert_eq!(g.nic.read(stat::ROC), 1);
    assert!(g.nic.receive(&frame(1514, 0)), "1514 + FCS is standard");
    // Long packets on, 256-byte buffers: 1600 bytes take seven descriptors.
    g.nic.write(RCTL, RX_ON | RCTL_LPE | 3 << RCTL_BSIZE_SHIFT);
    let f = frame(1600, 7);
    assert!(g.nic.receive(&f));
    assert_eq!(g.nic.read(RDH), 8);
    let mut got = Vec::new();
    for i in 1..8 {
        let (len, status, _) = g.rx_desc(i);
        assert_eq!(status & EOP != 0, i == 7);
        got.extend(g.rx_buf(i, len.into()));
    }
    assert_eq!(got, f);
    // Too few descriptors left for another: dropped whole.
    g.nic.write(RDT, 14);
    assert!(!g.nic.receive(&f));
    assert_eq!(g.nic.read(RDH), 8);
}

#[test]
fn rx_bad_buffer_is_marked_and_counted() {
    let mut g = guest();
    g.rx_ring(8, 7, RX_ON);
    let mut d = [0u8; 8];
    d.copy_from_slice(&HOLE.to_le_bytes());
    g.dma.write(RX_RING + 16, &d).unwrap();
    assert!(g.nic.receive(&frame(64, 0)));
    assert!(!g.nic.receive(&frame(64, 1)));
    assert!(g.nic.receive(&frame(64, 2)));
    assert_eq!(g.rx_desc(1).2, RXE);
    assert_eq!(g.rx_desc(1).1 & (DD | EOP), DD | EOP);
    assert_eq!(g.rx_buf(2, 64), frame(64, 2));
    assert_eq!(g.nic.counters().rx_dma_errors, 1);
    // A ring that is not guest memory: the frame is dropped, RDH stays.
    g.nic.write(RDBAL, HOLE as u32);
    assert!(!g.nic.receive(&frame(64, 3)));
    assert_eq!(g.nic.read(RDH), 3);
    // Receiver off.
    g.nic.write(RCTL, 0);
    assert!(!g.nic.receive(&frame(64, 4)));
    assert_eq!(g.nic.counters().rx_disabled, 1);
}

#[test]
fn the_device_reflects_through_its_rx_thread() {
    let dma = guest_memory();
    let nic = Nic::new(MAC, dma.clone(), Arc::new(Reflector::new().unwrap()));
    let mut dev = E1000Device::new(nic, None).unwrap();
    let w = |dev: &mut E1000Device, off: u64, v: u32| dev.bar_write(0, off, &v.to_le_bytes());
    let mut g = Guest {
        nic: Nic::new(MAC, dma.clone(), Recorder::new(false)),
        dma,
        backend: Recorder::new(false),
        line: Arc::default(),
    };
    // Lay out rings in memory with the scratch model, then program the device's registers.
    g.rx_ring(8, 7, RX_ON);
    for (off, v) in [
        (RDBAL, RX_RING as u32),
        (RDLEN, 8 * 16),
        (RDT, 7),
        (RCTL, RX_ON),
        (TDBAL, TX_RING as u32),
        (TDLEN, 8 * 16),
        (TCTL, TCTL_EN),
    ] {
        w(&mut dev, off, v);
    }
    let mut f = frame(64, 5);
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    g.queue(0, &f, CMD_EOP | CMD_RS);
    w(&mut dev, TDT, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.rx_desc(0).1 & DD == 0 {
        assert!(Instant::now() < deadline, "no reflection arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut back = f.clone();
    iopath_mailbox::net::reflect(&mut back);
    assert_eq!(g.rx_buf(0, 64), back);
    assert_eq!(
        dev.exit_counter()
            .load(std::sync::atomic::Ordering::Relaxed),
        8
    );
    let mut d = [0u8; 4];
    dev.bar_read(0, RDH, &mut d);
    assert_eq!(u32::from_le_bytes(d), 1);
    assert_eq!(dev.nic().lock().unwrap().counters().rx_frames, 1);
}
