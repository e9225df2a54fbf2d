//! iopath-vmm's command line: every failure is one clear line and a non-zero exit.

mod common;

use common::kvm_or_skip;
use std::path::Path;
use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iopath-vmm"))
        .args(args)
        .output()
        .expect("run iopath-vmm")
}

/// Asserts a failure with exactly one error line containing `needle`, and no panic.
fn assert_one_error_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("iopath-vmm: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(needle),
        "expected {needle:?} in {:?}",
        errors[0]
    );
}

/// A valid static ELF whose only instruction jumps to itself: a guest that never signals done.
fn spinning_elf() -> Vec<u8> {
    const BASE: u64 = 0x20_0000;
    let code = [0xeb, 0xfe]; // jmp $
    let code_off = 64 + 56;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + code_off).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    // PT_LOAD, R+X, the whole file at BASE.
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&5u32.to_le_bytes());
    let size = code_off + code.len() as u64;
    for v in [0u64, BASE, BASE, size, size, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&code);
    e
}

#[test]
fn missing_guest_file() {
    let out = vmm(&["--guest", "/nonexistent/iopath-guest"]);
    assert_one_error_line(&out, "cannot read guest image /nonexistent/iopath-guest");
}

#[test]
fn bad_elf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.elf");
    std::fs::write(&p, b"this is not an ELF image at all").unwrap();
    let out = vmm(&["--guest", p.to_str().unwrap()]);
    assert_one_error_line(&out, "not a loadable bench guest ELF");
}

#[test]
fn unknown_job() {
    if !kvm_or_skip() {
        return;
    }
    let out = vmm(&["--job", "99", "--serial", "none"]);
    assert_one_error_line(&out, "guest does not know this job kind");
    // The guest's own words follow the error line when the console went nowhere else.
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job kind 99"));
}

#[test]
fn unparseable_job_name() {
    let out = vmm(&["--job", "fio"]);
    assert_one_error_line(&out, "unknown job \"fio\"");
}

#[test]
fn guest_that_never_signals_done_times_out() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spin.elf");
    std::fs::write(&p, spinning_elf()).unwrap();
    let start = std::time::Instant::now();
    let out = vmm(&[
        "--guest",
        p.to_str().unwrap(),
        "--timeout",
        "1s",
        "--serial",
        "none",
    ]);
    assert_one_error_line(&out, "guest did not signal done within 1s");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "the time-out must end the run"
    );
}

#[test]
fn check_host_json_reports_kind_and_io_uring() {
    let out = vmm(&["--check-host", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let kind = v["kind"].as_str().unwrap();
    assert!(
        ["vtx", "amd-v", "pvm", "kvm-unknown", "no-kvm"].contains(&kind),
        "{kind}"
    );
    assert!(v["io_uring"].is_boolean() && v["vfio"].is_boolean());
    // On PVM hosts (our dev and CI machines) there is no VFIO and io_uring works.
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(kind, "pvm");
        assert_eq!(v["vfio"], false);
        assert_eq!(v["io_uring"], true);
    }
}

#[test]
fn block_verify_job_on_a_file_disk_reports_json() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let spec = format!("path={},iface=nvme", disk.display());
    let out = vmm(&[
        "--job",
        "block",
        "--disk",
        &spec,
        "--workload",
        "verify",
        "--bs",
        "8k",
        "--qd",
        "4",
        "--serial",
        "none",
        "--results-json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The whole 1 MiB disk written then read in 8 KiB I/Os.
    assert_eq!(v["ops"], 256);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["device_bytes"], 1 << 20);
    assert!(v["disk_exits"][0].as_u64().unwrap() > 0);
}

#[test]
fn bad_disk_values_are_one_line_errors() {
    let out = vmm(&["--job", "block", "--disk", "path=/x,iface=scsi"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("iface"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if !kvm_or_skip() {
        return;
    }
    let out = vmm(&[
        "--job",
        "block",
        "--disk",
        "path=/nonexistent/disk.img",
        "--serial",
        "none",
    ]);
    assert_one_error_line(&out, "/nonexistent/disk.img");
}

#[test]
fn block_job_without_a_disk_says_so() {
    if !kvm_or_skip() {
        return;
    }
    let out = vmm(&["--job", "block", "--serial", "none", "--ops", "10"]);
    assert_one_error_line(&out, "found no device");
}
