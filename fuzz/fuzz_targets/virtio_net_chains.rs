//! virtio-net queue pairs as a guest lays them out: TX and RX descriptor chains (direct and
//! indirect), vnet headers and control commands, all from the fuzz input.
//!
//! Input: `[mode: u8]`, then
//! - mode even, the chain walker and frame parsers alone: `[table: u16][size: u16][head: u16]
//!   [max_tx: u16][cut: u8]` and guest memory (64 KiB from address 0). Checked: every slice
//!   returned lies inside guest memory and a TX frame stays within its limit.
//! - mode odd, one pair worker (with the control queue) over split rings as the daemon runs
//!   it, on a reflect engine: `[size_log2: u8]` and `[desc: u16][avail: u16][used: u16]` for
//!   RX, TX and control, `[features: u8]`, and guest memory.
#![no_main]

use std::sync::Arc;

use backends::net::{Loopback, LoopbackMode};
use backends::vhost_user::chain::{self, Desc};
use backends::vhost_user::memory::address_space;
use backends::vhost_user_net::config::NetConfig;
use backends::vhost_user_net::frame;
use backends::vhost_user_net::worker::{Rings, Worker};
use iopath_fuzz::guest::{GuestMem, PAGE};
use iopath_fuzz::input::Cursor;
use iopath_fuzz::ring::{split_queue, QueueRing};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const MEM: usize = 0x10000;

fn parse_one(c: &mut Cursor<'_>) {
    let (table, size, head) = (u64::from(c.u16()), c.u16(), c.u16());
    let max_tx = usize::from(c.u16());
    let cut = usize::from(c.u8());
    let mem = GuestMem::new(MEM / PAGE);
    mem.write(0, c.rest());
    let space = mem.space(&[cut], None);
    let mut descs: Vec<Desc> = Vec::new();
    if chain::walk(&space, table, size, head, &mut descs).is_err() {
        return;
    }
    if let Ok(b) = frame::tx(&space, &descs, max_tx) {
        mem.check_inside(&b.segments);
        assert!(b.len <= max_tx && b.len >= frame::MIN_TX);
    }
    if let Ok(b) = frame::rx(&space, &descs) {
        mem.check_inside(&b.segments);
        let _ = frame::write_at(&space, &descs, 10, &[1, 0]);
    }
}

fn ring<'a>(
    c: &mut Cursor<'_>,
    size: u16,
    event_idx: bool,
    mem: &'a GuestMemoryMmap,
) -> QueueRing<'a> {
    let (desc, avail, used) = (c.u16(), c.u16(), c.u16());
    let queue = split_queue(size, desc, avail, used, event_idx);
    QueueRing::new(queue, mem)
}

fn run_pair(c: &mut Cursor<'_>) {
    let size = 1u16 << (c.u8() % 9);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let mut rx = ring(c, size, true, &mem);
    let mut tx = ring(c, size, true, &mem);
    let mut ctrl = ring(c, size, false, &mem);
    let bits = c.u8();
    let image = c.rest();
    vm_memory::Bytes::write_slice(&mem, &image[..image.len().min(MEM)], GuestAddress(0)).unwrap();

    let config = NetConfig {
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        queue_pairs: 2,
        queue_size: 256,
    };
    // Feature subsets that change the worker's behaviour: MRG_RXBUF, host and guest TSO,
    // GUEST_CSUM.
    let mut features = 0u64;
    for (i, bit) in [15u32, 11, 7, 1].iter().enumerate() {
        if bits & (1 << i) != 0 {
            features |= 1 << bit;
        }
    }
    let mut worker = Worker::new(
        Box::new(Loopback::new(LoopbackMode::Reflect, 4)),
        config.limits(0),
        config.queue_pairs,
    );
    worker.set_limits(
        config.limits(features),
        backends::net::guest_offloads(features),
    );
    worker.set_space(Arc::new(address_space(Arc::new(mem.clone())).unwrap()));
    let mut rings = Rings {
        rx: &mut rx,
        tx: &mut tx,
        ctrl: Some(&mut ctrl),
    };
    for _ in 0..4 {
        if worker.run(&mut rings, 16).1 {
            break;
        }
    }
    worker.drain(&mut rings);
    assert_eq!(worker.in_flight(), 0);
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    if c.u8() & 1 == 0 {
        parse_one(&mut c);
    } else {
        run_pair(&mut c);
    }
});
