//! iopath-vmm's `--device`: passthrough failures are one clear line; a vfio-user device runs
//! a block job end to end.

mod common;
mod vfio_common;

use std::process::{Command, Output};

use common::kvm_or_skip;
use vfio_common::{backing_file, serve};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iopath-vmm"))
        .args(args)
        .output()
        .expect("run iopath-vmm")
}

/// Asserts a failure with exactly one error line containing every needle, and no panic.
fn assert_one_error_line(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("iopath-vmm: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "expected {needle:?} in {:?}",
            errors[0]
        );
    }
}

#[test]
fn kernel_vfio_that_cannot_work_is_one_line() {
    // Checked before any VM exists, so no /dev/kvm is needed either.
    let out = vmm(&["--device", "vfio=/nonexistent", "--serial", "none"]);
    let why = if std::path::Path::new("/dev/vfio/vfio").exists() {
        "no PCI device at /nonexistent"
    } else {
        "/dev/vfio/vfio does not exist"
    };
    assert_one_error_line(&out, &["--device vfio=/nonexistent", why]);
    let out = vmm(&["--device", "vfio=0000:ff:1f.7", "--serial", "none"]);
    assert_one_error_line(&out, &["--device vfio=/sys/bus/pci/devices/0000:ff:1f.7"]);
}

#[test]
fn bad_device_values_are_rejected_without_a_panic() {
    for value in ["nvme=1", "vfio=", "vfio=03:00", "vfio-user="] {
        let out = vmm(&["--device", value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value}: {stderr}");
        assert!(stderr.contains("--device"), "{value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{value}: {stderr}");
    }
}

#[test]
fn a_missing_vfio_user_server_is_one_line() {
    if !kvm_or_skip() {
        return;
    }
    let out = vmm(&[
        "--device",
        "vfio-user=/nonexistent/nvme.sock",
        "--serial",
        "none",
    ]);
    assert_one_error_line(
        &out,
        &[
            "--device vfio-user=/nonexistent/nvme.sock",
            "cannot connect",
        ],
    );
}

#[test]
fn a_block_job_through_vfio_user_reports_json() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(dir.path(), 1 << 20, 0);
    let socket = serve(dir.path(), &path);
    let device = format!("vfio-user={}", socket.display());
    let out = vmm(&[
        "--job",
        "block",
        "--device",
        &device,
        "--workload",
        "verify",
        "--bs",
        "4k",
        "--qd",
        "2",
        "--serial",
        "none",
        "--results-json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["disk_exits_measured"][0], 0, "{v}");
}
