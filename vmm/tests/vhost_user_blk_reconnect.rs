//! A vhost-user-blk backend crashes mid-job and comes back: the bench guest runs a
//! write-heavy verify job on a virtio-blk disk, the backend is killed with SIGKILL while the
//! write pass is under way and restarted on the same socket after a pause. The VMM's frontend
//! must notice the hang-up, reconnect, and have the requests the dead backend had taken
//! resubmitted (INFLIGHT_SHMFD): the guest job completes with no errors and the file holds
//! the whole pattern.
//!
//! Two backends: our `iopath-vhost-user-blk` daemon (INFLIGHT_SHMFD), at queue depth 16,
//! where requests complete out of order and only the in-flight region tells the new daemon
//! which ones are pending; and qemu-storage-daemon, whose 7.2 release (Debian 12) does not
//! offer INFLIGHT_SHMFD, at depth 1: the one request in flight sits at the used index the
//! frontend restarts the ring from, so a plain replay resubmits it.
//!
//! Our daemon runs as a child process of this test binary (re-executed to run
//! [`blk_daemon_child`]), so that it can be killed without a separately built binary.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use backends::engine::BackendSpec;
use backends::vhost_user_blk::backend::ServeOptions;
use backends::vhost_user_blk::daemon::{self, DaemonConfig};
use common::{block_job, kvm_or_skip};
use iopath_mailbox::{pattern, BlockDevice, Status, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;

const QSD: &str = "/usr/bin/qemu-storage-daemon";
/// Set (to "IMAGE SOCKET") in the environment of this binary re-executed as our daemon.
const DAEMON_ENV: &str = "IOPATH_TEST_BLK_DAEMON";
const SEED: u64 = 0x0c7a_54ed;
const FILL: u8 = 0xee;
/// Written and read back in 4 KiB I/Os: long enough (thousands of requests) for the kill to
/// land in the write pass.
const REGION: u64 = 32 << 20;
const DISK_BYTES: u64 = REGION + (1 << 20);
const BLOCK: u32 = 4096;

/// A backend process on a socket, killed when dropped.
struct Backend {
    child: Child,
}

impl Backend {
    fn kill(&mut self) {
        // Child::kill sends SIGKILL.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a backend with `cmd` and waits for its socket (a stale one is removed first).
fn start(mut cmd: Command, socket: &Path) -> Backend {
    let _ = std::fs::remove_file(socket);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the backend");
    let mut b = Backend { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if let Ok(Some(status)) = b.child.try_wait() {
            panic!("the backend exited early: {status}");
        }
        assert!(Instant::now() < deadline, "no socket {}", socket.display());
        thread::sleep(Duration::from_millis(10));
    }
    b
}

fn qsd(image: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(QSD);
    cmd.arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=file0,filename={},cache.direct=off",
            image.display()
        ))
        .arg("--export")
        .arg(format!(
            "type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path={},\
             writable=on",
            socket.display()
        ));
    cmd
}

/// Our daemon: this test binary again, running only [`blk_daemon_child`].
fn our_daemon(image: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "blk_daemon_child", "--nocapture"])
        .env(
            DAEMON_ENV,
            format!("{} {}", image.display(), socket.display()),
        );
    cmd
}

/// Whether the block at `offset` of the image still holds the fill byte.
fn untouched(image: &std::fs::File, offset: u64) -> bool {
    let mut b = vec![0u8; BLOCK as usize];
    image.read_exact_at(&mut b, offset).unwrap();
    b.iter().all(|&x| x == FILL)
}

/// Runs the verify job and, three times during the write pass (once 1/8, 3/8 and 5/8 of the
/// region is written), kills the backend and restarts it after a pause; then checks the job
/// and the file. Each kill has a fair chance of catching requests that completed out of
/// order, which a replay without the in-flight region gets wrong.
fn crash_mid_job_and_restart(backend: impl Fn(&Path, &Path) -> Command, depth: u32) {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let image: PathBuf = dir.path().join("disk.img");
    std::fs::write(&image, vec![FILL; DISK_BYTES as usize]).unwrap();
    let socket = dir.path().join("blk.sock");
    let mut daemon = start(backend(&image, &socket), &socket);

    let disk = format!("socket={},iface=vhost-user", socket.display());
    let vm = thread::spawn(move || {
        bench_vm::run(BenchVmConfig {
            ram: RamConfig {
                size: 128 << 20,
                hugepages: false,
            },
            image: BENCH_GUEST.to_vec(),
            job: block_job(
                BlockDevice::VirtioBlk,
                SEED,
                Workload::Verify,
                BLOCK,
                depth,
                REGION,
            ),
            timeout: Duration::from_secs(300),
            console: None,
            disks: vec![disk.parse().unwrap()],
            devices: Vec::new(),
            nets: Vec::new(),
        })
    });

    let file = std::fs::File::open(&image).unwrap();
    for eighths in [1, 3, 5] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while untouched(&file, REGION / 8 * eighths) {
            assert!(!vm.is_finished(), "the VM ended before writing");
            assert!(Instant::now() < deadline, "the guest stopped writing");
            thread::sleep(Duration::from_millis(1));
        }
        daemon.kill();
        assert!(
            untouched(&file, REGION - u64::from(BLOCK)),
            "the write pass ended before the backend was killed: nothing was tested"
        );
        // The guest keeps queueing requests (and the frontend keeps retrying) meanwhile.
        thread::sleep(Duration::from_millis(700));
        daemon = start(backend(&image, &socket), &socket);
    }

    let run = match vm.join().unwrap() {
        Ok(run) => run,
        Err(e) => panic!(
            "bench guest run: {}\n{}",
            vmm::error_chain(&e),
            e.console_tail().unwrap_or("")
        ),
    };
    drop(daemon);
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    let res = run.mailbox.block;
    assert_eq!(res.errors, 0, "read-back mismatches: {}", run.console);
    assert_eq!(res.ops, 2 * REGION / u64::from(BLOCK), "{}", run.console);
    let mut data = Vec::new();
    std::fs::File::open(&image)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(
        pattern::check_image(SEED, &data, REGION as usize, FILL),
        Ok(()),
        "every acknowledged write is in the file"
    );
}

#[test]
fn qemu_storage_daemon_killed_mid_job_and_restarted_at_depth_1() {
    if !kvm_or_skip() {
        return;
    }
    if !Path::new(QSD).exists() {
        eprintln!("skipped: qemu-storage-daemon not installed");
        return;
    }
    crash_mid_job_and_restart(qsd, 1);
}

#[test]
fn our_daemon_killed_mid_job_and_restarted_resubmits_what_it_had_taken() {
    if !kvm_or_skip() {
        return;
    }
    crash_mid_job_and_restart(our_daemon, 16);
}

/// Not a test: the body of the daemon process [`our_daemon`] starts.
#[test]
#[ignore = "run by our_daemon_killed_mid_job_and_restarted_resubmits_what_it_had_taken"]
fn blk_daemon_child() {
    let Ok(args) = std::env::var(DAEMON_ENV) else {
        return;
    };
    let _ = env_logger::builder().is_test(true).try_init();
    let (image, socket) = args.split_once(' ').expect("IMAGE SOCKET");
    let config = DaemonConfig {
        socket: socket.into(),
        client: false,
        backend: BackendSpec::File {
            path: image.into(),
            direct: false,
            read_only: false,
        },
        read_only: false,
        queues: 1,
        queue_size: 256,
        serve: ServeOptions {
            poll: Duration::ZERO,
        },
        max_connections: 1,
        max_mem_slots: 32,
        user: None,
    };
    if let Err(e) = daemon::run(&config) {
        panic!("daemon: {}", vmm::error_chain(&e));
    }
}
