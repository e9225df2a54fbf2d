//! `iopath-bench block`: one block workload on each I/O path, side by side, each path as a
//! percentage of native.

mod emulated;
pub mod fio;
pub mod native;
mod report;
pub mod sample;

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_mailbox::Workload;
use serde::{Deserialize, Serialize};

pub use self::emulated::EmulatedJob;
pub use self::native::NativeJob;
use self::sample::Sample;
use crate::host::HostInfo;

/// How the workload reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoPath {
    /// Bench guest, emulated NVMe controller in the VMM.
    Emulated,
    /// The same engine on the host, no VM.
    Native,
    /// fio on the host (`--peer fio`): a second native reference.
    Fio,
}

impl IoPath {
    pub fn name(self) -> &'static str {
        match self {
            IoPath::Emulated => "emulated",
            IoPath::Native => "native",
            IoPath::Fio => "fio",
        }
    }
}

impl fmt::Display for IoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IoPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emulated" => Ok(IoPath::Emulated),
            "native" => Ok(IoPath::Native),
            "fio" => Ok(IoPath::Fio),
            _ => Err(format!(
                "unknown path {s:?} (expected emulated, native or fio)"
            )),
        }
    }
}

/// Parses a workload name; `verify` is a correctness job, not a benchmark.
pub fn parse_workload(s: &str) -> Result<Workload, String> {
    Workload::from_name(s)
        .filter(|w| *w != Workload::Verify)
        .ok_or_else(|| {
            format!("unknown workload {s:?} (expected randread, randwrite, read or write)")
        })
}

#[derive(Clone, Debug)]
pub struct BlockOptions {
    pub paths: Vec<IoPath>,
    pub workload: Workload,
    pub block_size: u32,
    pub queue_depths: Vec<u16>,
    /// Empty: the embedded defaults, `null` and a temporary file of `temp_file_size` bytes.
    pub backends: Vec<BackendSpec>,
    pub runtime: Duration,
    pub repeat: u32,
    /// Bytes of each disk the workload covers (0: all of it).
    pub region_bytes: u64,
    /// Guest RAM of each VM.
    pub memory: u64,
    pub temp_file_size: u64,
    pub seed: u64,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            paths: vec![IoPath::Emulated, IoPath::Native],
            workload: Workload::RandRead,
            block_size: 4096,
            queue_depths: vec![1, 32],
            backends: Vec::new(),
            runtime: Duration::from_secs(3),
            repeat: 3,
            region_bytes: 0,
            memory: 256 << 20,
            temp_file_size: 256 << 20,
            seed: 0x0b10_c4e5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("emulated path, {backend} qd {qd}")]
    Emulated {
        backend: String,
        qd: u16,
        #[source]
        source: emulated::Error,
    },
    #[error("native path, {backend} qd {qd}")]
    Native {
        backend: String,
        qd: u16,
        #[source]
        source: native::Error,
    },
    #[error("fio peer, {backend} qd {qd}")]
    Fio {
        backend: String,
        qd: u16,
        #[source]
        source: fio::Error,
    },
    #[error("creating the temporary disk file")]
    TempFile(#[source] std::io::Error),
    #[error("{0}")]
    Options(&'static str),
}

impl Error {
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::Emulated { source, .. } => source.console_tail(),
            _ => None,
        }
    }
}

/// One path on one backend at one queue depth, over every repetition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub path: IoPath,
    /// Short name for the table: `null`, `file` or `temp-file`.
    pub backend: String,
    pub backend_spec: String,
    pub queue_depth: u16,
    pub samples: Vec<Sample>,
    /// Medians over the samples.
    pub iops: f64,
    /// The spread of IOPS over the samples.
    pub iops_min: f64,
    pub iops_max: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub exits_per_io: Option<f64>,
    pub cpu_us_per_io: Option<f64>,
    pub errors: u64,
    /// IOPS as a percentage of the native row with the same backend and depth.
    pub percent_of_native: Option<f64>,
    /// Whether the IOPS differ from native by more than the run-to-run spread (the two
    /// min..max ranges do not overlap). `None` for native itself or without native.
    pub differs_from_native: Option<bool>,
}

impl Row {
    /// Half the min..max range of IOPS as a percentage of the median.
    pub fn spread_percent(&self) -> f64 {
        if self.iops > 0.0 {
            (self.iops_max - self.iops_min) / 2.0 / self.iops * 100.0
        } else {
            0.0
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockReport {
    pub host: HostInfo,
    pub workload: String,
    pub block_size: u32,
    pub runtime_s: f64,
    pub repeat: u32,
    pub rows: Vec<Row>,
}

/// A disk to run on: the spec and the name the table shows.
struct Disk {
    spec: BackendSpec,
    label: String,
}

/// Runs the scenario; `progress` gets one line per run.
pub fn run(opts: &BlockOptions, mut progress: impl FnMut(&str)) -> Result<BlockReport, Error> {
    if opts.paths.is_empty() || opts.queue_depths.is_empty() || opts.repeat == 0 {
        return Err(Error::Options(
            "need at least one path, one queue depth and one repetition",
        ));
    }
    // Kept alive (and deleted afterwards) by this guard.
    let mut temp = None;
    let disks: Vec<Disk> = if opts.backends.is_empty() {
        let file = temp_disk(opts.temp_file_size)?;
        let spec = BackendSpec::File {
            path: file.path().to_path_buf(),
            direct: false,
            read_only: false,
        };
        temp = Some(file);
        vec![
            Disk {
                spec: BackendSpec::Null {
                    size: backends::engine::DEFAULT_NULL_SIZE,
                },
                label: "null".into(),
            },
            Disk {
                spec,
                label: "temp-file".into(),
            },
        ]
    } else {
        opts.backends
            .iter()
            .map(|spec| Disk {
                label: match spec {
                    BackendSpec::Null { .. } => "null".into(),
                    BackendSpec::File { .. } => "file".into(),
                },
                spec: spec.clone(),
            })
            .collect()
    };

    let mut rows = Vec::new();
    for disk in &disks {
        for &qd in &opts.queue_depths {
            let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); opts.paths.len()];
            // Paths alternate within each repetition, so drift on the host hits them alike.
            for rep in 1..=opts.repeat {
                for (i, &path) in opts.paths.iter().enumerate() {
                    let s = run_one(opts, path, &disk.spec, qd)?;
                    progress(&format!(
                        "{path} {} qd {qd} run {rep}/{}: {:.0} IOPS, p99 {:.1} us",
                        disk.label,
                        opts.repeat,
                        s.iops(),
                        s.p99_us
                    ));
                    samples[i].push(s);
                }
            }
            let first = rows.len();
            for (&path, samples) in opts.paths.iter().zip(samples) {
                rows.push(summarize(path, disk, qd, samples));
            }
            compare_with_native(&mut rows[first..]);
        }
    }
    drop(temp);
    Ok(BlockReport {
        host: HostInfo::probe(),
        workload: opts.workload.name().into(),
        block_size: opts.block_size,
        runtime_s: opts.runtime.as_secs_f64(),
        repeat: opts.repeat,
        rows,
    })
}

fn run_one(
    opts: &BlockOptions,
    path: IoPath,
    spec: &BackendSpec,
    qd: u16,
) -> Result<Sample, Error> {
    match path {
        IoPath::Emulated => emulated::run(&EmulatedJob {
            backend: spec.clone(),
            workload: opts.workload,
            block_size: opts.block_size,
            queue_depth: qd,
            ops: 0,
            duration: opts.runtime,
            region_bytes: opts.region_bytes,
            seed: opts.seed,
            memory: opts.memory,
        })
        .map_err(|source| Error::Emulated {
            backend: spec.to_string(),
            qd,
            source,
        }),
        IoPath::Native => native::run(&NativeJob {
            backend: spec.clone(),
            workload: opts.workload,
            block_size: opts.block_size,
            queue_depth: qd,
            ops: 0,
            duration: opts.runtime,
            region_bytes: opts.region_bytes,
            seed: opts.seed,
        })
        .map_err(|source| Error::Native {
            backend: spec.to_string(),
            qd,
            source,
        }),
        IoPath::Fio => fio::run(&fio::FioJob {
            backend: spec.clone(),
            workload: opts.workload,
            block_size: opts.block_size,
            queue_depth: qd,
            duration: opts.runtime,
            region_bytes: opts.region_bytes,
            seed: opts.seed,
        })
        .map_err(|source| Error::Fio {
            backend: spec.to_string(),
            qd,
            source,
        }),
    }
}

/// Fills the native comparison of rows measured on the same disk at the same depth.
fn compare_with_native(rows: &mut [Row]) {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = v.collect();
    v.map(median)
}

fn summarize(path: IoPath, disk: &Disk, qd: u16, samples: Vec<Sample>) -> Row {
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

/// A temporary file of `size` bytes holding data (not holes), so reads copy real pages.
fn temp_disk(size: u64) -> Result<tempfile::NamedTempFile, Error> {
    let mut f = tempfile::Builder::new()
        .prefix("iopath-disk-")
        .tempfile()
        .map_err(Error::TempFile)?;
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).map_err(Error::TempFile)?;
        left -= n as u64;
    }
    f.as_file().sync_data().map_err(Error::TempFile)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn workload_names_parse_and_verify_is_refused() {
        assert_eq!(parse_workload("randwrite"), Ok(Workload::RandWrite));
        assert!(parse_workload("verify").is_err());
        assert!(parse_workload("RANDREAD").is_err());
        assert_eq!("native".parse::<IoPath>(), Ok(IoPath::Native));
        assert!("virtual".parse::<IoPath>().is_err());
    }
}
