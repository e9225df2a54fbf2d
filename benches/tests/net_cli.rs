//! `iopath-bench net` end to end: flag errors, the native path on tiny runs (with a reflector in
//! this process, and behind a TAP in a network namespace), the JSON result and its report.

use std::process::{Command, Output};

use iopath_bench::net::NetReport;
use iopath_bench::results::ResultFile;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iopath-bench"))
}

fn net(args: &[&str]) -> Output {
    bench().arg("net").args(args).output().unwrap()
}

/// Runs `iopath-bench net ARGS --json`; the JSON it prints.
fn net_json(args: &[&str]) -> serde_json::Value {
    let results = tempfile::tempdir().unwrap();
    let out = bench()
        .arg("net")
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TINY: [&str; 8] = [
    "--paths",
    "native",
    "--runtime",
    "200ms",
    "--repeat",
    "1",
    "--frame",
    "60,1514",
];

#[test]
fn bad_flags_are_refused_with_what_is_expected() {
    for (args, says) in [
        (&["--frame", "59"][..], "outside 60..=1514"),
        (&["--frame", "9000"][..], "outside 60..=1514"),
        (&["--workload", "rx"][..], "expected tx or rr"),
        (&["--far", "bridge"][..], "expected reflect or netns"),
        (
            &["--paths", "nvme"][..],
            "expected emulated, virtio, native",
        ),
        (&["--depth", "0"][..], "depth"),
        (&["--depth", "257"][..], "depth"),
        (&["--peer", "ovs"][..], "testpmd"),
    ] {
        let out = net(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = net(&[
        "--vhost-user-net-bin",
        "/nonexistent/d",
        "--paths",
        "native",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/d: no such file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn native_frames_come_back_intact_and_the_result_round_trips() {
    let v = net_json(
        &[
            &TINY[..],
            &["--workload", "tx,rr", "--depth", "1,4", "--timeout", "5s"],
        ]
        .concat(),
    );
    assert_eq!(v["kind"], "net");
    assert_eq!(v["schema_version"], iopath_bench::results::SCHEMA_VERSION);
    let scenarios = v["payload"]["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 4, "two workloads x two frame sizes");
    for s in scenarios {
        let rows = s["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "one path x two depths");
        for r in rows {
            assert_eq!(r["path"], "native");
            assert_eq!(r["far"], "reflect");
            assert!(r["pps"].as_f64().unwrap() > 0.0, "{r}");
            assert_eq!(r["bad"], 0, "{r}");
            assert_eq!(r["lost"], 0, "{r}");
            assert_eq!(r["percent_of_native"], 100.0);
            let sample = &r["samples"][0];
            let (sent, received) = (sample["sent"].as_u64(), sample["received"].as_u64());
            if s["workload"] == "rr" {
                // Every round trip completed: nothing lost at this rate.
                assert_eq!(sent, received, "{r}");
                assert!(r["p50_us"].as_f64().unwrap() > 0.0);
            } else {
                assert!(received <= sent);
            }
        }
    }
    // The same document through a result file and back, and through `report`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net-1.json");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let file = ResultFile::<NetReport>::read(&path).unwrap();
    assert_eq!(file.payload.scenarios.len(), 4);
    let again: serde_json::Value = serde_json::from_str(&file.to_json().unwrap()).unwrap();
    assert_eq!(again, v, "nothing lost in a read and a write");
    let out = bench().arg("report").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rr 1514 B"), "{text}");
    assert!(text.contains("% native"), "{text}");
}

#[test]
fn native_through_a_namespace_reflector_loses_nothing() {
    if let Err(e) = backends::host_net::available() {
        eprintln!("skipped: {e}");
        return;
    }
    // A long loss timeout: on a loaded machine a reflection may take a while, and this test is
    // about frames arriving, not about how fast.
    let v = net_json(
        &[
            &TINY[..],
            &[
                "--workload",
                "rr",
                "--depth",
                "2",
                "--far",
                "netns",
                "--timeout",
                "5s",
            ],
        ]
        .concat(),
    );
    for s in v["payload"]["scenarios"].as_array().unwrap() {
        let r = &s["rows"][0];
        assert_eq!(r["far"], "netns");
        let sample = &r["samples"][0];
        assert!(sample["sent"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(sample["sent"], sample["received"], "{r}");
        // Every frame crossed the namespace's reflector, and only ours did.
        assert_eq!(sample["far_received"], sample["sent"], "{r}");
        assert_eq!(r["lost"], 0);
        assert_eq!(r["bad"], 0);
    }
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let pid = std::process::id().to_string();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("iopathns"),
        "namespaces left behind (test pid {pid})"
    );
}

/// Round trips through each VM path and far end: every frame the bench guest sent came back
/// intact, and (netns) crossed the namespace's reflector.
#[test]
fn guest_frames_cross_every_path_and_come_back() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let mut fars = "reflect".to_string();
    match backends::host_net::available() {
        Ok(()) => fars.push_str(",netns"),
        Err(e) => eprintln!("netns rows skipped: {e}"),
    }
    let v = net_json(&[
        "--paths",
        "emulated,virtio",
        "--workload",
        "rr",
        "--frame",
        "60,1514",
        "--depth",
        "4",
        "--far",
        &fars,
        "--runtime",
        "300ms",
        "--repeat",
        "1",
        "--timeout",
        "5s",
    ]);
    for s in v["payload"]["scenarios"].as_array().unwrap() {
        let rows = s["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2 * fars.split(',').count(), "{s}");
        for r in rows {
            let sample = &r["samples"][0];
            assert!(sample["sent"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(sample["sent"], sample["received"], "{r}");
            assert_eq!((&r["lost"], &r["bad"]), (&0.into(), &0.into()), "{r}");
            if r["far"] == "netns" {
                assert_eq!(sample["far_received"], sample["sent"], "{r}");
            }
            if r["path"] == "emulated" {
                assert!(r["exits_per_frame"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
    }
}
