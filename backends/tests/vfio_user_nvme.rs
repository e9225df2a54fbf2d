//! The vfio-user NVMe daemon against the vfio_user crate's client, playing a guest NVMe driver:
//! region info, registers through messages, doorbells through the mmapped sparse area, DMA
//! through mapped memfds, data landing in the backing file.

mod common;

use std::os::fd::AsRawFd;

use common::guest_ram::GuestRam;
use common::nvme_driver::*;
use common::vfio_user_daemon::Daemon;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::Client;
use vmm_sys_util::eventfd::EventFd;

/// A 1 MiB backing file in the daemon's temporary directory.
fn disk(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    path
}

fn file_daemon() -> (Daemon, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let d = Daemon::start(&["--path", path.to_str().unwrap()]);
    (d, path, dir)
}

#[test]
fn device_and_region_info() {
    let d = Daemon::start(&["--null", "1M"]);
    let mut client = Client::new(&d.socket).unwrap();
    for index in 0..9 {
        assert!(client.region(index).is_some(), "region {index}");
    }
    let bar0 = client.region(BAR0).unwrap();
    assert_eq!(bar0.size, 0x4000);
    let rwm = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
    assert_eq!(bar0.flags & rwm, rwm);
    let areas: Vec<(u64, u64)> = bar0
        .sparse_areas
        .iter()
        .map(|a| (a.offset, a.size))
        .collect();
    assert_eq!(areas, [(0x1000, 0x1000)], "the doorbell page is mmappable");
    assert!(bar0.file_offset.is_some(), "BAR0 came with its memfd");
    assert_eq!(client.region(4).unwrap().size, 0x2000, "MSI-X BAR");
    assert_eq!(client.region(CONFIG).unwrap().size, 256);
    assert_eq!(client.region(2).unwrap().size, 0, "unimplemented BAR");

    let msix = client.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap();
    assert_eq!(msix.count, 65);
    assert_ne!(msix.flags & VFIO_IRQ_INFO_EVENTFD, 0);
    assert_eq!(client.get_irq_info(0).unwrap().count, 0, "no INTx");

    let mut cfg = |offset: u64| {
        let mut b = [0u8; 4];
        client.region_read(CONFIG, offset, &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    assert_eq!(cfg(0x00), 0x0010_1b36, "1b36:0010");
    assert_eq!(cfg(0x08) >> 8, 0x01_08_02, "class 01:08:02");
    assert_eq!(cfg(0x10), 0x4, "BAR0: 64-bit memory");
    assert_eq!(cfg(0x34) & 0xff, 0x40);
    assert_eq!(cfg(0x40) & 0xff, 0x11, "MSI-X capability");
    client
        .region_write(CONFIG, 0x10, &u32::MAX.to_le_bytes())
        .unwrap();
    let mut b = [0u8; 4];
    client.region_read(CONFIG, 0x10, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0xffff_c004, "BAR0 sizes as 16 KiB");
}

#[test]
fn cap_and_vs_read_through_region_messages() {
    let d = Daemon::start(&["--null", "1M"]);
    let mut drv = Driver::connect(&d.socket);
    let cap = drv.read64(CAP);
    assert_eq!(cap & 0xffff, 1023, "MQES: 1024 entries");
    assert_eq!((cap >> 16) & 1, 1, "CQR");
    assert_eq!((cap >> 32) & 0xf, 0, "DSTRD: 4-byte doorbell stride");
    assert_eq!((cap >> 37) & 1, 1, "NVM command set");
    assert_eq!(drv.read32(CAP + 4) as u64, cap >> 32);
    assert_eq!(drv.read32(VS), 0x0001_0400);
    assert_eq!(drv.read32(CSTS), 0, "disabled until CC.EN");
    assert_eq!(drv.read32(DOORBELL_BASE), 0, "doorbells read as 0");
}

#[test]
fn write_read_flush_through_the_doorbell_page_reach_the_file() {
    let (d, path, _dir) = file_daemon();
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    let id = drv.identify_controller();
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x1b36, "Identify VID");
    let model = String::from_utf8_lossy(&id[24..64]);
    assert_eq!(model.trim_end(), "iopath NVMe controller");
    drv.create_io_queues();

    let data = pattern(7, 8192);
    drv.ram.map.write(DATA, &data);
    let c = drv.run(1, rw(true, 0, 16, DATA));
    assert!(c.ok(), "write: {c:?}");
    assert_eq!(c.sq_id, 1);
    drv.ram.map.write(DATA2, &[0; 8192]);
    let c = drv.run(1, rw(false, 0, 16, DATA2));
    assert!(c.ok(), "read: {c:?}");
    assert_eq!(
        drv.ram.map.read(DATA2, 8192),
        data,
        "read back what was written"
    );
    assert!(drv.run(1, flush()).ok());

    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(
        &on_disk[..8192],
        &data[..],
        "the backing file holds the data"
    );
    assert!(on_disk[8192..].iter().all(|&b| b == 0), "and nothing else");
}

#[test]
fn many_commands_behind_one_doorbell_all_complete() {
    let (d, path, _dir) = file_daemon();
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    drv.create_io_queues();
    // 16 writes of 4 KiB each, from 16 buffers, rung with one doorbell store.
    let mut cids = Vec::new();
    for i in 0..16u64 {
        drv.ram.map.write(DATA + i * 4096, &pattern(i as u8, 4096));
        cids.push(drv.push(1, rw(true, i * 8, 8, DATA + i * 4096)));
    }
    drv.ring_sq(1);
    let mut done: Vec<u16> = (0..16)
        .map(|_| {
            let c = drv.wait(1);
            assert!(c.ok(), "{c:?}");
            c.cid
        })
        .collect();
    done.sort_unstable();
    cids.sort_unstable();
    assert_eq!(done, cids);
    assert!(drv.run(1, flush()).ok());
    let on_disk = std::fs::read(&path).unwrap();
    for i in 0..16usize {
        assert_eq!(
            &on_disk[i * 4096..(i + 1) * 4096],
            &pattern(i as u8, 4096)[..],
            "block {i}"
        );
    }
}

#[test]
fn a_command_into_unmapped_memory_fails_without_hurting_the_server() {
    const EXTRA: u64 = 0x10_0000;
    let (mut d, _path, _dir) = file_daemon();
    let mut drv = Driver::connect(&d.socket);
    let extra = GuestRam::new(0x10000);
    drv.client
        .dma_map(0, EXTRA, 0x10000, extra.file.as_raw_fd())
        .unwrap();
    drv.enable();
    drv.create_io_queues();

    // The second window works...
    let data = pattern(3, 4096);
    extra.map.write(0, &data);
    assert!(drv.run(1, rw(true, 0, 8, EXTRA)).ok());
    assert!(drv.run(1, rw(false, 0, 8, DATA)).ok());
    assert_eq!(drv.ram.map.read(DATA, 4096), data);

    // ...until it is unmapped: then commands that point into it fail.
    drv.client.dma_unmap(EXTRA, 0x10000).unwrap();
    let c = drv.run(1, rw(false, 0, 8, EXTRA));
    assert_eq!(c.status, DATA_TRANSFER_ERROR, "{c:?}");
    let c = drv.run(1, rw(true, 8, 8, EXTRA));
    assert_eq!(c.status, DATA_TRANSFER_ERROR, "{c:?}");
    assert_eq!(extra.map.read(0, 4096), data, "nothing was written into it");

    // The controller and the daemon carry on.
    assert_eq!(drv.read32(CSTS) & 3, 1, "ready, no fatal status");
    assert!(drv.run(1, rw(false, 0, 8, DATA2)).ok());
    assert_eq!(drv.ram.map.read(DATA2, 4096), data);
    assert!(d.alive());
}

#[test]
fn msix_vector_eventfds_are_signalled() {
    let d = Daemon::start(&["--null", "1M"]);
    let mut drv = Driver::connect(&d.socket);
    let efd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    drv.client
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &[efd.as_raw_fd()],
        )
        .unwrap();
    drv.enable();
    assert!(efd.read().is_err(), "nothing completed yet");
    // The admin completion queue always interrupts, on vector 0.
    drv.identify_controller();
    assert!(efd.read().unwrap() >= 1);
}

#[test]
fn a_read_only_backend_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.img");
    std::fs::write(&path, pattern(9, 4096)).unwrap();
    let d = Daemon::start(&["--path", path.to_str().unwrap(), "--readonly"]);
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    drv.create_io_queues();
    assert!(drv.run(1, rw(false, 0, 8, DATA)).ok());
    assert_eq!(drv.ram.map.read(DATA, 4096), pattern(9, 4096));
    let c = drv.run(1, rw(true, 0, 8, DATA2));
    assert_eq!(c.status, 0x20, "Namespace Is Write Protected: {c:?}");
    assert_eq!(std::fs::read(&path).unwrap(), pattern(9, 4096));
}
