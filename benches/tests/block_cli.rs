//! `iopath-bench block` end to end: both paths on a small null disk, JSON out.

use std::path::Path;
use std::process::Command;

/// Runs `iopath-bench block ARGS --json` with a private results directory; the JSON it prints.
fn block_json(args: &[&str]) -> serde_json::Value {
    let results = tempfile::tempdir().unwrap();
    let out = bench()
        .args(args)
        .args(["--json", "--results"])
        .arg(results.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The rows of the first scenario of a block result.
fn rows(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["payload"]["scenarios"][0]["rows"]
        .as_array()
        .unwrap()
        .clone()
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iopath-bench"))
}

#[test]
fn every_path_has_rows_with_counted_exits() {
    let kvm = Path::new("/dev/kvm").exists();
    if !kvm {
        eprintln!("skipped: /dev/kvm is absent on this host (emulated path)");
        return;
    }
    let v = block_json(&[
        "block",
        "--backend",
        "null:64M",
        "--qd",
        "1,4",
        "--runtime",
        "300ms",
        "--repeat",
        "1",
    ]);
    assert_eq!(v["kind"], "block");
    let rows = rows(&v);
    assert_eq!(rows.len(), 8, "four paths x two depths");
    for r in rows {
        assert!(r["iops"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["errors"], 0);
        let p50 = r["p50_us"].as_f64().unwrap();
        let p99 = r["p99_us"].as_f64().unwrap();
        assert!(p50 <= p99, "{r}");
        match r["path"].as_str().unwrap() {
            "native" => {
                assert!(r["exits_per_io"].is_null());
                assert_eq!(r["percent_of_native"].as_f64(), Some(100.0));
            }
            "emulated" => {
                // At depth 1 every I/O rings the submission and completion doorbells.
                let exits = r["exits_per_io"].as_f64().unwrap();
                if r["queue_depth"] == 1 {
                    assert!((1.9..3.0).contains(&exits), "{r}");
                } else {
                    assert!(exits > 0.0, "{r}");
                }
                assert!(r["percent_of_native"].as_f64().unwrap() > 0.0);
            }
            "passthrough" => {
                // Doorbells land in the server's page mapped into the guest: no exits.
                assert_eq!(r["exits_per_io"].as_f64(), Some(0.0), "{r}");
                let procs = r["samples"][0]["cpu_by_process"].as_array().unwrap();
                assert_eq!(procs.len(), 2, "the VMM and the NVMe server: {r}");
            }
            "virtio" => {
                // Notifies are ioeventfds: only device set-up exits to the VMM.
                let exits = r["exits_per_io"].as_f64().unwrap();
                assert!(exits < 0.1, "{r}");
                let procs = r["samples"][0]["cpu_by_process"].as_array().unwrap();
                assert_eq!(procs.len(), 2, "the VMM and the backend daemon: {r}");
                assert!(
                    procs[1][1].as_f64().unwrap() > 0.0,
                    "the daemon did work: {r}"
                );
            }
            other => panic!("unexpected path {other}"),
        }
    }
}

#[test]
fn table_and_result_file_for_native_only() {
    let results = tempfile::tempdir().unwrap();
    let out = bench()
        .args([
            "block",
            "--paths",
            "native",
            "--backend",
            "null:16M",
            "--qd",
            "2",
        ])
        .args([
            "--runtime",
            "100ms",
            "--repeat",
            "2",
            "--quiet",
            "--results",
        ])
        .arg(results.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("% native"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("native") && l.contains("null")),
        "{text}"
    );
    let names: Vec<String> = std::fs::read_dir(results.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".json")).count(),
        1,
        "{names:?}"
    );
    if Path::new(iopath_bench::plot::FONT_PATH).exists() {
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".svg")).count(),
            3,
            "{names:?}"
        );
        assert!(text.contains("plots:"), "{text}");
    }
}

#[test]
fn bad_options_fail_with_one_line() {
    for args in [
        &["block", "--paths", "warp"][..],
        &["block", "--workload", "randomish"][..],
        &["block", "--backend", "tape:/dev/st0"][..],
        &[
            "block",
            "--paths",
            "native",
            "--backend",
            "file:/nonexistent/x",
            "--runtime",
            "10ms",
        ][..],
    ] {
        let out = bench().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 3, "{args:?}: {err}");
    }
}

#[test]
fn fio_peer_rows_sit_beside_native() {
    if !Path::new("/usr/bin/fio").exists() && Command::new("fio").arg("--version").output().is_err()
    {
        eprintln!("skipped: fio not installed");
        return;
    }
    let v = block_json(&[
        "block",
        "--paths",
        "native",
        "--peer",
        "fio",
        "--backend",
        "null:64M",
        "--qd",
        "4",
        "--runtime",
        "300ms",
        "--repeat",
        "1",
    ]);
    let rows = rows(&v);
    let fio = rows.iter().find(|r| r["path"] == "fio").expect("a fio row");
    assert!(fio["iops"].as_f64().unwrap() > 0.0, "{fio}");
    assert!(fio["samples"][0]["ops"].as_u64().unwrap() > 0);
    assert!(fio["percent_of_native"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_scenario_file_drives_a_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("matrix.toml");
    std::fs::write(
        &file,
        r#"
        paths = ["native"]
        workloads = ["randread", "write"]
        block_sizes = ["4k", "16k"]
        queue_depths = [1, 2]
        backends = ["null:16M"]
        runtime = "50ms"
        warmup = "10ms"
        repeat = 2
        "#,
    )
    .unwrap();
    let out = bench()
        .args(["block", "--json", "--scenario"])
        .arg(&file)
        .args(["--results"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = v["payload"]["scenarios"].as_array().unwrap();
    let cells: Vec<(String, u64)> = scenarios
        .iter()
        .map(|s| {
            (
                s["workload"].as_str().unwrap().to_string(),
                s["block_size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            ("randread".to_string(), 4096),
            ("randread".to_string(), 16384),
            ("write".to_string(), 4096),
            ("write".to_string(), 16384)
        ]
    );
    for s in scenarios {
        let rows = s["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "one native row per depth");
        for r in rows {
            assert_eq!(
                r["samples"].as_array().unwrap().len(),
                2,
                "two measured runs"
            );
            let bytes = r["samples"][0]["bytes"].as_u64().unwrap();
            let ops = r["samples"][0]["ops"].as_u64().unwrap();
            assert_eq!(bytes, ops * s["block_size"].as_u64().unwrap());
        }
    }
    assert_eq!(v["payload"]["warmup_s"], 0.01);
}

#[test]
fn qsd_peer_serves_the_virtio_path() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    if Command::new("qemu-storage-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: qemu-storage-daemon not installed");
        return;
    }
    let v = block_json(&[
        "block",
        "--paths",
        "virtio",
        "--peer",
        "qsd",
        "--backend",
        "null:64M",
        "--qd",
        "4",
        "--runtime",
        "300ms",
        "--repeat",
        "1",
    ]);
    let rows = rows(&v);
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["virtio", "virtio-qsd"]);
    for r in rows {
        assert!(r["iops"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
}

#[test]
fn qemu_peer_rows_appear_beside_ours() {
    if let Err(e) = iopath_bench::peer::qemu::available() {
        eprintln!(
            "skipped: {}",
            e.skip_reason().unwrap_or("QEMU cannot run here")
        );
        return;
    }
    let v = block_json(&[
        "block",
        "--paths",
        "native",
        "--peer",
        "qemu",
        "--backend",
        "null:64M",
        "--qd",
        "2",
        "--runtime",
        "300ms",
        "--repeat",
        "1",
    ]);
    let rows = rows(&v);
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["qemu-nvme", "qemu-virtio", "native"]);
    for r in &rows[..2] {
        assert!(r["iops"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["percent_of_native"].as_f64().unwrap() > 0.0, "{r}");
    }
}
