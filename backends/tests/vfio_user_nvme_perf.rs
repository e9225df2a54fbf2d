//! A measurement, not a regression test: 4 KiB random reads at queue depth 32 through the
//! vfio-user daemon (polled doorbell page) on the null backend, against the same engine driven
//! directly (the native path). Run alone, in release:
//!
//! `cargo test --release -p backends --test vfio_user_nvme_perf -- --ignored --nocapture`
//!
//! `IOPATH_PERF_SECS` sets the run time per path (default 2), `IOPATH_PERF_MIN_PERCENT` the
//! share of native IOPS the test requires (default 0: just report), `IOPATH_PERF_SPIN_US` the
//! daemon's `--poll-spin-us`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backends::engine::{BackendSpec, BlockOp, BlockRequest, Completion};
use common::nvme_driver::*;
use common::vfio_user_daemon::Daemon;
use iommu::{Access, AddressSpace, DmaRegion, Perm};

const QD: u64 = 32;
const DEVICE: u64 = 1 << 30;
const BLOCK: u64 = 4096;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64: a 4 KiB-aligned offset in the device.
fn next_block(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % (DEVICE / BLOCK)
}

fn through_the_daemon(run_for: Duration) -> f64 {
    let spin = std::env::var("IOPATH_PERF_SPIN_US").unwrap_or_else(|_| "500".into());
    let d = Daemon::start(&["--null", "1G", "--poll-spin-us", &spin]);
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    drv.create_io_queues();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let buf = |slot: u64| DATA + slot * BLOCK;
    let mut slot_of_cid = std::collections::HashMap::new();
    for slot in 0..QD {
        let cid = drv.push(1, rw(false, next_block(&mut rng) * 8, 8, buf(slot)));
        slot_of_cid.insert(cid, slot);
    }
    drv.ring_sq(1);
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < run_for {
        let mut reaped = Vec::new();
        while let Some(c) = drv.poll(1) {
            assert!(c.ok(), "{c:?}");
            reaped.push(slot_of_cid.remove(&c.cid).expect("known command"));
        }
        if reaped.is_empty() {
            std::hint::spin_loop();
            continue;
        }
        ops += reaped.len() as u64;
        drv.ring_cq(1);
        for slot in reaped {
            let cid = drv.push(1, rw(false, next_block(&mut rng) * 8, 8, buf(slot)));
            slot_of_cid.insert(cid, slot);
        }
        drv.ring_sq(1);
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn native(run_for: Duration) -> f64 {
    let mut engine = BackendSpec::Null { size: DEVICE }
        .open(QD as u32 * 2)
        .unwrap();
    let mut mem = vec![0u8; (QD * BLOCK) as usize];
    let mut space = AddressSpace::new();
    // SAFETY: `mem` outlives `space` and the engine's requests (the engine is drained below).
    let region = unsafe { DmaRegion::new(0, QD * BLOCK, mem.as_mut_ptr(), Perm::RW, Arc::new(())) };
    space.map(region).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let request = |slot: u64, rng: &mut u64| BlockRequest {
        op: BlockOp::Read,
        offset: next_block(rng) * BLOCK,
        len: BLOCK,
        segments: vec![space
            .translate(slot * BLOCK, BLOCK as usize, Access::Write)
            .unwrap()],
        tag: slot,
    };
    for slot in 0..QD {
        // SAFETY: the segment points into `mem`, alive until the end of the function.
        unsafe { engine.push(request(slot, &mut rng)) }.unwrap();
    }
    engine.submit().unwrap();
    let start = Instant::now();
    let mut ops = 0u64;
    let mut done: Vec<Completion> = Vec::new();
    while start.elapsed() < run_for {
        engine.reap(&mut done);
        ops += done.len() as u64;
        for c in done.drain(..) {
            // SAFETY: as above.
            unsafe { engine.push(request(c.tag, &mut rng)) }.unwrap();
        }
        engine.submit().unwrap();
    }
    let iops = ops as f64 / start.elapsed().as_secs_f64();
    engine.wait(engine.in_flight()).unwrap();
    drop(engine);
    drop(mem);
    iops
}

#[test]
#[ignore = "measurement: run alone, in release"]
fn qd32_randread_iops_against_native() {
    let run_for = Duration::from_secs_f64(env_or("IOPATH_PERF_SECS", 2.0));
    let native = native(run_for);
    let daemon = through_the_daemon(run_for);
    let percent = 100.0 * daemon / native;
    println!(
        "null QD{QD} 4K randread: native {native:.0} IOPS, vfio-user (polled doorbells) \
         {daemon:.0} IOPS = {percent:.1}% of native"
    );
    let min = env_or("IOPATH_PERF_MIN_PERCENT", 0.0);
    assert!(daemon > 0.0 && percent >= min, "{percent:.1}% < {min}%");
}
