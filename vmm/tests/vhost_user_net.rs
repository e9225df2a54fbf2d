//! The bench guest's virtio-net driver, through the VMM's virtio-pci transport and vhost-user
//! frontend, against two backends: our `iopath-vhost-user-net --reflect` and DPDK testpmd's
//! net_vhost port in macswap mode (a backend nobody here wrote). Every frame the guest sends
//! must come back intact, none lost; the daemon's own counters must match the guest's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{bench_vm_config, kvm_or_skip};
use iopath_mailbox::net::{mac_to_u64, NetDevice, NetJob, NetResults, NetWorkload};
use iopath_mailbox::{Job, JobKind, Status};
use vmm::bench_vm::{self, BenchRun, BenchVmConfig};
use vmm::net::{NetConfig, NetIface};

const DAEMON: &str = "iopath-vhost-user-net";
const TESTPMD: &str = "/usr/bin/dpdk-testpmd";
const SEED: u64 = 0x5eed_0e70;
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x0e, 0x70, 0x01];

/// A backend process, killed when dropped. Its stderr goes to a file beside the socket, not a
/// pipe nobody drains while the test runs (a full one would block the backend's logging).
struct Backend {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Backend {
    /// Starts `cmd` and waits for it to create `socket`.
    fn start(mut cmd: Command, socket: &Path, name: &str) -> Backend {
        let log = socket.with_extension("log");
        let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{log:?}: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut b = Backend {
            child,
            socket: socket.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.socket.exists() {
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("{name} exited early: {status}: {}", b.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not create {socket:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        b
    }

    /// Stops the process with SIGTERM and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.stderr()
    }

    fn stderr(&mut self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our daemon: next to this test's binary in the target directory, built on demand.
fn daemon_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(DAEMON);
    if !bin.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "backends", "--bin", DAEMON]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the daemon");
        assert!(status.success(), "building {DAEMON} failed");
    }
    bin
}

fn reflect_daemon(dir: &Path) -> Backend {
    let socket = dir.join("net.sock");
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--socket").arg(&socket).arg("--reflect");
    Backend::start(cmd, &socket, DAEMON)
}

/// testpmd with a vhost-user port that swaps the MACs of every frame and sends it back. No
/// hugepages: the port maps guest RAM from the VMM's memfd, its own mbufs need none.
fn testpmd(dir: &Path) -> Backend {
    let socket = dir.join("testpmd.sock");
    // DPDK's runtime directory is per file prefix: two instances with one prefix refuse to
    // run side by side, and the tests of this file run in parallel.
    let unique = dir.file_name().unwrap().to_string_lossy();
    let prefix = format!("iopath-vmm-test-{unique}");
    let mut cmd = Command::new(TESTPMD);
    cmd.args([
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--file-prefix",
        &prefix,
    ])
    .arg("--vdev")
    .arg(format!("net_vhost0,iface={},queues=1", socket.display()))
    .args([
        "--",
        "--forward-mode=macswap",
        "--auto-start",
        "--nb-cores=1",
        "--total-num-mbufs=8192",
        // Without a period testpmd waits for a key press on stdin, which is closed.
        "--stats-period=60",
    ]);
    Backend::start(cmd, &socket, "dpdk-testpmd")
}

fn net_job(workload: NetWorkload, frame_bytes: u32, depth: u32, ops: u64) -> Job {
    Job {
        kind: JobKind::Net as u32,
        seed: SEED,
        net: NetJob {
            device: NetDevice::VirtioNet as u32,
            workload: workload as u32,
            frame_bytes,
            depth,
            ops,
            // Long enough for a loaded machine: a frame is lost only if it never comes back.
            timeout_ms: 2000,
            ..NetJob::default()
        },
        ..Job::default()
    }
}

fn run(job: Job, socket: &Path) -> BenchRun {
    let net: NetConfig = format!(
        "socket={},iface=vhost-user,mac=52:54:00:0e:70:01",
        socket.display()
    )
    .parse()
    .unwrap();
    assert_eq!(net.iface, NetIface::VhostUser);
    match bench_vm::run(BenchVmConfig {
        nets: vec![net],
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

/// Every frame back intact, none lost or foreign, and the MAC the VMM configured.
fn assert_all_back(run: &BenchRun, ops: u64) -> NetResults {
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    let res = run.mailbox.net;
    assert_eq!(res.sent, ops, "{}", run.console);
    assert_eq!(res.received, res.sent, "{}", run.console);
    assert_eq!(
        (res.bad, res.lost, res.foreign),
        (0, 0, 0),
        "{}",
        run.console
    );
    assert_eq!(res.mac, mac_to_u64(GUEST_MAC), "{}", run.console);
    res
}

/// Round trips of 64- and 1514-byte frames at depth 1 and 8.
fn round_trips(socket: &Path) {
    let ops = 2000;
    for (frame, depth) in [(64, 1), (64, 8), (1514, 1), (1514, 8)] {
        let run = run(net_job(NetWorkload::RoundTrip, frame, depth, ops), socket);
        let res = assert_all_back(&run, ops);
        assert_eq!(res.latency.count(), ops, "a latency sample per frame");
        eprintln!(
            "rr {frame} bytes depth {depth}: {:.1} ms guest time, {} exits on the virtio BARs in the loop",
            run.guest_time.as_secs_f64() * 1e3,
            run.disk_exits_measured[0]
        );
    }
}

fn daemon_or_skip() -> bool {
    kvm_or_skip()
}

fn testpmd_or_skip() -> bool {
    if !kvm_or_skip() {
        return false;
    }
    if !Path::new(TESTPMD).exists() {
        eprintln!("skipped: {TESTPMD} is absent (Debian package dpdk-dev)");
        return false;
    }
    true
}

#[test]
fn round_trips_through_the_reflect_daemon_come_back_intact() {
    if !daemon_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = reflect_daemon(dir.path());
    round_trips(&daemon.socket);
}

/// The counters the daemon prints when it exits.
fn daemon_counts(stderr: &str) -> (u64, u64, u64) {
    let field = |key: &str| -> u64 {
        let at = stderr
            .find(&format!("{key}="))
            .unwrap_or_else(|| panic!("no {key}= in {stderr}"));
        let rest = &stderr[at + key.len() + 1..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().unwrap()
    };
    (field("tx_frames"), field("rx_frames"), field("dropped"))
}

/// Sent frames are intact whatever comes back: a reflector with no free receive buffer drops
/// (the tx workload sends faster than the guest takes frames in on a loaded host).
fn assert_tx(run: &BenchRun, ops: u64) -> NetResults {
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    let res = run.mailbox.net;
    assert_eq!(res.sent, ops, "{}", run.console);
    assert_eq!((res.bad, res.foreign), (0, 0), "{}", run.console);
    assert!(
        res.received > 0 && res.received <= res.sent,
        "{}",
        run.console
    );
    assert_eq!(res.mac, mac_to_u64(GUEST_MAC), "{}", run.console);
    res
}

#[test]
fn tx_through_the_reflect_daemon_is_counted_by_it_and_needs_no_exits() {
    if !daemon_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = reflect_daemon(dir.path());
    let ops = 20_000;
    let run = run(net_job(NetWorkload::Tx, 64, 32, ops), &daemon.socket);
    let res = assert_tx(&run, ops);
    // Notifies are ioeventfds and completions are polled: the measured loop traps nothing.
    assert_eq!(run.disk_exits_measured, [0], "{}", run.console);
    let stderr = daemon.stop();
    // The far side's count: it took every frame sent, delivered what the guest received and
    // dropped the rest.
    assert_eq!(
        daemon_counts(&stderr),
        (res.sent, res.received, res.sent - res.received),
        "{stderr}\n{}",
        run.console
    );
}

#[test]
fn tx_through_testpmd_macswap_comes_back_intact() {
    if !testpmd_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pmd = testpmd(dir.path());
    let ops = 20_000;
    let run = run(net_job(NetWorkload::Tx, 64, 32, ops), &pmd.socket);
    assert_tx(&run, ops);
}

#[test]
fn round_trips_through_testpmd_macswap_come_back_intact() {
    if !testpmd_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pmd = testpmd(dir.path());
    round_trips(&pmd.socket);
}
