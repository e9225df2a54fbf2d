//! virtio-blk requests as a guest lays them out: descriptor tables (direct and indirect),
//! headers, data, status bytes and discard / write-zeroes ranges, all from the fuzz input.
//!
//! Input: `[mode: u8]`, then
//! - mode even, the chain walker and request parser alone: `[table: u16][size: u16][head: u16]
//!   [flags: u8][sectors: u16][cut: u8][ro_page: u8]` and guest memory (64 KiB from address 0).
//!   Checked: every slice the parser returns lies inside guest memory, and a request it accepts
//!   stays inside the device.
//! - mode odd, one queue worker over a split ring as the daemon runs it (virtio-queue pops the
//!   heads, the worker walks, parses, submits to an in-memory engine and posts used entries):
//!   `[size_log2: u8][desc: u16][avail: u16][used: u16][flags: u8][sectors: u16]` and guest
//!   memory.
#![no_main]

use std::sync::Arc;

use backends::engine::MemEngine;
use backends::vhost_user_blk::chain::{self, Desc};
use backends::vhost_user_blk::config::{BlkConfig, Device};
use backends::vhost_user_blk::memory::address_space;
use backends::vhost_user_blk::queue::{Run, Worker};
use backends::vhost_user_blk::request::{self, Op};
use iopath_fuzz::guest::{GuestMem, PAGE};
use iopath_fuzz::input::Cursor;
use iopath_fuzz::ring::{split_queue, QueueRing};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const MEM: usize = 0x10000;

fn device(flags: u8, sectors: u16) -> BlkConfig {
    BlkConfig {
        capacity: u64::from(sectors) << 9,
        block_size: 512,
        read_only: flags & 1 != 0,
        num_queues: 1,
        queue_size: 256,
        serial: "fuzz-serial".into(),
    }
}

/// Walker and parser on their own.
fn parse_one(c: &mut Cursor<'_>) {
    let (table, size, head) = (u64::from(c.u16()), c.u16(), c.u16());
    let (flags, sectors) = (c.u8(), c.u16());
    let (cut, ro_page) = (usize::from(c.u8()), c.u8());
    let mem = GuestMem::new(MEM / PAGE);
    mem.write(0, c.rest());
    // Page 0 stays read-write: that is where tables usually are.
    let ro = (flags & 2 != 0).then_some(usize::from(ro_page % 15) + 1);
    let space = mem.space(&[cut], ro);
    let dev = device(flags, sectors);

    let mut descs: Vec<Desc> = Vec::new();
    if chain::walk(&space, table, size, head, &mut descs).is_err() {
        return;
    }
    assert!(descs.iter().map(|d| u64::from(d.len)).sum::<u64>() <= u64::from(u32::MAX));
    match request::parse(&descs, &space, &dev) {
        Ok(req) => {
            mem.check_inside(std::slice::from_ref(&req.status));
            let _ = req.op.written();
            let within =
                |offset: u64, len: u64| offset.checked_add(len).is_some_and(|e| e <= dev.capacity);
            match &req.op {
                Op::Read { offset, segments } | Op::Write { offset, segments } => {
                    mem.check_inside(segments);
                    let len: u64 = segments.iter().map(|s| s.len() as u64).sum();
                    assert!(within(*offset, len), "I/O past the device end");
                }
                Op::GetId { segments } => mem.check_inside(segments),
                Op::Ranges(ranges) => {
                    for r in ranges {
                        assert!(within(r.offset, r.len), "range past the device end");
                    }
                }
                Op::Flush => {}
            }
        }
        Err(rejected) => {
            if let Some(status) = &rejected.status {
                mem.check_inside(std::slice::from_ref(status));
            }
            let _ = rejected.error.status();
        }
    }
}

/// One queue worker over a fuzzed ring.
fn run_queue(c: &mut Cursor<'_>) {
    let size = 1u16 << (c.u8() % 9);
    let (desc, avail, used) = (c.u16(), c.u16(), c.u16());
    let (flags, sectors) = (c.u8(), c.u16());
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let image = c.rest();
    vm_memory::Bytes::write_slice(&mem, &image[..image.len().min(MEM)], GuestAddress(0)).unwrap();

    let queue = split_queue(size, desc, avail, used, flags & 4 != 0);
    let mut ring = QueueRing::new(queue, &mem);

    // A shallow engine so chains wait in the worker's backlog.
    let engine = MemEngine::new(usize::from(sectors) << 9).with_queue_depth(4);
    let dev = Device::new(device(flags, sectors));
    dev.set_writeback(flags & 8 != 0);
    let mut worker = Worker::new(Box::new(engine), Arc::new(dev));
    worker.set_space(Arc::new(address_space(Arc::new(mem.clone())).unwrap()));
    for _ in 0..8 {
        if worker.run(&mut ring) != Run::More {
            break;
        }
    }
    let _ = worker.has_work();
    worker.drain(&mut ring);
    let s = worker.stats();
    assert!(s.dropped + s.rejected <= s.chains);
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    if c.u8() & 1 == 0 {
        parse_one(&mut c);
    } else {
        run_queue(&mut c);
    }
});
