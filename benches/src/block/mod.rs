//! `iopath-bench block`: block workloads on each I/O path, side by side, each path as a
//! percentage of native. A run covers a matrix: workloads x block sizes x disks x queue depths,
//! every cell measured on every path, `repeat` times.

pub mod args;
pub mod fio;
mod guest_vm;
pub mod native;
mod qemu_peer;
mod report;
mod runner;
pub mod sample;
mod scenario_file;
mod summary;
pub mod vhost_backend;
mod work;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_mailbox::Workload;
use serde::{Deserialize, Serialize};

pub use self::guest_vm::{GuestDisk, GuestVmJob};
pub use self::native::NativeJob;
pub use self::runner::{run, Progress};
use self::sample::Sample;
pub use self::scenario_file::ScenarioFile;
pub use self::work::BlockWork;
use crate::host::HostInfo;

/// How the workload reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoPath {
    /// Bench guest, emulated NVMe controller in the VMM.
    Emulated,
    /// Bench guest, virtio-blk; our vhost-user-blk daemon does the I/O.
    Virtio,
    /// Bench guest, virtio-blk; qemu-storage-daemon does the I/O (`--peer qsd`).
    VirtioQsd,
    /// Bench guest, NVMe passed through over vfio-user from our NVMe server process.
    Passthrough,
    /// The same engine on the host, no VM.
    Native,
    /// fio on the host (`--peer fio`): a second native reference.
    Fio,
    /// The same bench guest under QEMU, QEMU's emulated NVMe (`--peer qemu`).
    QemuNvme,
    /// The same bench guest under QEMU, QEMU's virtio-blk with an iothread (`--peer qemu`).
    QemuVirtio,
}

impl IoPath {
    pub fn name(self) -> &'static str {
        match self {
            IoPath::Emulated => "emulated",
            IoPath::Virtio => "virtio",
            IoPath::VirtioQsd => "virtio-qsd",
            IoPath::Passthrough => "passthrough",
            IoPath::Native => "native",
            IoPath::Fio => "fio",
            IoPath::QemuNvme => "qemu-nvme",
            IoPath::QemuVirtio => "qemu-virtio",
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
            "virtio" => Ok(IoPath::Virtio),
            "virtio-qsd" => Ok(IoPath::VirtioQsd),
            "passthrough" => Ok(IoPath::Passthrough),
            "native" => Ok(IoPath::Native),
            "fio" => Ok(IoPath::Fio),
            "qemu-nvme" => Ok(IoPath::QemuNvme),
            "qemu-virtio" => Ok(IoPath::QemuVirtio),
            _ => Err(format!(
                "unknown path {s:?} (expected emulated, virtio, passthrough, native; peers virtio-qsd, fio, qemu-nvme, qemu-virtio)"
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

/// Our daemon's adaptive polling in the bench: measured here, it turns a 13 K IOPS QD1 virtio
/// run into a 90 K one (the guest's notifies are suppressed while the daemon polls).
pub const DEFAULT_VHOST_POLL_US: u64 = 50;

#[derive(Clone, Debug)]
pub struct BlockOptions {
    pub paths: Vec<IoPath>,
    pub workloads: Vec<Workload>,
    pub block_sizes: Vec<u32>,
    pub queue_depths: Vec<u16>,
    /// Empty: the embedded defaults, `null` and a temporary file of `temp_file_size` bytes.
    pub backends: Vec<BackendSpec>,
    pub runtime: Duration,
    /// Run before each measured run and thrown away (0: none): warms caches and the engine.
    pub warmup: Duration,
    pub repeat: u32,
    /// Bytes of each disk the workload covers (0: all of it).
    pub region_bytes: u64,
    /// Guest RAM of each VM.
    pub memory: u64,
    /// Run this vhost-user-blk daemon for the virtio path instead of ours.
    pub vhost_user_blk_bin: Option<std::path::PathBuf>,
    /// Our daemon busy-polls its ring this long after work before sleeping (0: never).
    pub vhost_poll_us: u64,
    pub temp_file_size: u64,
    pub seed: u64,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            paths: vec![
                IoPath::Emulated,
                IoPath::Virtio,
                IoPath::Passthrough,
                IoPath::Native,
            ],
            workloads: vec![Workload::RandRead],
            block_sizes: vec![4096],
            queue_depths: vec![1, 32],
            backends: Vec::new(),
            runtime: Duration::from_secs(3),
            warmup: Duration::ZERO,
            repeat: 3,
            region_bytes: 0,
            memory: 256 << 20,
            vhost_user_blk_bin: None,
            vhost_poll_us: DEFAULT_VHOST_POLL_US,
            temp_file_size: 256 << 20,
            seed: 0x0b10_c4e5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} path, {1}")]
    GuestVm(IoPath, String, #[source] guest_vm::Error),
    #[error("native path, {0}")]
    Native(String, #[source] native::Error),
    #[error("fio peer, {0}")]
    Fio(String, #[source] fio::Error),
    #[error("{0} peer, {1}")]
    Qemu(IoPath, String, #[source] crate::peer::qemu::Error),
    #[error("creating the temporary disk file")]
    TempFile(#[source] std::io::Error),
    #[error("{0}")]
    Options(&'static str),
    #[error(transparent)]
    Args(#[from] args::Error),
}

impl Error {
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::GuestVm(_, _, source) => source.console_tail(),
            Error::Qemu(_, _, source) => source.console_tail(),
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
    /// The run whose IOPS is closest to the median: the one plots show in detail.
    pub fn median_sample(&self) -> Option<&Sample> {
        crate::stats::closest(&self.samples, self.iops, Sample::iops)
    }

    /// Half the min..max range of IOPS as a percentage of the median.
    pub fn spread_percent(&self) -> f64 {
        crate::stats::Spread {
            median: self.iops,
            min: self.iops_min,
            max: self.iops_max,
        }
        .half_range_percent()
    }
}

/// One workload at one block size: its rows, every path on every disk and depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub workload: String,
    pub block_size: u32,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockReport {
    pub host: HostInfo,
    pub runtime_s: f64,
    pub warmup_s: f64,
    pub repeat: u32,
    /// Our vhost-user-blk daemon's `--poll-us` in the virtio rows.
    #[serde(default)]
    pub vhost_poll_us: u64,
    pub scenarios: Vec<Scenario>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_parse_and_verify_is_refused() {
        assert_eq!(parse_workload("randwrite"), Ok(Workload::RandWrite));
        assert!(parse_workload("verify").is_err());
        assert!(parse_workload("RANDREAD").is_err());
        assert_eq!("native".parse::<IoPath>(), Ok(IoPath::Native));
        assert!("virtual".parse::<IoPath>().is_err());
    }
}
