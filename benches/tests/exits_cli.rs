//! `iopath-bench exits` end to end: a fresh VM, a table, a result file that reads back.

use std::path::Path;
use std::process::Command;

use iopath_bench::exits::ExitsReport;
use iopath_bench::results::ResultFile;

#[test]
fn exits_writes_a_table_and_a_result_file() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iopath-bench"))
        .args([
            "exits",
            "--iterations",
            "200",
            "--repetitions",
            "3",
            "--touch-mib",
            "8",
            "--verbose",
            "--results",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "pio-write",
        "mmio-read",
        "mmio-write",
        "mmio-ioeventfd",
        "cpuid",
        "page-touch-first",
        "page-touch-warm",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(kind)),
            "no {kind} row in:\n{stdout}"
        );
    }
    assert!(stdout.contains("VMM start to guest entry:"), "{stdout}");
    assert!(stdout.contains("VMM RSS beyond guest RAM:"), "{stdout}");
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let back = ResultFile::<ExitsReport>::read(&file).unwrap();
    assert_eq!(back.kind, "exits");
    assert_eq!(back.payload.rows.len(), 7);
    assert!(back
        .payload
        .rows
        .iter()
        .all(|r| r.median_ns > 0.0 && r.median_ns.is_finite()));
    assert!(back.payload.startup_ms > 0.0);
}

#[test]
fn bad_option_values_fail_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_iopath-bench"))
        .args(["exits", "--memory", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid size \"lots\""), "{stderr}");
    assert!(!stderr.contains("panicked"));
}
