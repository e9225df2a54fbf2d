//! The vhost-user-blk daemon against a real frontend over a Unix socket: negotiation, config,
//! data paths (checked against the backing file), and every kind of malformed chain.

mod vhost_user_blk_common;

use std::time::Duration;

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vhost_user_blk_common::*;

const DISK: usize = 1 << 20;
const SECTORS: u64 = DISK as u64 / 512;

fn start(args: &[&str], fill: u8) -> (tempfile::TempDir, std::path::PathBuf, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, fill);
    let mut all = vec!["--path", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let daemon = Daemon::spawn(&dir.path().join("blk.sock"), &all);
    (dir, path, daemon)
}

#[test]
fn negotiation_and_config_space() {
    let (_dir, _path, d) = start(&["--queues", "2", "--queue-size", "128"], 0);
    let mut c = Conn::connect(
        &d.socket,
        Setup {
            queues: 2,
            queue_size: 128,
            ..Setup::default()
        },
    );
    let want = [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_BLK_F_FLUSH,
        protocol_bit(),
    ];
    assert!(features_include(c.features, &want), "{:#x}", c.features);
    // SIZE_MAX, SEG_MAX, BLK_SIZE, TOPOLOGY, CONFIG_WCE, MQ, DISCARD, WRITE_ZEROES.
    for bit in [1, 2, 6, 10, 11, 12, 13, 14] {
        assert_ne!(c.features & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(c.features & VIRTIO_BLK_F_RO, 0);
    assert!(c.protocol.contains(
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    ));
    assert_eq!(c.fe.get_queue_num().unwrap(), 2);

    let cfg = c.config(0, 60);
    let le32 = |o: usize| u32::from_le_bytes(cfg[o..o + 4].try_into().unwrap());
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), SECTORS);
    assert_eq!(le32(12), 126, "seg_max = queue size - 2");
    assert_eq!(le32(20), 512, "blk_size");
    assert_eq!(cfg[32], 1, "writeback");
    assert_eq!(u16::from_le_bytes([cfg[34], cfg[35]]), 2, "num_queues");
    assert!(le32(36) > 0 && le32(40) > 0, "discard limits");
    assert_eq!(le32(44), 1, "discard alignment in sectors");
    assert!(le32(48) > 0 && le32(52) > 0, "write-zeroes limits");
    // A partial read at an offset, and the tail past the struct reads zero.
    assert_eq!(c.config(34, 2), vec![2, 0]);
    assert_eq!(c.config(96, 8), vec![0; 8]);

    // The driver turns the write cache off; the device reports it and still works.
    c.fe.set_config(32, VhostUserConfigFlags::WRITABLE, &[0])
        .unwrap();
    assert_eq!(c.config(32, 1), vec![0]);
    let data = pattern(4096, 9);
    assert_eq!(c.write(0, 0, &data), (S_OK, 1));
    assert_eq!(c.read(1, 0, 4096), (S_OK, 4097, data));
}

#[test]
fn written_data_reaches_the_file_and_reads_back() {
    let (_dir, path, d) = start(&[], 0x11);
    let mut c = Conn::connect(&d.socket, Setup::default());

    // 8 KiB at sector 8, from two buffers, the second straddling the two memory regions.
    let data = pattern(8192, 1);
    let a = c.buf(4096);
    let b = REGION_SPLIT - 2048;
    c.ram.write(a, &data[..4096]);
    c.ram.write(b, &data[4096..]);
    let (status, used) = c.request(0, T_OUT, 8, &[r(a, 4096), r(b, 4096)]);
    assert_eq!((status, used), (S_OK, 1));
    assert_eq!(file_bytes(&path, 4096, 8192), data);
    assert_eq!(
        file_bytes(&path, 0, 4096),
        vec![0x11; 4096],
        "nothing else moved"
    );

    let (status, used, back) = c.read(0, 8, 8192);
    assert_eq!((status, used), (S_OK, 8193), "used = data + status");
    assert_eq!(back, data);
    // Read into guest buffers that straddle the regions too.
    c.ram.write(b, &[0; 4096]);
    let (status, _) = c.request(0, T_IN, 16, &[w(b, 4096)]);
    assert_eq!((status, c.ram.read(b, 4096)), (S_OK, data[4096..].to_vec()));

    // The last sector is addressable.
    let last = pattern(512, 7);
    assert_eq!(c.write(0, SECTORS - 1, &last).0, S_OK);
    assert_eq!(file_bytes(&path, DISK as u64 - 512, 512), last);

    assert_eq!(c.request(0, T_FLUSH, 0, &[]), (S_OK, 1));
    assert!(c.vqs[0].calls > 0, "the driver was signalled");
}

#[test]
fn many_requests_in_flight_complete_out_of_order_safely() {
    let (_dir, path, d) = start(&[], 0);
    let mut c = Conn::connect(&d.socket, Setup::default());
    let n = 48u64;
    let mut statuses = Vec::new();
    for i in 0..n {
        let h = c.buf(16);
        c.ram.write(h, &header(T_OUT, i * 16));
        let data = c.buf(8192);
        c.ram.write(data, &pattern(8192, i as u8));
        let s = c.buf(1);
        c.ram.write(s, &[S_UNTOUCHED]);
        let head = c.write_chain(0, &[r(h, 16), r(data, 8192), w(s, 1)]);
        c.publish(0, head);
        statuses.push(s);
    }
    c.kick(0);
    let used = c.wait_used(0, n as usize);
    assert!(used.iter().all(|u| u.len == 1));
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(c.ram.read(*s, 1)[0], S_OK, "request {i}");
        assert_eq!(
            file_bytes(&path, i as u64 * 8192, 8192),
            pattern(8192, i as u8)
        );
    }
    for i in 0..n {
        let (status, _, back) = c.read(0, i * 16, 8192);
        assert_eq!(status, S_OK);
        assert_eq!(back, pattern(8192, i as u8), "sector {}", i * 16);
    }
}

#[test]
fn get_id_returns_the_serial() {
    let (_dir, _path, d) = start(&[], 0);
    let mut c = Conn::connect(&d.socket, Setup::default());
    let id = c.buf(32);
    c.ram.write(id, &[0xee; 32]);
    let (status, used) = c.request(0, T_GET_ID, 0, &[w(id, 32)]);
    assert_eq!((status, used), (S_OK, 21));
    let got = c.ram.read(id, 32);
    assert_eq!(&got[..20], b"disk.img\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(&got[20..], &[0xee; 12], "no more than 20 bytes");
}

#[test]
fn discard_and_write_zeroes_leave_zeroes_in_the_file() {
    let (_dir, path, d) = start(&[], 0xaa);
    let mut c = Conn::connect(&d.socket, Setup::default());
    assert_eq!(c.ranges(0, T_DISCARD, &[(0, 8, 0)]), (S_OK, 1));
    assert_eq!(c.ranges(0, T_WRITE_ZEROES, &[(8, 8, 0)]), (S_OK, 1));
    // UNMAP and two ranges in one request.
    assert_eq!(
        c.ranges(0, T_WRITE_ZEROES, &[(16, 8, 1), (32, 16, 0)]),
        (S_OK, 1)
    );
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[..12288], &[0; 12288][..]);
    assert_eq!(
        &file[12288..16384],
        &[0xaa; 4096][..],
        "the gap is untouched"
    );
    assert_eq!(&file[16384..24576], &[0; 8192][..]);
    assert_eq!(&file[24576..], &vec![0xaa; DISK - 24576][..]);
    assert_eq!(c.read(0, 0, 4096).2, vec![0; 4096]);
    assert_eq!(file.len(), DISK, "the file keeps its size");

    // Discard has no UNMAP flag; unknown flags are unsupported.
    assert_eq!(c.ranges(0, T_DISCARD, &[(64, 8, 1)]).0, S_UNSUPP);
    assert_eq!(c.ranges(0, T_WRITE_ZEROES, &[(64, 8, 0x80)]).0, S_UNSUPP);
    // Out of range.
    assert_eq!(c.ranges(0, T_DISCARD, &[(SECTORS - 4, 8, 0)]).0, S_IOERR);
    assert_eq!(
        &std::fs::read(&path).unwrap()[32768..],
        &vec![0xaa; DISK - 32768][..]
    );
}

#[test]
fn read_only_refuses_every_write() {
    let (_dir, path, d) = start(&["--readonly"], 0x33);
    let mut c = Conn::connect(&d.socket, Setup::default());
    assert_ne!(c.features & VIRTIO_BLK_F_RO, 0);
    assert_eq!(c.write(0, 0, &pattern(4096, 1)), (S_IOERR, 1));
    assert_eq!(c.ranges(0, T_DISCARD, &[(0, 8, 0)]).0, S_IOERR);
    assert_eq!(c.ranges(0, T_WRITE_ZEROES, &[(0, 8, 1)]).0, S_IOERR);
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x33; DISK]);
    assert_eq!(c.read(0, 0, 512), (S_OK, 513, vec![0x33; 512]));
    assert_eq!(c.request(0, T_FLUSH, 0, &[]).0, S_OK);
}

#[test]
fn indirect_descriptors_carry_whole_requests() {
    let (_dir, path, d) = start(&[], 0);
    let mut c = Conn::connect(&d.socket, Setup::default());
    let data = pattern(4096, 42);
    let (h, buf, s, table) = (c.buf(16), c.buf(4096), c.buf(1), c.buf(64));
    c.ram.write(h, &header(T_OUT, 24));
    c.ram.write(buf, &data);
    c.ram.write(s, &[S_UNTOUCHED]);
    // Data split in two descriptors inside the table.
    let head = c.write_indirect(
        0,
        table,
        &[r(h, 16), r(buf, 1024), r(buf + 1024, 3072), w(s, 1)],
    );
    c.publish(0, head);
    c.kick(0);
    assert_eq!(c.wait_used(0, 1), vec![Used { head, len: 1 }]);
    assert_eq!(c.ram.read(s, 1)[0], S_OK);
    assert_eq!(file_bytes(&path, 24 * 512, 4096), data);

    let (rb, rs, rtable) = (c.buf(4096), c.buf(1), c.buf(64));
    c.ram.write(h, &header(T_IN, 24));
    let head = c.write_indirect(0, rtable, &[r(h, 16), w(rb, 4096), w(rs, 1)]);
    c.publish(0, head);
    c.kick(0);
    assert_eq!(c.wait_used(0, 1), vec![Used { head, len: 4097 }]);
    assert_eq!(c.ram.read(rs, 1)[0], S_OK);
    assert_eq!(c.ram.read(rb, 4096), data);
}

#[test]
fn two_queues_work_independently() {
    let (_dir, path, d) = start(&["--queues", "2"], 0);
    let mut c = Conn::connect(
        &d.socket,
        Setup {
            queues: 2,
            ..Setup::default()
        },
    );
    // One write on each queue, both in flight before either is waited for.
    let mut status = Vec::new();
    for q in 0..2 {
        let (h, buf, s) = (c.buf(16), c.buf(4096), c.buf(1));
        c.ram.write(h, &header(T_OUT, q as u64 * 8));
        c.ram.write(buf, &pattern(4096, q as u8 + 100));
        c.ram.write(s, &[S_UNTOUCHED]);
        let head = c.write_chain(q, &[r(h, 16), r(buf, 4096), w(s, 1)]);
        c.publish(q, head);
        status.push(s);
    }
    c.kick(1);
    c.kick(0);
    for (q, &s) in status.iter().enumerate() {
        assert_eq!(c.wait_used(q, 1)[0].len, 1);
        assert_eq!(c.ram.read(s, 1)[0], S_OK);
        assert_eq!(
            file_bytes(&path, q as u64 * 4096, 4096),
            pattern(4096, q as u8 + 100)
        );
    }
    // Each queue reads what the other wrote.
    assert_eq!(c.read(1, 0, 4096).2, pattern(4096, 100));
    assert_eq!(c.read(0, 8, 4096).2, pattern(4096, 101));
    assert!(
        c.signalled(0) && c.signalled(1),
        "both queues signal the driver"
    );
}

#[test]
fn polling_picks_up_requests_without_a_kick() {
    let (_dir, path, d) = start(&["--poll-us", "2000000"], 0);
    let mut c = Conn::connect(&d.socket, Setup::default());
    assert_eq!(c.write(0, 0, &pattern(512, 1)).0, S_OK);
    // Inside the poll window: no kick needed.
    let (h, buf, s) = (c.buf(16), c.buf(512), c.buf(1));
    c.ram.write(h, &header(T_OUT, 1));
    c.ram.write(buf, &pattern(512, 2));
    c.ram.write(s, &[S_UNTOUCHED]);
    let head = c.write_chain(0, &[r(h, 16), r(buf, 512), w(s, 1)]);
    c.publish(0, head);
    let used = c.wait_used_for(0, 1, Duration::from_secs(1));
    assert_eq!(used, vec![Used { head, len: 1 }], "served by the poller");
    assert_eq!(file_bytes(&path, 512, 512), pattern(512, 2));

    // After the window the daemon sleeps again: unkicked work waits for a kick.
    std::thread::sleep(Duration::from_millis(2500));
    c.ram.write(h, &header(T_OUT, 2));
    let head = c.write_chain(0, &[r(h, 16), r(buf, 512), w(s, 1)]);
    c.publish(0, head);
    assert!(c.wait_used_for(0, 1, Duration::from_millis(300)).is_empty());
    c.kick(0);
    assert_eq!(c.wait_used(0, 1), vec![Used { head, len: 1 }]);
}

#[test]
fn without_event_idx_every_completion_is_signalled() {
    let (_dir, _path, d) = start(&[], 0);
    let mut c = Conn::connect(
        &d.socket,
        Setup {
            event_idx: false,
            ..Setup::default()
        },
    );
    assert_eq!(c.features & VIRTIO_RING_F_EVENT_IDX, 0);
    for i in 0..4 {
        assert_eq!(c.write(0, i, &pattern(512, i as u8)).0, S_OK);
    }
    assert_eq!(c.read(0, 3, 512), (S_OK, 513, pattern(512, 3)));
    assert!(c.vqs[0].calls >= 1);
}

/// Every malformed chain gets its answer, and the queue keeps working after each.
#[test]
fn malformed_chains_are_answered_and_the_queue_survives() {
    let (_dir, path, d) = start(&[], 0x44);
    let mut c = Conn::connect(&d.socket, Setup::default());
    let (h, data, s) = (c.buf(16), c.buf(4096), c.buf(1));
    let outside = RAM_SIZE + 0x1000;

    // Publishes `bufs` after a header of (kind, sector) and returns (status, used length).
    let case = |c: &mut Conn, kind: u32, sector: u64, bufs: &[Buf]| {
        c.ram.write(h, &header(kind, sector));
        c.ram.write(s, &[S_UNTOUCHED]);
        let len = c.submit(0, bufs);
        let status = c.ram.read(s, 1)[0];
        // The next well-formed request works.
        assert_eq!(c.read(0, 0, 512), (S_OK, 513, vec![0x44; 512]));
        (status, len)
    };

    // Data outside guest RAM, in either direction.
    assert_eq!(
        case(&mut c, T_IN, 0, &[r(h, 16), w(outside, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    assert_eq!(
        case(&mut c, T_OUT, 0, &[r(h, 16), r(outside, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    // Header outside RAM.
    assert_eq!(
        case(&mut c, T_IN, 0, &[r(outside, 16), w(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    // Header in a device-writable descriptor.
    assert_eq!(
        case(&mut c, T_IN, 0, &[w(h, 16), w(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    // Header too short.
    assert_eq!(
        case(&mut c, T_IN, 0, &[r(h, 8), w(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    // Data in the wrong direction.
    assert_eq!(
        case(&mut c, T_IN, 0, &[r(h, 16), r(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    assert_eq!(
        case(&mut c, T_OUT, 0, &[r(h, 16), w(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    // A readable descriptor after a writable one.
    assert_eq!(
        case(
            &mut c,
            T_IN,
            0,
            &[r(h, 16), w(data, 512), r(data, 512), w(s, 1)]
        ),
        (S_IOERR, 1)
    );
    // Not whole sectors.
    assert_eq!(
        case(&mut c, T_IN, 0, &[r(h, 16), w(data, 100), w(s, 1)]),
        (S_IOERR, 1)
    );
    // Beyond the capacity, and straddling its end; the file is untouched.
    c.ram.write(data, &[0x99; 4096]);
    assert_eq!(
        case(&mut c, T_OUT, SECTORS, &[r(h, 16), r(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    assert_eq!(
        case(
            &mut c,
            T_OUT,
            SECTORS - 1,
            &[r(h, 16), r(data, 1024), w(s, 1)]
        ),
        (S_IOERR, 1)
    );
    assert_eq!(
        case(&mut c, T_IN, u64::MAX, &[r(h, 16), w(data, 512), w(s, 1)]),
        (S_IOERR, 1)
    );
    // Unknown request type.
    assert_eq!(case(&mut c, 77, 0, &[r(h, 16), w(s, 1)]), (S_UNSUPP, 1));

    // No usable status byte: completed with used length 0, status untouched.
    for bufs in [
        vec![r(h, 16), w(data, 512), w(s, 0)],
        vec![r(h, 16), r(data, 512), r(s, 1)],
        vec![r(h, 16), w(data, 512), w(outside, 1)],
    ] {
        assert_eq!(case(&mut c, T_IN, 0, &bufs), (S_UNTOUCHED, 0), "{bufs:?}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x44; DISK]);

    // A descriptor loop: 0 -> 1 -> 0.
    c.ram.write(h, &header(T_IN, 0));
    let first = c.raw_desc(0, h, 16, F_NEXT, 0);
    let second = c.raw_desc(0, data, 512, F_NEXT | F_WRITE, first);
    c.ram.put_desc(c.vqs[0].desc, first, h, 16, F_NEXT, second);
    c.publish(0, first);
    c.kick(0);
    assert_eq!(
        c.wait_used(0, 1),
        vec![Used {
            head: first,
            len: 0
        }]
    );
    assert_eq!(c.read(0, 0, 512).0, S_OK);

    // Indirect tables: bad length, and an indirect descriptor inside one.
    let table = c.buf(64);
    let head = c.raw_desc(0, table, 40, F_INDIRECT, 0);
    c.publish(0, head);
    c.kick(0);
    assert_eq!(c.wait_used(0, 1), vec![Used { head, len: 0 }]);
    c.ram.put_desc(table, 0, h, 16, F_NEXT, 1);
    c.ram.put_desc(table, 1, table, 32, F_INDIRECT, 0);
    let head = c.raw_desc(0, table, 32, F_INDIRECT, 0);
    c.publish(0, head);
    c.kick(0);
    assert_eq!(c.wait_used(0, 1), vec![Used { head, len: 0 }]);
    assert_eq!(c.read(0, 0, 512).0, S_OK);

    // A head index outside the table cannot be named in the used ring: it is skipped and the
    // next chain completes normally.
    let size = c.vqs[0].size;
    c.publish(0, size + 3);
    let good = {
        let d2 = c.buf(512);
        c.ram.write(h, &header(T_IN, 0));
        c.ram.write(s, &[S_UNTOUCHED]);
        c.write_chain(0, &[r(h, 16), w(d2, 512), w(s, 1)])
    };
    c.publish(0, good);
    c.kick(0);
    let used = c.wait_used_for(0, 2, Duration::from_millis(500));
    assert_eq!(
        used,
        vec![Used {
            head: good,
            len: 513
        }]
    );
    assert_eq!(c.ram.read(s, 1)[0], S_OK);
    assert!(d_is_alive(d));
}

fn d_is_alive(mut d: Daemon) -> bool {
    d.running()
}

#[test]
fn get_vring_base_completes_everything_taken_before_answering() {
    let (_dir, path, d) = start(&[], 0);
    let mut c = Conn::connect(&d.socket, Setup::default());
    let n = 32u64;
    for i in 0..n {
        let (h, buf, s) = (c.buf(16), c.buf(16384), c.buf(1));
        c.ram.write(h, &header(T_OUT, i * 32));
        c.ram.write(buf, &pattern(16384, i as u8));
        c.ram.write(s, &[S_UNTOUCHED]);
        let head = c.write_chain(0, &[r(h, 16), r(buf, 16384), w(s, 1)]);
        c.publish(0, head);
    }
    c.kick(0);
    // Stop the ring while the daemon is working on it: by the time the answer arrives, every
    // chain it took (the returned base) is in the used ring.
    let base = c.fe.get_vring_base(0).unwrap();
    let used = c.ram.load_u16(c.vqs[0].used + 2);
    assert_eq!(u32::from(used), base);
    assert!(base <= n as u32);
    let done = c.poll_used(0);
    assert!(done.iter().all(|u| u.len == 1));
    for i in 0..u64::from(base) {
        assert_eq!(
            file_bytes(&path, i * 16384, 16384),
            pattern(16384, i as u8),
            "request {i}"
        );
    }
}
