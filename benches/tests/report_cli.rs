//! `iopath-bench report`: tables and plots from stored result files, without rerunning.

use std::path::Path;
use std::process::Command;

use iopath_bench::block::sample::Sample;
use iopath_bench::block::{BlockReport, IoPath, Row, Scenario};
use iopath_bench::host::HostInfo;
use iopath_bench::plot::FONT_PATH;
use iopath_bench::results::ResultFile;

fn sample(iops: f64) -> Sample {
    Sample {
        ops: iops as u64,
        bytes: iops as u64 * 4096,
        errors: 0,
        elapsed_s: 1.0,
        p50_us: 10.0,
        p90_us: 12.0,
        p99_us: 20.0,
        p999_us: 40.0,
        max_us: 80.0,
        cdf: vec![(0.1, 5.0), (0.5, 10.0), (0.99, 20.0), (1.0, 80.0)],
        device_exits: Some(iops as u64 * 2),
        cpu_s: 0.5,
        cpu_by_process: vec![("vmm".into(), 0.5)],
    }
}

fn row(path: IoPath, iops: f64) -> Row {
    Row {
        path,
        backend: "null".into(),
        backend_spec: "null:1073741824".into(),
        queue_depth: 1,
        samples: vec![sample(iops)],
        iops,
        iops_min: iops,
        iops_max: iops,
        mb_per_s: iops * 4096.0 / 1e6,
        p50_us: 10.0,
        p90_us: 12.0,
        p99_us: 20.0,
        p999_us: 40.0,
        max_us: 80.0,
        exits_per_io: Some(2.0),
        cpu_us_per_io: Some(0.5e6 / iops),
        errors: 0,
        percent_of_native: Some(iops / 40000.0 * 100.0),
        differs_from_native: None,
    }
}

fn stored(dir: &Path) -> std::path::PathBuf {
    let report = BlockReport {
        host: HostInfo {
            kind: "pvm".into(),
            cpu_model: "test cpu".into(),
            kernel: "6.0".into(),
            cpus: 2,
            iopath_version: "0.1.0".into(),
            git_rev: "abc".into(),
        },
        runtime_s: 1.0,
        warmup_s: 0.0,
        repeat: 1,
        vhost_poll_us: 0,
        scenarios: vec![Scenario {
            workload: "randread".into(),
            block_size: 4096,
            rows: vec![row(IoPath::Emulated, 12345.0), row(IoPath::Native, 40000.0)],
        }],
    };
    ResultFile::new("block", report).write_to(dir).unwrap()
}

fn bench(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iopath-bench"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn report_redraws_the_table_and_plots_from_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = stored(dir.path());
    let out = bench(&["report".as_ref(), dir.path().as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&file.display().to_string()), "{text}");
    let emulated = text
        .lines()
        .find(|l| l.starts_with("emulated"))
        .expect(&text);
    assert!(
        emulated.contains("12345") && emulated.contains("30.9"),
        "{emulated}"
    );
    if !Path::new(FONT_PATH).exists() {
        eprintln!("skipped plot check: no font at {FONT_PATH}");
        return;
    }
    let stem = file.with_extension("");
    for suffix in [
        "-iops.svg",
        "-iops.png",
        "-latency.svg",
        "-latency.png",
        "-cpu.svg",
        "-cpu.png",
    ] {
        let plot = format!("{}{suffix}", stem.display());
        let len = std::fs::metadata(&plot).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "{plot} missing or empty");
    }
    let svg = std::fs::read_to_string(format!("{}-iops.svg", stem.display())).unwrap();
    assert!(
        svg.contains("qd 1") && svg.contains("emulated"),
        "labels in the SVG"
    );
}

#[test]
fn an_older_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("block-1.json");
    std::fs::write(
        &old,
        r#"{"schema_version":1,"kind":"block","created":1,"payload":{}}"#,
    )
    .unwrap();
    let out = bench(&["report".as_ref(), old.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_empty_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["report".as_ref(), dir.path().as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no result files"));
}
