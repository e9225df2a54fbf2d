//! The bench guest's virtio-blk driver, through the VMM's virtio-pci transport and vhost-user
//! frontend, against a backend nobody here wrote: qemu-storage-daemon's vhost-user-blk export
//! over a file. A verify job must land its pattern in the file; a random-read job must run
//! with (almost) no exits to the VMM, since notifies are ioeventfds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{bench_vm_config, block_job, kvm_or_skip};
use iopath_mailbox::{pattern, BlockDevice, Job, Status, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::disk::{DiskConfig, DiskIface};
use vmm::memory::{GuestRam, RamConfig};
use vmm::virtio::vhost_user_blk::{VhostUserBlk, VhostUserBlkConfig};
use vmm::virtio::{Activation, QueueActivation, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;

const QSD: &str = "/usr/bin/qemu-storage-daemon";
const DISK_BYTES: u64 = 4 << 20;
const SEED: u64 = 0x5eed_b10c;

/// A running qemu-storage-daemon, killed when dropped.
struct Qsd {
    child: Child,
    socket: PathBuf,
}

impl Qsd {
    fn start(image: &Path, socket: &Path) -> Qsd {
        let child = Command::new(QSD)
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=file0,filename={},cache.direct=off",
                image.display()
            ))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path={},writable=on",
                socket.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-storage-daemon");
        let mut qsd = Qsd {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !qsd.socket.exists() {
            if let Ok(Some(status)) = qsd.child.try_wait() {
                panic!("qemu-storage-daemon exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "qemu-storage-daemon did not create {}",
                qsd.socket.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
        qsd
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prerequisites_or_skip() -> bool {
    if !kvm_or_skip() {
        return false;
    }
    if !Path::new(QSD).exists() {
        eprintln!("skipped: qemu-storage-daemon not installed");
        return false;
    }
    true
}

/// A 4 MiB image filled with `fill`, exported by a fresh daemon.
fn exported_disk(dir: &tempfile::TempDir, fill: u8) -> (PathBuf, Qsd) {
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![fill; DISK_BYTES as usize]).unwrap();
    let qsd = Qsd::start(&image, &dir.path().join("blk.sock"));
    (image, qsd)
}

fn run(job: Job, socket: &Path) -> bench_vm::BenchRun {
    let disk: DiskConfig = format!("socket={},iface=vhost-user", socket.display())
        .parse()
        .unwrap();
    assert_eq!(disk.iface, DiskIface::VhostUser);
    match bench_vm::run(BenchVmConfig {
        disks: vec![disk],
        ..bench_vm_config(job)
    }) {
        Ok(run) => run,
        Err(e) => panic!(
            "bench guest run: {}\n{}",
            vmm::error_chain(&e),
            e.console_tail().unwrap_or("")
        ),
    }
}

#[test]
fn verify_through_vhost_user_blk_lands_in_the_backing_file() {
    if !prerequisites_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (image, qsd) = exported_disk(&dir, 0xee);
    // 16 KiB I/Os at depth 8 over the first 2 MiB; the rest must stay untouched.
    let region = 2 << 20;
    let run = run(
        block_job(
            BlockDevice::VirtioBlk,
            SEED,
            Workload::Verify,
            16384,
            8,
            region,
        ),
        &qsd.socket,
    );
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    let res = run.mailbox.block;
    assert_eq!(res.errors, 0, "{}", run.console);
    assert_eq!(
        res.device_bytes, DISK_BYTES,
        "capacity from the backend's config"
    );
    assert_eq!(res.ops, 2 * region / 16384);
    assert_eq!(res.bytes, 2 * region);
    drop(qsd);

    let data = std::fs::read(&image).unwrap();
    assert_eq!(data.len() as u64, DISK_BYTES);
    assert_eq!(
        pattern::check_image(SEED, &data, region as usize, 0xee),
        Ok(())
    );
}

#[test]
fn random_reads_complete_without_exits_on_the_notify_path() {
    if !prerequisites_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_image, qsd) = exported_disk(&dir, 0x5a);
    let ops = 2000;
    let mut job = block_job(BlockDevice::VirtioBlk, SEED, Workload::RandRead, 4096, 4, 0);
    job.block.ops = ops;
    let run = run(job, &qsd.socket);
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    let res = run.mailbox.block;
    assert_eq!(res.ops, ops, "{}", run.console);
    assert_eq!(res.errors, 0, "{}", run.console);
    // Device set-up takes a few dozen trapped accesses; the I/O itself must take none (notifies
    // are ioeventfds, completions are polled from guest memory).
    let mmio = run.exits.mmio_read + run.exits.mmio_write;
    eprintln!(
        "randread qd4 x{ops}: {} userspace MMIO exits, {} on the virtio BARs, {:.1} ms guest time",
        mmio,
        run.disk_exits[0],
        run.guest_time.as_secs_f64() * 1e3
    );
    assert!(mmio < ops / 10, "{mmio} MMIO exits for {ops} I/Os");
    assert!(run.disk_exits[0] < ops / 10, "{:?}", run.disk_exits);
}

/// The frontend without a guest: activate, reset (GET_VRING_BASE) and activate again, as a
/// driver that resets the device would make it, and the capacity qsd reports.
#[test]
fn the_frontend_restarts_its_queue_after_a_reset() {
    if !prerequisites_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_image, qsd) = exported_disk(&dir, 0);
    let ram = GuestRam::new(RamConfig {
        size: 64 << 20,
        hugepages: false,
    })
    .unwrap();
    let mut blk = VhostUserBlk::connect(
        &VhostUserBlkConfig {
            socket: qsd.socket.clone(),
            queues: 1,
            queue_size: 256,
        },
        ram.memory().clone(),
    )
    .unwrap();
    assert_eq!(blk.capacity_sectors(), DISK_BYTES / 512);
    assert_eq!(blk.queue_max_sizes(), &[256]);
    let activation = || Activation {
        features: 1 << 32 | 1 << 29,
        queues: vec![QueueActivation {
            index: 0,
            size: 64,
            desc: 0x10_0000,
            driver: 0x10_1000,
            device: 0x10_2000,
            kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            call: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        }],
    };
    blk.activate(activation()).unwrap();
    blk.reset();
    blk.activate(activation()).unwrap();
    // Rings outside guest RAM are refused before the backend hears of them.
    let mut bad = activation();
    bad.queues[0].device = (64 << 20) - 16;
    let err = blk.activate(bad).unwrap_err();
    assert!(
        vmm::error_chain(&err).contains("device ring"),
        "{}",
        vmm::error_chain(&err)
    );
    blk.reset();
}

#[test]
fn a_missing_socket_fails_before_the_guest_starts() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let err = bench_vm::run(BenchVmConfig {
        timeout: Duration::from_secs(30),
        disks: vec![format!("socket={}", socket.display()).parse().unwrap()],
        ..bench_vm_config(block_job(
            BlockDevice::VirtioBlk,
            SEED,
            Workload::Read,
            4096,
            1,
            0,
        ))
    })
    .unwrap_err();
    let chain = vmm::error_chain(&err);
    assert!(
        chain.contains(&format!(
            "connecting to vhost-user socket {}",
            socket.display()
        )) && chain.contains("No such file"),
        "{chain}"
    );
}
