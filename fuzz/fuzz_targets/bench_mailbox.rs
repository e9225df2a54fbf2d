//! The bench guest's mailbox as the host reads it back: guest memory is the guest's to write,
//! so the host must survive any image. Covers `Mailbox::from_bytes`, the raw-value decoders,
//! and the latency histogram the host turns into quantiles (`count`, `quantile`, `merge`).
//! Also the shared offset generator on parameters that meet its contract.
//!
//! Input: `[q: u64 as f64 bits][region: u64][step_log2: u8][seed: u64][cut: u8]`, then writes
//! `[slot: u16][value: u64]` into the image of a fresh mailbox, 8 bytes each (the image is
//! larger than libFuzzer's default input limit, and sparse writes reach the histogram's
//! counts, min and max directly). `cut` non-zero: the image is read back that many bytes
//! short, and must be refused.
#![no_main]

use iopath_fuzz::input::Cursor;
use iopath_mailbox::histogram::{bucket, bucket_floor, Histogram, BUCKETS};
use iopath_mailbox::offsets::Offsets;
use iopath_mailbox::{error, BlockDevice, Job, JobKind, Mailbox, Status, Workload};
use libfuzzer_sys::fuzz_target;

const QUANTILES: [f64; 7] = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0, 2.0];

/// What the host does with a histogram from the guest (the VMM's JSON, the bench's `Sample`).
fn summarize(h: &Histogram, extra_q: f64) {
    let n = h.count();
    for q in QUANTILES.iter().copied().chain([extra_q, f64::NAN, -1.0]) {
        match h.quantile(q) {
            None => assert_eq!(n, 0, "no quantile from a non-empty histogram"),
            Some(v) => assert!(n > 0, "quantile {v} from an empty histogram"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let q = f64::from_bits(c.u64());
    let (region, step_log2, seed) = (c.u64(), c.u8() % 64, c.u64());
    let cut = usize::from(c.u8());
    let mut image = Mailbox::new(Job::default()).as_bytes().to_vec();
    let slots = image.len() / 8;
    while !c.is_empty() {
        let at = usize::from(c.u16()) % slots * 8;
        image[at..at + 8].copy_from_slice(&c.u64().to_le_bytes());
    }
    if cut > 0 {
        assert_eq!(
            Mailbox::from_bytes(&image[..image.len() - cut]),
            None,
            "a short image"
        );
    }
    let m = Mailbox::from_bytes(&image).expect("a full image parses");
    let _ = m.is_valid();
    let _ = (JobKind::from_raw(m.job.kind), Status::from_raw(m.status));
    let _ = (
        BlockDevice::from_raw(m.job.block.device),
        Workload::from_raw(m.job.block.workload),
    );
    let _ = error::describe(m.error);
    for t in &m.exits.kinds {
        let _ = (t.median_per_iter(), t.min_per_iter());
    }
    assert_eq!(
        Mailbox::from_bytes(m.as_bytes()),
        Some(m),
        "as_bytes/from_bytes round trip"
    );

    summarize(&m.block.latency, q);
    let mut merged = m.block.latency;
    merged.merge(&m.block.latency);
    summarize(&merged, q);

    // Buckets: every value lands in a bucket whose floor is at or below it.
    let v = m.job.seed;
    let b = bucket(v);
    assert!(b < BUCKETS && bucket_floor(b) <= v);

    // Offsets under their contract (a power-of-two step that divides the region), as the
    // guest's job validation guarantees.
    let step = 1u64 << step_log2;
    let region = region & !(step - 1);
    if region >= step {
        for mut o in [
            Offsets::sequential(region, step),
            Offsets::random(region, step, seed),
        ] {
            for _ in 0..4 {
                let at = o.next_offset();
                assert!(
                    at < region && at % step == 0,
                    "offset {at} outside {region}/{step}"
                );
            }
        }
    }
});
