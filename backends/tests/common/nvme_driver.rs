//! A small polled NVMe driver over a vfio-user client, playing the guest: registers through
//! region messages, queues and buffers in guest RAM (a memfd DMA-mapped at GPA 0), doorbells
//! stored into the BAR0 sparse area the client mmapped. No interrupts.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use vfio_user::Client;

use super::guest_ram::{GuestRam, SharedMap};

pub const BAR0: u32 = 0;
pub const CONFIG: u32 = 7;

pub const CAP: u64 = 0x00;
pub const VS: u64 = 0x08;
pub const CC: u64 = 0x14;
pub const CSTS: u64 = 0x1c;
pub const AQA: u64 = 0x24;
pub const ASQ_REG: u64 = 0x28;
pub const ACQ_REG: u64 = 0x30;
pub const DOORBELL_BASE: u64 = 0x1000;

/// Guest RAM layout (GPA = offset in the memfd).
pub const RAM_SIZE: usize = 0x40000;
pub const ASQ: u64 = 0x0000;
pub const ACQ: u64 = 0x1000;
pub const IO_SQ: u64 = 0x2000;
pub const IO_CQ: u64 = 0x3000;
pub const IDENTIFY_BUF: u64 = 0x4000;
/// 64 KiB of data buffers, then 64 KiB more.
pub const DATA: u64 = 0x10000;
pub const DATA2: u64 = 0x20000;

pub const ADMIN_ENTRIES: u16 = 16;
pub const IO_ENTRIES: u16 = 64;
const PAGE: u64 = 4096;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A completion, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub dw0: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    /// Status Code Type and Status Code, as `(sct << 8) | sc`.
    pub status: u16,
}

impl Completion {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// Generic status: Data Transfer Error.
pub const DATA_TRANSFER_ERROR: u16 = 0x04;

struct Queue {
    base: u64,
    entries: u16,
    /// SQ: tail; CQ: head.
    index: u16,
    /// CQ: the phase tag of entries not yet consumed.
    phase: bool,
}

pub struct Driver {
    pub client: Client,
    pub ram: GuestRam,
    doorbells: SharedMap,
    /// BAR0 offset of the first doorbell in `doorbells`.
    doorbells_at: u64,
    sqs: Vec<Option<Queue>>,
    cqs: Vec<Option<Queue>>,
    next_cid: u16,
}

impl Driver {
    /// Connects, maps the doorbell area and DMA-maps fresh guest RAM at GPA 0.
    pub fn connect(socket: &Path) -> Driver {
        let mut client = Client::new(socket).expect("vfio-user connect");
        let bar0 = client.region(BAR0).expect("BAR0 region");
        let area = *bar0
            .sparse_areas
            .first()
            .expect("BAR0 has a sparse mmap area");
        let fo = bar0
            .file_offset
            .as_ref()
            .expect("BAR0 comes with a file descriptor");
        let doorbells = SharedMap::new(
            fo.file().as_raw_fd(),
            fo.start() + area.offset,
            area.size as usize,
        );
        let ram = GuestRam::new(RAM_SIZE);
        client
            .dma_map(0, 0, RAM_SIZE as u64, ram.file.as_raw_fd())
            .expect("DMA_MAP guest RAM");
        Driver {
            client,
            ram,
            doorbells,
            doorbells_at: area.offset,
            sqs: (0..8).map(|_| None).collect(),
            cqs: (0..8).map(|_| None).collect(),
            next_cid: 0,
        }
    }

    pub fn read32(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.client.region_read(BAR0, offset, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    pub fn read64(&mut self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.client.region_read(BAR0, offset, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    pub fn write32(&mut self, offset: u64, value: u32) {
        self.client
            .region_write(BAR0, offset, &value.to_le_bytes())
            .unwrap();
    }

    pub fn write64(&mut self, offset: u64, value: u64) {
        self.client
            .region_write(BAR0, offset, &value.to_le_bytes())
            .unwrap();
    }

    pub fn config_read32(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.client.region_read(CONFIG, offset, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    /// A doorbell store into the mmapped page: no message.
    fn ring(&self, bar0_offset: u64, value: u32) {
        self.doorbells
            .store_release(bar0_offset - self.doorbells_at, value);
    }

    /// Programs the admin queues, sets CC.EN and waits for CSTS.RDY.
    pub fn enable(&mut self) {
        self.ram.map.write(ASQ, &[0; PAGE as usize]);
        self.ram.map.write(ACQ, &[0; PAGE as usize]);
        let n = u32::from(ADMIN_ENTRIES - 1);
        self.write32(AQA, n | (n << 16));
        self.write64(ASQ_REG, ASQ);
        self.write64(ACQ_REG, ACQ);
        // EN, IOSQES = 6 (64 bytes), IOCQES = 4 (16 bytes).
        self.write32(CC, 1 | (6 << 16) | (4 << 20));
        let start = Instant::now();
        while self.read32(CSTS) & 1 == 0 {
            assert!(start.elapsed() < TIMEOUT, "CSTS.RDY never set");
        }
        assert_eq!(self.read32(CSTS) & 2, 0, "controller fatal status");
        self.sqs[0] = Some(Queue {
            base: ASQ,
            entries: ADMIN_ENTRIES,
            index: 0,
            phase: true,
        });
        self.cqs[0] = Some(Queue {
            base: ACQ,
            entries: ADMIN_ENTRIES,
            index: 0,
            phase: true,
        });
    }

    /// Writes `sqe` (its CID is filled in) at the tail of SQ `qid` without ringing.
    pub fn push(&mut self, qid: u16, mut sqe: [u8; 64]) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        sqe[2..4].copy_from_slice(&cid.to_le_bytes());
        let sq = self.sqs[usize::from(qid)].as_mut().expect("SQ exists");
        let addr = sq.base + u64::from(sq.index) * 64;
        sq.index = (sq.index + 1) % sq.entries;
        self.ram.map.write(addr, &sqe);
        cid
    }

    /// Rings SQ `qid`'s tail doorbell with everything pushed.
    pub fn ring_sq(&mut self, qid: u16) {
        let tail = self.sqs[usize::from(qid)]
            .as_ref()
            .expect("SQ exists")
            .index;
        self.ring(DOORBELL_BASE + 8 * u64::from(qid), u32::from(tail));
    }

    pub fn submit(&mut self, qid: u16, sqe: [u8; 64]) -> u16 {
        let cid = self.push(qid, sqe);
        self.ring_sq(qid);
        cid
    }

    /// The next completion of CQ `qid`, if one is posted (consumed, head not yet rung).
    pub fn poll(&mut self, qid: u16) -> Option<Completion> {
        let cq = self.cqs[usize::from(qid)].as_mut().expect("CQ exists");
        let addr = cq.base + u64::from(cq.index) * 16;
        let dw3 = self.ram.map.load_acquire(addr + 12);
        if (dw3 >> 16) & 1 != u32::from(cq.phase) {
            return None;
        }
        let raw = self.ram.map.read(addr, 12);
        let dw = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        cq.index += 1;
        if cq.index == cq.entries {
            cq.index = 0;
            cq.phase = !cq.phase;
        }
        let sf = (dw3 >> 17) as u16;
        Some(Completion {
            dw0: dw(0),
            sq_head: dw(8) as u16,
            sq_id: (dw(8) >> 16) as u16,
            cid: dw3 as u16,
            status: sf & 0x7ff,
        })
    }

    /// Tells the controller the consumed completions are free.
    pub fn ring_cq(&mut self, qid: u16) {
        let head = self.cqs[usize::from(qid)]
            .as_ref()
            .expect("CQ exists")
            .index;
        self.ring(DOORBELL_BASE + 8 * u64::from(qid) + 4, u32::from(head));
    }

    /// Waits for the next completion of CQ `qid` and frees its entry.
    pub fn wait(&mut self, qid: u16) -> Completion {
        let start = Instant::now();
        loop {
            if let Some(c) = self.poll(qid) {
                self.ring_cq(qid);
                return c;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "no completion on CQ {qid} within {TIMEOUT:?}"
            );
            std::hint::spin_loop();
        }
    }

    /// Submits one command and waits for its completion.
    pub fn run(&mut self, qid: u16, sqe: [u8; 64]) -> Completion {
        let cid = self.submit(qid, sqe);
        let c = self.wait(qid);
        assert_eq!(c.cid, cid, "completions come back in order here");
        c
    }

    /// Identify Controller into [`IDENTIFY_BUF`]; returns the 4 KiB structure.
    pub fn identify_controller(&mut self) -> Vec<u8> {
        self.ram.map.write(IDENTIFY_BUF, &[0; PAGE as usize]);
        let c = self.run(0, cmd(0x06, 0, IDENTIFY_BUF, 0, [1, 0, 0]));
        assert!(c.ok(), "Identify failed: {c:?}");
        self.ram.map.read(IDENTIFY_BUF, PAGE as usize)
    }

    /// Creates I/O CQ 1 and SQ 1 (no interrupts) of [`IO_ENTRIES`] entries.
    pub fn create_io_queues(&mut self) {
        self.ram.map.write(IO_CQ, &[0; PAGE as usize]);
        let size = u32::from(IO_ENTRIES - 1) << 16;
        let c = self.run(0, cmd(0x05, 0, IO_CQ, 0, [1 | size, 1, 0]));
        assert!(c.ok(), "Create I/O CQ failed: {c:?}");
        let c = self.run(0, cmd(0x01, 0, IO_SQ, 0, [1 | size, 1 | (1 << 16), 0]));
        assert!(c.ok(), "Create I/O SQ failed: {c:?}");
        for (q, base) in [(&mut self.sqs[1], IO_SQ), (&mut self.cqs[1], IO_CQ)] {
            *q = Some(Queue {
                base,
                entries: IO_ENTRIES,
                index: 0,
                phase: true,
            });
        }
    }
}

/// A command: opcode, namespace, PRP1, PRP2, CDW10..12.
pub fn cmd(opcode: u8, nsid: u32, prp1: u64, prp2: u64, cdw: [u32; 3]) -> [u8; 64] {
    let mut s = [0u8; 64];
    s[0] = opcode;
    s[4..8].copy_from_slice(&nsid.to_le_bytes());
    s[24..32].copy_from_slice(&prp1.to_le_bytes());
    s[32..40].copy_from_slice(&prp2.to_le_bytes());
    for (i, d) in cdw.iter().enumerate() {
        s[40 + 4 * i..44 + 4 * i].copy_from_slice(&d.to_le_bytes());
    }
    s
}

/// Read or write `blocks` 512-byte blocks at `lba` to or from `buf` (at most two pages,
/// page-aligned: PRP1 and PRP2 both point at data).
pub fn rw(write: bool, lba: u64, blocks: u32, buf: u64) -> [u8; 64] {
    let bytes = u64::from(blocks) * 512;
    assert!(buf.is_multiple_of(PAGE) && bytes <= 2 * PAGE);
    let prp2 = if bytes > PAGE { buf + PAGE } else { 0 };
    let opcode = if write { 0x01 } else { 0x02 };
    cmd(
        opcode,
        1,
        buf,
        prp2,
        [lba as u32, (lba >> 32) as u32, blocks - 1],
    )
}

pub fn flush() -> [u8; 64] {
    cmd(0x00, 1, 0, 0, [0; 3])
}

/// A recognisable pattern, different for each `seed`.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}
