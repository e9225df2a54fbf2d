//! The passthrough path on any host: the bench guest drives the vfio-user NVMe server through
//! `--device vfio-user=SOCKET` exactly as it drives the emulated NVMe, the data lands in the
//! server's backing file, and the doorbells (mmapped into the guest) never exit.

mod vfio_common;

mod common;

use std::os::fd::AsFd;

use common::{bench_vm_config, block_job, kvm_or_skip};
use iopath_mailbox::{pattern, BlockDevice, Job, Status, Workload};
use vfio_common::{backing_file, serve};
use vmm::bench_vm::{self, BenchRun, BenchVmConfig};
use vmm::memory::{GuestRam, RamConfig};
use vmm::vfio::transport::{DmaWindow, Transport, CONFIG_REGION};
use vmm::vfio::user::client::{self, Client};
use vmm::vfio::user::wire::{self, Command};
use vmm::vfio::user::VfioUser;
use vmm::vfio::DeviceConfig;
use vmm_sys_util::eventfd::EventFd;

const DISK_BYTES: u64 = 4 << 20;
const SEED: u64 = 0x5eed_0f10;

fn run(job: Job, socket: &std::path::Path) -> BenchRun {
    bench_vm::run(BenchVmConfig {
        devices: vec![format!("vfio-user={}", socket.display())
            .parse::<DeviceConfig>()
            .unwrap()],
        ..bench_vm_config(job)
    })
    .expect("bench guest run")
}

#[test]
fn verify_then_randread_through_vfio_user_nvme() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(dir.path(), DISK_BYTES as usize, 0xee);
    let socket = serve(dir.path(), &path);

    // 16 KiB I/Os (PRP lists) at depth 8 over the first 2 MiB; the rest must stay untouched.
    let region = 2 << 20;
    let verify = run(
        block_job(BlockDevice::Nvme, SEED, Workload::Verify, 16384, 8, region),
        &socket,
    );
    assert_eq!(
        verify.mailbox.status,
        Status::Done as u32,
        "guest failed: {}",
        verify.console
    );
    let res = verify.mailbox.block;
    assert_eq!(res.errors, 0, "{}", verify.console);
    assert_eq!(res.device_bytes, DISK_BYTES);
    assert_eq!(res.ops, 2 * region / 16384);
    assert_eq!(res.bytes, 2 * region);
    assert!(
        verify.console.contains("class 010802"),
        "found by class like the emulated NVMe: {}",
        verify.console
    );
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len() as u64, DISK_BYTES);
    assert_eq!(
        pattern::check_image(SEED, &data, region as usize, 0xee),
        Ok(())
    );

    // A second VM on the same server: the first one's teardown released the connection.
    let mut job = block_job(BlockDevice::Nvme, SEED, Workload::RandRead, 4096, 4, 0);
    job.block.ops = 2000;
    let rr = run(job, &socket);
    assert_eq!(rr.mailbox.status, Status::Done as u32, "{}", rr.console);
    assert_eq!(rr.mailbox.block.ops, 2000);
    assert_eq!(rr.mailbox.block.errors, 0, "{}", rr.console);
    assert!(
        rr.disk_exits[0] > 0,
        "controller set-up goes through trapped registers"
    );
    assert_eq!(
        rr.disk_exits_measured[0], 0,
        "doorbell stores land in the mmapped page: no exit per I/O"
    );
    let b = rr.mailbox.block;
    let secs = b.elapsed_ticks as f64 / (rr.mailbox.job.tsc_khz.max(1) as f64 * 1e3);
    eprintln!(
        "vfio-user randread 4k qd4: {} ops in {:.3} s ({:.0} IOPS), {} set-up exits, {} \
         exits in the measured loop",
        b.ops,
        secs,
        b.ops as f64 / secs.max(1e-9),
        rr.disk_exits[0],
        rr.disk_exits_measured[0]
    );
}

/// The transport against the real server, no VM: what the device model relies on, and the
/// vfio_user crate's client bugs this client must not have.
#[test]
fn the_transport_speaks_to_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(dir.path(), 1 << 20, 0);
    let socket = serve(dir.path(), &path);
    let mut t = VfioUser::connect(&socket).unwrap();
    let mut id = [0u8; 4];
    t.config_read(0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0x0010_1b36);
    let bar0 = t.region(0).unwrap().clone();
    assert_eq!(bar0.size, 0x4000);
    assert!(bar0.mmappable, "the doorbell page comes with its file");
    assert_eq!(
        bar0.mmap_areas(),
        [vmm::vfio::transport::Area {
            offset: 0x1000,
            size: 0x1000
        }]
    );
    assert!(t.mmap_source(0).is_some());
    assert!(t.region(2).is_none(), "BAR2 is not implemented");
    assert_eq!(t.region(CONFIG_REGION).unwrap().size, 256);
    assert_eq!(t.msix_vectors(), 65);
    let mut vs = [0u8; 4];
    t.region_read(0, 0x8, &mut vs).unwrap();
    assert_eq!(u32::from_le_bytes(vs), 0x0001_0400, "NVMe 1.4 VS register");

    // DMA_MAP errors are errors (vfio_user's Client ignores them).
    let ram = GuestRam::new(RamConfig {
        size: 1 << 20,
        hugepages: false,
    })
    .unwrap();
    let window = DmaWindow {
        gpa: 0,
        len: 1 << 20,
        host: std::ptr::null_mut(),
        fd: ram.file().as_fd(),
        fd_offset: 0,
    };
    // SAFETY: `ram` (and its memfd) outlives the transport, which unmaps on the server's side
    // when the connection ends.
    unsafe { t.dma_map(&window) }.unwrap();
    // SAFETY: as above.
    let overlap = unsafe { t.dma_map(&window) };
    assert!(overlap.is_err(), "an overlapping window is refused");
    t.dma_unmap(0, 1 << 20).unwrap();
    assert!(t.dma_unmap(0, 1 << 20).is_err(), "nothing left to unmap");
    // Every MSI-X vector routed to an eventfd (in as many messages as the server takes fds
    // per message), then released.
    let fds: Vec<EventFd> = (0..65)
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .collect();
    t.enable_msix(&fds.iter().collect::<Vec<_>>()).unwrap();
    t.disable_msix().unwrap();
    t.reset().unwrap();
    drop(t);

    // An error reply to REGION_READ does not hang (vfio_user's Client waits for a full reply).
    let mut c = Client::connect(&socket).unwrap();
    c.call(Command::Version, &wire::version(), &[]).unwrap();
    let body = wire::region_access(0, 0x4000, 4, &[]);
    match c.call(Command::RegionRead, &body, &[]) {
        Err(client::Error::Refused { .. }) => {}
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.payload)),
    }
    let body = wire::region_access(0, 0x8, 4, &[]);
    let r = c.call(Command::RegionRead, &body, &[]).unwrap();
    assert_eq!(
        wire::region_read_data(&r.payload, 4).unwrap(),
        0x0001_0400u32.to_le_bytes()
    );
}
