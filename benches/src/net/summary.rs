//! From samples to rows: medians, spread, and the comparison with native.

use super::{NetPath, NetSample, Row};
use crate::stats::{median, median_opt, Spread};

/// Fills the native comparison of rows measured with the same far end at the same depth.
pub(super) fn compare_with_native(rows: &mut [Row]) {
    let Some(native) = rows
        .iter()
        .find(|r| r.path == NetPath::Native)
        .map(Row::spread)
    else {
        return;
    };
    for r in rows {
        let s = r.spread();
        r.percent_of_native = s.percent_of(&native);
        if r.path != NetPath::Native {
            r.differs_from_native = Some(s.differs_from(&native));
        }
    }
}

pub(super) fn summarize(path: NetPath, far: &str, depth: u16, samples: Vec<NetSample>) -> Row {
    let m = |f: fn(&NetSample) -> f64| median(samples.iter().map(f).collect());
    let rate = Spread::of(samples.iter().map(NetSample::pps));
    let sum = |f: fn(&NetSample) -> u64| samples.iter().map(f).sum();
    Row {
        path,
        far: far.into(),
        depth,
        pps: rate.median,
        pps_min: rate.min,
        pps_max: rate.max,
        mbit_per_s: m(|s| s.sample.mb_per_s() * 8.0),
        p50_us: m(|s| s.sample.p50_us),
        p90_us: m(|s| s.sample.p90_us),
        p99_us: m(|s| s.sample.p99_us),
        p999_us: m(|s| s.sample.p999_us),
        max_us: m(|s| s.sample.max_us),
        exits_per_frame: median_opt(samples.iter().map(|s| s.sample.exits_per_io())),
        cpu_us_per_frame: median_opt(samples.iter().map(|s| s.sample.cpu_us_per_io())),
        sent: sum(|s| s.sent),
        received: sum(|s| s.received),
        lost: sum(|s| s.lost),
        bad: sum(|s| s.bad),
        percent_of_native: None,
        differs_from_native: None,
        samples,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::block::sample::Sample;

    pub fn sample(pps: f64) -> NetSample {
        NetSample {
            sample: Sample {
                ops: pps as u64,
                bytes: pps as u64 * 64,
                errors: 0,
                elapsed_s: 1.0,
                p50_us: 10.0,
                p90_us: 20.0,
                p99_us: 30.0,
                p999_us: 40.0,
                max_us: 50.0,
                cdf: vec![(0.5, 10.0), (1.0, 50.0)],
                device_exits: Some(pps as u64 * 2),
                cpu_s: 0.5,
                cpu_by_process: vec![("vmm".into(), 0.5)],
            },
            sent: pps as u64,
            received: pps as u64,
            bad: 0,
            lost: 1,
            foreign: 0,
            far_received: None,
        }
    }

    pub fn row(path: NetPath, pps: &[f64]) -> Row {
        summarize(path, "reflect", 1, pps.iter().map(|&p| sample(p)).collect())
    }

    #[test]
    fn rows_take_medians_spread_and_sums() {
        let r = row(NetPath::Virtio, &[1000.0, 3000.0, 2000.0]);
        assert_eq!((r.pps, r.pps_min, r.pps_max), (2000.0, 1000.0, 3000.0));
        assert_eq!(r.spread_percent(), 50.0);
        assert_eq!(r.exits_per_frame, Some(2.0));
        assert_eq!(r.cpu_us_per_frame, Some(0.5 * 1e6 / 2000.0));
        assert_eq!((r.sent, r.lost), (6000, 3));
        assert!((r.mbit_per_s - 2000.0 * 64.0 * 8.0 / 1e6).abs() < 1e-9);
        assert_eq!(r.median_sample().map(NetSample::pps), Some(2000.0));
    }

    #[test]
    fn each_path_is_a_fraction_of_native() {
        let mut rows = vec![
            row(NetPath::Emulated, &[100.0, 110.0]),
            row(NetPath::Virtio, &[990.0, 1010.0]),
            row(NetPath::Native, &[1000.0, 1020.0]),
        ];
        compare_with_native(&mut rows);
        assert_eq!(rows[0].percent_of_native, Some(105.0 / 1010.0 * 100.0));
        assert_eq!(rows[0].differs_from_native, Some(true));
        assert_eq!(rows[1].differs_from_native, Some(false), "ranges overlap");
        assert_eq!(rows[2].percent_of_native, Some(100.0));
        assert_eq!(rows[2].differs_from_native, None);
        let mut alone = vec![row(NetPath::Emulated, &[5.0])];
        compare_with_native(&mut alone);
        assert_eq!(alone[0].percent_of_native, None);
    }
}
