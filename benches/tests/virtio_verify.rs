//! The whole virtio path with our daemon: the bench guest's virtio-blk driver writes a pattern
//! through the VMM's vhost-user frontend to `iopath-vhost-user-blk` (run as iopath-bench's
//! daemon subcommand, as the bench does) and reads it back; the host then checks the file.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iopath_mailbox::{pattern, BlockDevice, BlockJob, Job, JobKind, Status, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::disk::{DiskBackend, DiskConfig, DiskIface};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;
use vmm::virtio::vhost_user_blk::{VhostUserBlkConfig, DEFAULT_QUEUE_SIZE};

const DISK_BYTES: usize = 4 << 20;
const SEED: u64 = 0xda7a;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(image: &Path, socket: &Path, readonly: bool) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iopath-bench"));
    cmd.args(["vhost-user-blk-daemon", "--socket"])
        .arg(socket)
        .arg("--path")
        .arg(image)
        .stdin(Stdio::null());
    if readonly {
        cmd.arg("--readonly");
    }
    let d = Daemon(cmd.spawn().unwrap());
    let t = Instant::now();
    while !socket.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon made no socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    d
}

fn run(socket: &Path, workload: Workload, ops: u64) -> bench_vm::BenchRun {
    bench_vm::run(BenchVmConfig {
        ram: RamConfig {
            size: 128 << 20,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job: Job {
            kind: JobKind::Block as u32,
            seed: SEED,
            block: BlockJob {
                device: BlockDevice::VirtioBlk as u32,
                workload: workload as u32,
                block_size: 16384,
                queue_depth: 8,
                ops,
                duration_ms: 0,
                region_bytes: 2 << 20,
            },
            ..Job::default()
        },
        timeout: Duration::from_secs(120),
        console: None,
        disks: vec![DiskConfig {
            backend: DiskBackend::VhostUser(VhostUserBlkConfig {
                socket: socket.to_path_buf(),
                queues: 1,
                queue_size: DEFAULT_QUEUE_SIZE,
            }),
            iface: DiskIface::VhostUser,
        }],
        devices: Vec::new(),
        nets: Vec::new(),
    })
    .expect("bench guest run")
}

#[test]
fn verify_through_our_daemon_lands_in_the_file() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0xee; DISK_BYTES]).unwrap();
    let socket = dir.path().join("blk.sock");
    let _d = daemon(&image, &socket, false);
    let r = run(&socket, Workload::Verify, 0);
    assert_eq!(r.mailbox.status, Status::Done as u32, "{}", r.console);
    assert_eq!(r.mailbox.block.errors, 0, "{}", r.console);
    assert_eq!(r.mailbox.block.ops, 2 * (2 << 20) / 16384);
    assert_eq!(r.disk_exits_measured, [0], "notifies never reach userspace");
    let data = std::fs::read(&image).unwrap();
    assert_eq!(pattern::check_image(SEED, &data, 2 << 20, 0xee), Ok(()));
}

#[test]
fn a_read_only_daemon_refuses_the_guest_writes() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0x33; DISK_BYTES]).unwrap();
    let socket = dir.path().join("blk.sock");
    let _d = daemon(&image, &socket, true);
    let r = run(&socket, Workload::RandWrite, 40);
    assert_eq!(r.mailbox.status, Status::Done as u32, "{}", r.console);
    assert_eq!(
        r.mailbox.block.errors, 40,
        "every write fails: {}",
        r.console
    );
    assert!(std::fs::read(&image).unwrap().iter().all(|&b| b == 0x33));
}
