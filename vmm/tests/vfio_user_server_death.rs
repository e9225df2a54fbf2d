//! A vfio-user server that dies mid-job fails its device, not the VM: the VMM notices the
//! hang-up, the device reads as removed, the guest's driver times its commands out and the run
//! returns with a device error that names the failed device.

mod common;
mod daemons;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{bench_vm_config, block_job, kvm_or_skip};
use daemons::{bin_or_skip, wait_for, Daemon};
use iopath_mailbox::{error, BlockDevice, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::vfio::DeviceConfig;

const DISK_BYTES: u64 = 64 << 20;

/// An NVMe server on a new zeroed disk file in `dir`: the disk, the socket and the server;
/// `None` (said in one line) without /dev/kvm or the server binary.
fn start_server(dir: &Path) -> Option<(PathBuf, PathBuf, Daemon)> {
    if !kvm_or_skip() {
        return None;
    }
    let bin = bin_or_skip("iopath-vfio-user-nvme")?;
    let disk = dir.join("disk.img");
    File::create(&disk).unwrap().set_len(DISK_BYTES).unwrap();
    let socket = dir.join("nvme.sock");
    let server = Daemon::start(&bin, &socket, &["--path", disk.to_str().unwrap()]);
    Some((disk, socket, server))
}

#[test]
fn a_killed_server_fails_the_device_and_the_vm_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some((disk, socket, server)) = start_server(dir.path()) else {
        return;
    };

    // Sequential writes for a minute: far longer than the test waits.
    let mut job = block_job(BlockDevice::Nvme, 7, Workload::Write, 4096, 4, 0);
    job.block.duration_ms = 60_000;
    let device = format!("vfio-user={}", socket.display());
    let cfg = BenchVmConfig {
        devices: vec![device.parse::<DeviceConfig>().unwrap()],
        ..bench_vm_config(job)
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // The receiver may have given up on a hung run.
        let _ = tx.send(bench_vm::run(cfg));
    });

    // The job is under way once its writes reach the file.
    let file = File::open(&disk).unwrap();
    let written = wait_for(Duration::from_secs(60), || {
        let mut block = [0u8; 4096];
        file.read_exact_at(&mut block, 0).unwrap();
        block.iter().any(|&b| b != 0)
    });
    assert!(written, "the guest's writes never reached the file");
    let status = server.kill();
    assert!(!status.success());

    // The guest's driver gives up on its commands after its stall time-out; the bound here
    // only keeps a hung VMM from hanging the test.
    let run = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the VM run did not return after the server died");
    match run {
        Err(bench_vm::Error::GuestFailed {
            code,
            failed_devices,
            log,
            ..
        }) => {
            assert_eq!(code, error::DEVICE_ERROR, "guest log:\n{log}");
            assert_eq!(failed_devices.len(), 1, "{failed_devices:?}");
            assert_eq!(failed_devices[0].device, device);
            assert!(
                failed_devices[0].reason.contains("hung up")
                    || failed_devices[0].reason.contains("closed"),
                "{}",
                failed_devices[0]
            );
            assert!(
                log.contains("CSTS 0xffffffff"),
                "the device reads as removed to the guest:\n{log}"
            );
        }
        Err(e) => panic!(
            "expected a guest device error, got: {}",
            vmm::error_chain(&e)
        ),
        Ok(r) => panic!("the job finished without its device: {:?}", r.mailbox.block),
    }
}

/// The same through `iopath-vmm`: it logs the failure once when it happens, exits on its own
/// when the guest gives up, and its error names the failed device.
#[test]
fn iopath_vmm_reports_the_failed_device_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let Some((disk, socket, server)) = start_server(dir.path()) else {
        return;
    };
    let stderr = dir.path().join("vmm.err");
    let device = format!("vfio-user={}", socket.display());
    let mut vmm = std::process::Command::new(env!("CARGO_BIN_EXE_iopath-vmm"))
        .args(["--job", "block", "--workload", "write", "--runtime", "60s"])
        .args(["--serial", "none", "--timeout", "120s", "--device", &device])
        .stdout(std::process::Stdio::null())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let file = File::open(&disk).unwrap();
    assert!(wait_for(Duration::from_secs(60), || {
        let mut block = [0u8; 4096];
        file.read_exact_at(&mut block, 0).unwrap();
        block.iter().any(|&b| b != 0)
    }));
    server.kill();
    let exited = wait_for(Duration::from_secs(300), || {
        vmm.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = vmm.kill();
    }
    let status = vmm.wait().unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(exited, "iopath-vmm hung after the server died: {err}");
    assert_eq!(status.code(), Some(1), "{err}");
    let logged: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("device failed:"))
        .collect();
    assert_eq!(logged.len(), 1, "one log line when it happens: {err}");
    assert!(logged[0].contains(&device), "{}", logged[0]);
    let error: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("iopath-vmm: error:"))
        .collect();
    assert_eq!(error.len(), 1, "{err}");
    assert!(
        error[0].contains(&format!("{device} failed: the server hung up")),
        "{}",
        error[0]
    );
}
