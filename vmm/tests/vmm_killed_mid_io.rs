//! SIGKILL of the VMM in the middle of write I/O: the vhost-user-blk and vfio-user NVMe
//! daemons live on, serve the next VMM (whose verify jobs pass on the same files), and the
//! files hold only whole blocks: each is untouched or fully written.

mod common;
mod daemons;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::kvm_or_skip;
use daemons::{bin_or_skip, wait_for, Daemon};
use iopath_mailbox::pattern;

const DISK_BYTES: usize = 64 << 20;
/// The seed `iopath-vmm` gives every job.
const SEED: u64 = 1;
/// The killed jobs' block size: the unit a write is whole or absent in.
const BLOCK: usize = 4096;

/// `iopath-vmm` running a verify job over the whole disk on `disks`.
fn vmm(disks: &[&str], bs: &str, stderr: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iopath-vmm"));
    cmd.args(["--job", "block", "--workload", "verify", "--bs", bs])
        .args(["--qd", "4", "--serial", "none", "--timeout", "600s"])
        .args(disks)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(stderr).unwrap());
    cmd
}

/// Starts a VMM, waits until its writes reach `image` (its first block changes), kills it.
fn kill_mid_write(mut cmd: Command, image: &Path, stderr: &Path) {
    let mut child: Child = cmd.spawn().expect("spawn iopath-vmm");
    let file = File::open(image).unwrap();
    let writing = wait_for(Duration::from_secs(120), || {
        let mut block = [0u8; BLOCK];
        file.read_exact_at(&mut block, 0).unwrap();
        block.iter().any(|&b| b != 0) || child.try_wait().unwrap().is_some()
    });
    assert!(
        writing && child.try_wait().unwrap().is_none(),
        "the VMM ended or never wrote: {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "killed mid-job");
}

/// Checks that every block of `image` is all zeroes (never written) or the pattern of its
/// offset (written whole); returns how many were written.
fn whole_blocks(image: &[u8]) -> usize {
    let mut written = 0;
    for (i, block) in image.chunks(BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let at = (i * BLOCK) as u64;
        if let Some(bad) = pattern::first_mismatch(SEED, at, block) {
            panic!("torn block at {at:#x}: word at {bad:#x} is neither zero nor the pattern");
        }
        written += 1;
    }
    written
}

fn run_ok(mut cmd: Command, stderr: &Path) {
    let out: Output = cmd.output().expect("run iopath-vmm");
    assert!(
        out.status.success(),
        "verify job failed ({}): {}",
        out.status,
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
}

#[test]
fn the_daemons_outlive_a_killed_vmm_and_the_files_hold_whole_blocks() {
    if !kvm_or_skip() {
        return;
    }
    let (Some(blk_bin), Some(nvme_bin)) = (
        bin_or_skip("iopath-vhost-user-blk"),
        bin_or_skip("iopath-vfio-user-nvme"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let blk_img = dir.path().join("blk.img");
    let nvme_img = dir.path().join("nvme.img");
    for img in [&blk_img, &nvme_img] {
        File::create(img)
            .unwrap()
            .set_len(DISK_BYTES as u64)
            .unwrap();
    }
    let blk_sock = dir.path().join("blk.sock");
    let nvme_sock = dir.path().join("nvme.sock");
    let mut blk = Daemon::start(&blk_bin, &blk_sock, &["--path", blk_img.to_str().unwrap()]);
    let mut nvme = Daemon::start(
        &nvme_bin,
        &nvme_sock,
        &["--path", nvme_img.to_str().unwrap()],
    );
    let virtio_disk = format!("--disk=socket={},iface=vhost-user", blk_sock.display());
    let nvme_device = format!("--device=vfio-user={}", nvme_sock.display());
    let log = dir.path().join("vmm.log");

    // Both daemons serve the first VMM; its job writes through virtio-blk (the guest takes
    // the first disk).
    kill_mid_write(
        vmm(&[&virtio_disk, &nvme_device], "4k", &log),
        &blk_img,
        &log,
    );
    assert!(
        blk.alive() && nvme.alive(),
        "daemons survive the VMM's death"
    );
    // The second writes through the passthrough NVMe.
    kill_mid_write(vmm(&[&nvme_device], "4k", &log), &nvme_img, &log);
    assert!(
        blk.alive() && nvme.alive(),
        "daemons survive the VMM's death"
    );

    for img in [&blk_img, &nvme_img] {
        let data = std::fs::read(img).unwrap();
        let written = whole_blocks(&data);
        assert!(written > 0);
        eprintln!(
            "{}: {written} of {} blocks written when the VMM died",
            img.display(),
            DISK_BYTES / BLOCK
        );
    }

    // New VMMs on the same daemons and files: full verify jobs pass.
    run_ok(vmm(&[&virtio_disk, &nvme_device], "64k", &log), &log);
    run_ok(vmm(&[&nvme_device], "64k", &log), &log);
    for img in [&blk_img, &nvme_img] {
        let data = std::fs::read(img).unwrap();
        assert_eq!(
            pattern::check_image(SEED, &data, DISK_BYTES, 0),
            Ok(()),
            "{}",
            img.display()
        );
    }
    assert!(blk.alive() && nvme.alive());
}
