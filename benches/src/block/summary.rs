//! From samples to rows: medians, spread, and the comparison with native.

use super::runner::Disk;
use super::sample::Sample;
use super::{IoPath, Row};
use crate::stats::{median, median_opt};

/// Fills the native comparison of rows measured on the same disk at the same depth.
pub(super) fn compare_with_native(rows: &mut [Row]) {
    let Some(native) = rows.iter().find(|r| r.path == IoPath::Native).cloned() else {
        return;
    };
    for r in rows {
        if native.iops > 0.0 {
            r.percent_of_native = Some(r.iops / native.iops * 100.0);
        }
        if r.path != IoPath::Native {
            r.differs_from_native =
                Some(r.iops_max < native.iops_min || r.iops_min > native.iops_max);
        }
    }
}

pub(super) fn summarize(path: IoPath, disk: &Disk, qd: u16, samples: Vec<Sample>) -> Row {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Row {
        path,
        backend: disk.label.clone(),
        backend_spec: disk.spec.to_string(),
        queue_depth: qd,
        iops: m(Sample::iops),
        iops_min: samples
            .iter()
            .map(Sample::iops)
            .fold(f64::INFINITY, f64::min),
        iops_max: samples.iter().map(Sample::iops).fold(0.0, f64::max),
        mb_per_s: m(Sample::mb_per_s),
        p50_us: m(|s| s.p50_us),
        p90_us: m(|s| s.p90_us),
        p99_us: m(|s| s.p99_us),
        p999_us: m(|s| s.p999_us),
        max_us: m(|s| s.max_us),
        exits_per_io: median_opt(samples.iter().map(Sample::exits_per_io)),
        cpu_us_per_io: median_opt(samples.iter().map(Sample::cpu_us_per_io)),
        errors: samples.iter().map(|s| s.errors).sum(),
        percent_of_native: None,
        differs_from_native: None,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backends::engine::BackendSpec;

    fn sample(iops: f64) -> Sample {
        Sample {
            ops: iops as u64,
            bytes: iops as u64 * 4096,
            errors: 0,
            elapsed_s: 1.0,
            p50_us: 10.0,
            p90_us: 20.0,
            p99_us: 30.0,
            p999_us: 40.0,
            max_us: 50.0,
            cdf: vec![(0.5, 10.0), (1.0, 50.0)],
            device_exits: None,
            cpu_s: 1.0,
            cpu_by_process: Vec::new(),
        }
    }

    fn row(path: IoPath, iops: &[f64]) -> Row {
        let disk = Disk {
            spec: BackendSpec::Null { size: 1 << 20 },
            label: "null".into(),
        };
        summarize(path, &disk, 1, iops.iter().map(|&i| sample(i)).collect())
    }

    #[test]
    fn rows_take_medians_and_spread() {
        let r = row(IoPath::Native, &[100.0, 300.0, 200.0]);
        assert_eq!((r.iops, r.iops_min, r.iops_max), (200.0, 100.0, 300.0));
        assert_eq!(r.spread_percent(), 50.0);
        assert_eq!(r.cpu_us_per_io, Some(1e6 / 200.0));
    }

    #[test]
    fn overlapping_ranges_are_not_significant() {
        let mut rows = vec![
            row(IoPath::Emulated, &[90.0, 95.0, 101.0]),
            row(IoPath::Native, &[100.0, 102.0, 104.0]),
        ];
        compare_with_native(&mut rows);
        assert_eq!(rows[0].differs_from_native, Some(false));
        assert_eq!(rows[1].differs_from_native, None);
        assert_eq!(rows[1].percent_of_native, Some(100.0));
        let mut rows = vec![
            row(IoPath::Emulated, &[50.0, 60.0]),
            row(IoPath::Native, &[100.0, 104.0]),
        ];
        compare_with_native(&mut rows);
        assert_eq!(rows[0].differs_from_native, Some(true));
        assert_eq!(rows[0].percent_of_native, Some(55.0 / 102.0 * 100.0));
    }

    #[test]
    fn without_native_there_is_no_comparison() {
        let mut rows = vec![row(IoPath::Emulated, &[50.0])];
        compare_with_native(&mut rows);
        assert_eq!(rows[0].percent_of_native, None);
        assert_eq!(rows[0].differs_from_native, None);
    }
}
