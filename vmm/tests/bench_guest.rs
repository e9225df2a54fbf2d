//! The bench guest under /dev/kvm: greeting, exit microbenchmarks, results through the mailbox.

mod common;

use common::{bench_vm_config, kvm_or_skip};
use std::time::Duration;

use iopath_mailbox::{ExitKind, ExitsJob, Job, JobKind};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;

fn exits_job(touch_mib: u32) -> Job {
    Job {
        kind: JobKind::Exits as u32,
        seed: 3,
        exits: ExitsJob {
            iterations: 300,
            repetitions: 5,
            touch_mib,
            _pad: 0,
        },
        ..Job::default()
    }
}

#[test]
fn bench_guest_greets_and_measures_every_exit_kind() {
    if !kvm_or_skip() {
        return;
    }
    let run = bench_vm::run(bench_vm_config(exits_job(16))).expect("bench guest run");
    assert!(
        run.console.contains("iopath bench guest v"),
        "no greeting in: {}",
        run.console
    );
    let khz = run.mailbox.job.tsc_khz;
    assert!(khz > 0, "the VMM passes the TSC frequency");
    let ns = |k: ExitKind| {
        let s = run.mailbox.exits.kinds[k as usize];
        s.median_per_iter().expect("iterations recorded") * 1e6 / khz as f64
    };
    for k in ExitKind::ALL {
        let v = ns(k);
        assert!(v.is_finite() && v > 0.0, "{}: {v} ns", k.name());
    }
    assert!(
        ns(ExitKind::MmioIoeventfd) < ns(ExitKind::MmioWrite),
        "ioeventfd {} ns should beat a userspace MMIO exit {} ns",
        ns(ExitKind::MmioIoeventfd),
        ns(ExitKind::MmioWrite)
    );
    // The VMM saw the exits it was meant to see: every PIO and MMIO probe access (with warm-up)
    // and none of the ioeventfd writes.
    let per_kind = 300 * 5 + 1;
    assert!(run.exits.mmio_write >= per_kind && run.exits.mmio_write < 2 * per_kind);
    assert!(run.exits.mmio_read >= per_kind);
    assert!(run.exits.pio_out >= per_kind);
}

#[test]
fn touch_area_larger_than_ram_is_refused_before_boot() {
    let e = bench_vm::run(BenchVmConfig {
        ram: RamConfig {
            size: 64 << 20,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job: exits_job(64),
        timeout: Duration::from_secs(5),
        console: None,
        disks: Vec::new(),
        devices: Vec::new(),
        nets: Vec::new(),
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            bench_vm::Error::RamTooSmall {
                need: 128,
                have: 64
            }
        ),
        "{e}"
    );
}
