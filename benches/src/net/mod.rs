//! `iopath-bench net`: frames through each network path, side by side, each path as a fraction
//! of native. A run covers a matrix: workloads x frame sizes x far ends x depths, every cell
//! measured on every path, `repeat` times.
//!
//! The far end is what turns frames around: `reflect` (no namespace, no privileges: the VMM's
//! reflect for emulated, the daemon's `--reflect` for virtio, a thread of this process for
//! native) or `netns` (a TAP device whose host end sits in a network namespace the bench
//! creates, where an `AF_PACKET` reflector answers; root only).

pub mod args;
mod far;
mod guest_vm;
pub mod native;
mod report;
mod runner;
mod sample;
mod summary;
pub mod testpmd;
mod vhost_net;
mod work;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use iopath_mailbox::net::{NetWorkload, MAX_FRAME, MIN_FRAME};
use serde::{Deserialize, Serialize};

pub use self::runner::run;
pub use self::work::NetWork;
use crate::block::sample::Sample;
pub use crate::block::Progress;
use crate::host::HostInfo;

/// How frames travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetPath {
    /// Bench guest, e1000 emulated by the VMM (every register access exits).
    Emulated,
    /// Bench guest, virtio-net; our vhost-user-net daemon moves the frames.
    Virtio,
    /// Bench guest, virtio-net; DPDK testpmd (net_vhost, macswap) is the backend
    /// (`--peer testpmd`). Always its own far end.
    VirtioTestpmd,
    /// This process on the host: io_uring on a TAP device (or a socket pair for `reflect`).
    Native,
    /// No VM: DPDK testpmd as a virtio-user frontend of our daemon (`--peer testpmd`), txonly.
    TestpmdFrontend,
}

impl NetPath {
    pub fn name(self) -> &'static str {
        match self {
            NetPath::Emulated => "emulated",
            NetPath::Virtio => "virtio",
            NetPath::VirtioTestpmd => "virtio-testpmd",
            NetPath::Native => "native",
            NetPath::TestpmdFrontend => "testpmd-frontend",
        }
    }
}

impl fmt::Display for NetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emulated" => Ok(NetPath::Emulated),
            "virtio" => Ok(NetPath::Virtio),
            "native" => Ok(NetPath::Native),
            "virtio-testpmd" => Ok(NetPath::VirtioTestpmd),
            "testpmd-frontend" => Ok(NetPath::TestpmdFrontend),
            _ => Err(format!(
                "unknown path {s:?} (expected emulated, virtio, native; with --peer testpmd: virtio-testpmd, testpmd-frontend)"
            )),
        }
    }
}

/// What turns the frames around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Far {
    /// Inside the path's own process: cheap, unprivileged.
    Reflect,
    /// An `AF_PACKET` reflector in a network namespace, behind a TAP device.
    Netns,
}

impl Far {
    pub fn name(self) -> &'static str {
        match self {
            Far::Reflect => "reflect",
            Far::Netns => "netns",
        }
    }
}

impl fmt::Display for Far {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Far {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reflect" => Ok(Far::Reflect),
            "netns" => Ok(Far::Netns),
            _ => Err(format!("unknown far end {s:?} (expected reflect or netns)")),
        }
    }
}

/// Parses a workload name: `tx` or `rr`.
pub fn parse_workload(s: &str) -> Result<NetWorkload, String> {
    NetWorkload::from_name(s).ok_or_else(|| format!("unknown workload {s:?} (expected tx or rr)"))
}

/// Parses a frame size in bytes without FCS, within what every path carries.
pub fn parse_frame(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("frame size {s:?} is not a number of bytes"))?;
    if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
        return Err(format!(
            "frame size {n} is outside {MIN_FRAME}..={MAX_FRAME} bytes (no FCS)"
        ));
    }
    Ok(n)
}

#[derive(Clone, Debug)]
pub struct NetOptions {
    pub paths: Vec<NetPath>,
    pub workloads: Vec<NetWorkload>,
    pub frame_sizes: Vec<u32>,
    pub depths: Vec<u16>,
    pub fars: Vec<Far>,
    pub runtime: Duration,
    pub warmup: Duration,
    pub repeat: u32,
    /// Guest RAM of each VM.
    pub memory: u64,
    /// Run this vhost-user-net daemon instead of ours (this executable's hidden subcommand).
    pub vhost_user_net_bin: Option<std::path::PathBuf>,
    /// Our daemon busy-polls its rings this long after work before sleeping (0: never).
    pub vhost_poll_us: u64,
    /// Round trip: a frame not back after this long is lost.
    pub timeout: Duration,
    pub seed: u64,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            paths: vec![NetPath::Emulated, NetPath::Virtio, NetPath::Native],
            workloads: NetWorkload::ALL.to_vec(),
            frame_sizes: vec![64, 1514],
            depths: vec![1, 32],
            fars: vec![Far::Reflect],
            runtime: Duration::from_secs(3),
            warmup: Duration::ZERO,
            repeat: 3,
            memory: 256 << 20,
            vhost_user_net_bin: None,
            vhost_poll_us: crate::block::DEFAULT_VHOST_POLL_US,
            timeout: Duration::from_millis(100),
            seed: 0x0e7_f4a3e,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} path, {1}")]
    GuestVm(NetPath, String, #[source] guest_vm::Error),
    #[error("native path, {0}")]
    Native(String, #[source] native::Error),
    #[error("testpmd peer, {0}")]
    Testpmd(String, #[source] testpmd::Error),
    #[error("setting up the {0} far end")]
    Far(Far, #[source] far::Error),
    #[error("{0}")]
    Options(&'static str),
    #[error(transparent)]
    Args(#[from] args::Error),
}

impl Error {
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::GuestVm(_, _, source) => source.console_tail(),
            _ => None,
        }
    }
}

/// Frame counts of one run beside the shared [`Sample`] (whose `ops` are frames sent for tx,
/// round trips for rr, and `errors` frames lost or damaged).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetSample {
    #[serde(flatten)]
    pub sample: Sample,
    pub sent: u64,
    /// Frames back intact.
    pub received: u64,
    /// Frames back damaged.
    pub bad: u64,
    /// Round trip: frames never back.
    pub lost: u64,
    /// Frames that were not ours.
    pub foreign: u64,
    /// Frames of ours the namespace's reflector saw (`netns` runs).
    #[serde(default)]
    pub far_received: Option<u64>,
}

impl NetSample {
    pub fn pps(&self) -> f64 {
        self.sample.iops()
    }
}

/// One path with one far end at one depth, over every repetition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub path: NetPath,
    /// `reflect` or `netns`; `testpmd` for the peer's own.
    pub far: String,
    pub depth: u16,
    pub samples: Vec<NetSample>,
    /// Medians over the samples: frames (tx) or round trips (rr) per second.
    pub pps: f64,
    pub pps_min: f64,
    pub pps_max: f64,
    /// Frame bytes (no FCS) sent per second, in Mbit/s.
    pub mbit_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub exits_per_frame: Option<f64>,
    pub cpu_us_per_frame: Option<f64>,
    /// Sums over the samples.
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub bad: u64,
    /// pps as a percentage of the native row with the same far end and depth.
    pub percent_of_native: Option<f64>,
    /// Whether the min..max ranges of this row and native do not overlap.
    pub differs_from_native: Option<bool>,
}

impl Row {
    /// The run whose rate is closest to the median: the one plots show in detail.
    pub fn median_sample(&self) -> Option<&NetSample> {
        crate::stats::closest(&self.samples, self.pps, NetSample::pps)
    }

    /// The rate over the samples: median and range.
    pub fn spread(&self) -> crate::stats::Spread {
        crate::stats::Spread {
            median: self.pps,
            min: self.pps_min,
            max: self.pps_max,
        }
    }

    /// Half the min..max range as a percentage of the median.
    pub fn spread_percent(&self) -> f64 {
        self.spread().half_range_percent()
    }
}

/// One workload at one frame size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// `tx` or `rr`.
    pub workload: String,
    pub frame_bytes: u32,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetReport {
    pub host: HostInfo,
    pub runtime_s: f64,
    pub warmup_s: f64,
    pub repeat: u32,
    /// Our vhost-user-net daemon's `--poll-us` in the virtio rows.
    pub vhost_poll_us: u64,
    pub scenarios: Vec<Scenario>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("native".parse::<NetPath>(), Ok(NetPath::Native));
        assert_eq!(
            "virtio-testpmd".parse::<NetPath>(),
            Ok(NetPath::VirtioTestpmd)
        );
        assert!("nvme".parse::<NetPath>().unwrap_err().contains("expected"));
        assert_eq!("netns".parse::<Far>(), Ok(Far::Netns));
        assert!("bridge".parse::<Far>().is_err());
        assert_eq!(parse_workload("rr"), Ok(NetWorkload::RoundTrip));
        assert!(parse_workload("rx").is_err());
        assert_eq!(parse_frame("60"), Ok(60));
        assert_eq!(parse_frame("1514"), Ok(1514));
        assert!(parse_frame("59").is_err());
        assert!(parse_frame("1515").is_err());
        assert!(parse_frame("1k").is_err());
    }
}
