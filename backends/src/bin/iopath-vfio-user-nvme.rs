//! `iopath-vfio-user-nvme`: the NVMe controller model served over vfio-user, the passthrough
//! path's device on hosts without kernel VFIO.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backends::cli;
use backends::engine::BackendSpec;
use backends::nvme::ControllerConfig;
use backends::vfio_user_nvme::{self, DaemonConfig, Limits, PollTuning};
use clap::Parser;

/// Serve an NVMe controller over vfio-user. Doorbells are a shared page polled by a dedicated
/// thread; SIGTERM or SIGINT exits 0.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Unix socket to listen on (created with mode 0600).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Backing file or block device.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "null",
        conflicts_with = "null"
    )]
    path: Option<PathBuf>,
    /// Open the backing file read-only; the namespace is write protected.
    #[arg(long, conflicts_with = "null")]
    readonly: bool,
    /// Bypass the page cache (O_DIRECT).
    #[arg(long, conflicts_with = "null")]
    direct: bool,
    /// No backing store: SIZE bytes (suffix K, M, G, T) that read as zeroes.
    #[arg(long, value_name = "SIZE", value_parser = parse_null_size)]
    null: Option<u64>,
    /// Keep busy-polling the doorbells this long after the last work before sleeping.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 500)]
    poll_spin_us: u64,
    /// Longest sleep between doorbell scans when idle (bounds the first command's latency).
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 1000)]
    poll_max_sleep_us: u64,
    /// Client connections open at once; one is served, the others wait their turn. A further
    /// connection is closed (and logged) unless a slot frees within a second.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// DMA windows (DMA_MAP) one client may have mapped; more get an error reply.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_dma_regions as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_dma_regions: u32,
}

fn parse_null_size(s: &str) -> Result<u64, String> {
    match format!("null:{s}").parse::<BackendSpec>() {
        Ok(BackendSpec::Null { size }) => Ok(size),
        Ok(other) => Err(format!("unexpected backend {other}")),
        Err(e) => Err(e.to_string()),
    }
}

impl Args {
    fn backend(&self) -> BackendSpec {
        match (&self.path, self.null) {
            (Some(path), _) => BackendSpec::File {
                path: path.clone(),
                direct: self.direct,
                read_only: self.readonly,
            },
            // clap requires one of the two.
            (None, size) => BackendSpec::Null {
                size: size.unwrap_or(backends::engine::DEFAULT_NULL_SIZE),
            },
        }
    }
}

fn main() -> ExitCode {
    cli::init_logging();
    let args = Args::parse();
    let cfg = DaemonConfig {
        socket: args.socket.clone(),
        backend: args.backend(),
        controller: ControllerConfig::default(),
        tuning: PollTuning {
            spin: Duration::from_micros(args.poll_spin_us),
            max_sleep: Duration::from_micros(args.poll_max_sleep_us),
            ..PollTuning::default()
        },
        limits: Limits {
            max_connections: args.max_connections as usize,
            max_dma_regions: args.max_dma_regions as usize,
        },
    };
    match vfio_user_nvme::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iopath-vfio-user-nvme: error: {}", cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
