//! What one run of one path measured, in units every path shares.

use iopath_mailbox::histogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// I/Os completed (successful or not).
    pub ops: u64,
    pub bytes: u64,
    /// I/Os that completed with an error.
    pub errors: u64,
    /// First submission to last completion.
    pub elapsed_s: f64,
    /// Completion latency quantiles.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The latency distribution as (quantile, us) points, for CDF plots.
    pub cdf: Vec<(f64, f64)>,
    /// Exits to the VMM taken on the device's registers, counted by the VMM (none natively).
    pub device_exits: Option<u64>,
    /// Host CPU time during the run: every process the path uses (VMM threads including the
    /// vCPU, a backend daemon; or the native runner, or fio).
    pub cpu_s: f64,
    /// `cpu_s` by process, for paths with more than one (`vmm`, `backend`).
    #[serde(default)]
    pub cpu_by_process: Vec<(String, f64)>,
}

impl Sample {
    /// Builds a sample from a latency histogram whose unit is `ticks_per_us`.
    pub fn new(
        counts: Counts,
        latency: &Histogram,
        ticks_per_us: f64,
        device_exits: Option<u64>,
        cpu_s: f64,
    ) -> Sample {
        // Quantiles are bucket floors; the maximum is recorded exactly.
        let q = |p: f64| {
            let ticks = if p >= 1.0 && latency.count() > 0 {
                Some(latency.max)
            } else {
                latency.quantile(p)
            };
            ticks.map_or(0.0, |t| t as f64 / ticks_per_us)
        };
        let cdf = if latency.count() == 0 {
            Vec::new()
        } else {
            CDF_POINTS.iter().map(|&p| (p, q(p))).collect()
        };
        Sample {
            ops: counts.ops,
            bytes: counts.bytes,
            errors: counts.errors,
            elapsed_s: counts.elapsed_s,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: q(1.0),
            cdf,
            device_exits,
            cpu_s,
            cpu_by_process: Vec::new(),
        }
    }

    /// Builds a sample from (quantile, us) points measured elsewhere (fio). Quantiles between
    /// points take the next point's value.
    pub fn from_cdf(
        counts: Counts,
        mut cdf: Vec<(f64, f64)>,
        device_exits: Option<u64>,
        cpu_s: f64,
    ) -> Sample {
        cdf.sort_by(|a, b| a.0.total_cmp(&b.0));
        let q = |p: f64| {
            cdf.iter()
                .find(|(at, _)| *at >= p - 1e-9)
                .or(cdf.last())
                .map_or(0.0, |c| c.1)
        };
        Sample {
            ops: counts.ops,
            bytes: counts.bytes,
            errors: counts.errors,
            elapsed_s: counts.elapsed_s,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: q(1.0),
            device_exits,
            cpu_s,
            cpu_by_process: Vec::new(),
            cdf,
        }
    }

    /// Builds a sample from what the bench guest measured (on our VMM or a peer's), its TSC
    /// rate giving the time base.
    pub fn from_guest(
        res: &iopath_mailbox::BlockResults,
        tsc_khz: u64,
        device_exits: Option<u64>,
        cpu_by_process: Vec<(String, f64)>,
    ) -> Sample {
        let khz = tsc_khz.max(1) as f64;
        let counts = Counts {
            ops: res.ops,
            bytes: res.bytes,
            errors: res.errors,
            elapsed_s: res.elapsed_ticks as f64 / (khz * 1000.0),
        };
        let cpu_s = cpu_by_process.iter().map(|p| p.1).sum();
        let mut s = Sample::new(counts, &res.latency, khz / 1000.0, device_exits, cpu_s);
        s.cpu_by_process = cpu_by_process;
        s
    }

    pub fn iops(&self) -> f64 {
        per_second(self.ops, self.elapsed_s)
    }

    pub fn mb_per_s(&self) -> f64 {
        per_second(self.bytes, self.elapsed_s) / 1e6
    }

    pub fn exits_per_io(&self) -> Option<f64> {
        let exits = self.device_exits?;
        (self.ops > 0).then(|| exits as f64 / self.ops as f64)
    }

    pub fn cpu_us_per_io(&self) -> Option<f64> {
        (self.ops > 0).then(|| self.cpu_s * 1e6 / self.ops as f64)
    }
}

/// Where the CDF is sampled: dense in the tail, where paths differ.
const CDF_POINTS: [f64; 24] = [
    0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98,
    0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// The counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    pub elapsed_s: f64,
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quantiles_come_from_the_counts_and_histogram() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 2000); // 2 ticks per ns at 2000 ticks/us: 1..=1000 us.
        }
        let counts = Counts {
            ops: 1000,
            bytes: 4096 * 1000,
            errors: 0,
            elapsed_s: 0.5,
        };
        let s = Sample::new(counts, &h, 2000.0, Some(3000), 0.25);
        assert_eq!(s.iops(), 2000.0);
        assert!((s.mb_per_s() - 8.192).abs() < 1e-9);
        // Bucket floors are within 1/16 below the true value.
        assert!(s.p50_us <= 500.0 && s.p50_us > 500.0 * 0.93, "{}", s.p50_us);
        assert!(s.p99_us <= 990.0 && s.p99_us > 990.0 * 0.93, "{}", s.p99_us);
        assert!(s.max_us <= 1000.0 && s.max_us > 930.0, "{}", s.max_us);
        assert!(s
            .cdf
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.cdf.last().map(|p| p.1), Some(s.max_us));
        assert_eq!(s.exits_per_io(), Some(3.0));
        assert_eq!(s.cpu_us_per_io(), Some(250.0));
    }

    #[test]
    fn an_empty_run_has_no_rates() {
        let s = Sample::new(Counts::default(), &Histogram::new(), 1.0, None, 0.0);
        assert_eq!((s.iops(), s.p99_us), (0.0, 0.0));
        assert!(s.cdf.is_empty());
        assert_eq!(s.exits_per_io(), None);
        assert_eq!(s.cpu_us_per_io(), None);
    }
}
