//! `iopath-bench block`: one block workload on each I/O path, side by side, each path as a
//! percentage of native.

mod emulated;
pub mod native;
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
use crate::table::Table;

/// How the workload reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoPath {
    /// Bench guest, emulated NVMe controller in the VMM.
    Emulated,
    /// The same engine on the host, no VM.
    Native,
}

impl IoPath {
    pub fn name(self) -> &'static str {
        match self {
            IoPath::Emulated => "emulated",
            IoPath::Native => "native",
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
            _ => Err(format!("unknown path {s:?} (expected emulated or native)")),
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
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub exits_per_io: Option<f64>,
    pub cpu_us_per_io: Option<f64>,
    pub errors: u64,
    /// IOPS as a percentage of the native row with the same backend and depth.
    pub percent_of_native: Option<f64>,
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
            let native = rows[first..]
                .iter()
                .find(|r| r.path == IoPath::Native)
                .map(|r| r.iops);
            for r in &mut rows[first..] {
                r.percent_of_native = native.filter(|n| *n > 0.0).map(|n| r.iops / n * 100.0);
            }
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
        mb_per_s: m(Sample::mb_per_s),
        p50_us: m(|s| s.p50_us),
        p99_us: m(|s| s.p99_us),
        p999_us: m(|s| s.p999_us),
        exits_per_io: median_opt(samples.iter().map(Sample::exits_per_io)),
        cpu_us_per_io: median_opt(samples.iter().map(Sample::cpu_us_per_io)),
        errors: samples.iter().map(|s| s.errors).sum(),
        percent_of_native: None,
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

impl BlockReport {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "path",
            "backend",
            "qd",
            "IOPS",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "exits/IO",
            "CPU us/IO",
            "% native",
            "errors",
        ]);
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        for r in &self.rows {
            t.row([
                r.path.to_string(),
                r.backend.clone(),
                r.queue_depth.to_string(),
                format!("{:.0}", r.iops),
                format!("{:.1}", r.mb_per_s),
                format!("{:.1}", r.p50_us),
                format!("{:.1}", r.p99_us),
                format!("{:.1}", r.p999_us),
                opt(r.exits_per_io, 2),
                opt(r.cpu_us_per_io, 1),
                opt(r.percent_of_native, 1),
                r.errors.to_string(),
            ]);
        }
        format!(
            "{} {} B, {:.0} s x {} runs (medians) on {} ({})\n{}",
            self.workload,
            self.block_size,
            self.runtime_s,
            self.repeat,
            self.host.kind,
            self.host.cpu_model,
            t.render()
        )
    }
}
