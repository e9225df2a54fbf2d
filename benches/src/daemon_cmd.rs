//! The hidden daemon subcommands: `iopath-bench vhost-user-blk-daemon`,
//! `vhost-user-net-daemon` and `vfio-user-nvme-daemon` run our daemons from this executable, so
//! the virtio and passthrough paths need no second binary built. They take the same flags as
//! `iopath-vhost-user-blk`, `iopath-vhost-user-net` and `iopath-vfio-user-nvme` (the subset the
//! bench passes).

use std::path::PathBuf;
use std::time::Duration;

use backends::engine::BackendSpec;
use backends::vhost_user_blk::backend::ServeOptions;
use backends::vhost_user_blk::daemon::{self, DaemonConfig};
use clap::Args;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long, conflicts_with = "null", required_unless_present = "null")]
    pub path: Option<PathBuf>,
    /// Bytes of a null device.
    #[arg(long)]
    pub null: Option<u64>,
    #[arg(long)]
    pub readonly: bool,
    #[arg(long, requires = "path")]
    pub direct: bool,
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    #[arg(long, default_value_t = 256)]
    pub queue_size: u16,
    #[arg(long, default_value_t = 0)]
    pub poll_us: u64,
}

impl DaemonArgs {
    fn config(&self) -> DaemonConfig {
        let backend = match (&self.path, self.null) {
            (Some(path), _) => BackendSpec::File {
                path: path.clone(),
                direct: self.direct,
                read_only: self.readonly,
            },
            (None, size) => BackendSpec::Null {
                size: size.unwrap_or(backends::engine::DEFAULT_NULL_SIZE),
            },
        };
        DaemonConfig {
            socket: self.socket.clone(),
            client: false,
            backend,
            read_only: self.readonly,
            queues: self.queues,
            queue_size: self.queue_size,
            serve: ServeOptions {
                poll: Duration::from_micros(self.poll_us),
            },
            max_connections: daemon::DEFAULT_MAX_CONNECTIONS,
            max_mem_slots: daemon::DEFAULT_MAX_MEM_SLOTS,
            user: None,
        }
    }

    /// Serves until SIGTERM.
    pub fn run(&self) -> Result<(), daemon::Error> {
        daemon::run(&self.config())
    }
}

#[derive(Args, Debug)]
pub struct VfioUserNvmeArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long, conflicts_with = "null", required_unless_present = "null")]
    pub path: Option<PathBuf>,
    /// Bytes of a null device.
    #[arg(long)]
    pub null: Option<u64>,
    #[arg(long)]
    pub readonly: bool,
    #[arg(long, requires = "path")]
    pub direct: bool,
}

impl VfioUserNvmeArgs {
    /// Serves until SIGTERM.
    pub fn run(&self) -> Result<(), backends::vfio_user_nvme::Error> {
        let backend = match (&self.path, self.null) {
            (Some(path), _) => BackendSpec::File {
                path: path.clone(),
                direct: self.direct,
                read_only: self.readonly,
            },
            (None, size) => BackendSpec::Null {
                size: size.unwrap_or(backends::engine::DEFAULT_NULL_SIZE),
            },
        };
        backends::vfio_user_nvme::run(&backends::vfio_user_nvme::DaemonConfig {
            socket: self.socket.clone(),
            backend,
            controller: backends::nvme::ControllerConfig::default(),
            tuning: backends::vfio_user_nvme::PollTuning::default(),
            limits: backends::vfio_user_nvme::Limits::default(),
        })
    }
}

/// `iopath-bench vhost-user-net-daemon`: our vhost-user-net daemon as the net bench's virtio
/// path starts it (the subset of `iopath-vhost-user-net`'s flags the bench passes).
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["tap", "reflect", "sink"])))]
pub struct VhostUserNetArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    #[arg(long)]
    pub reflect: bool,
    #[arg(long)]
    pub sink: bool,
    #[arg(long, default_value_t = 0)]
    pub poll_us: u64,
}

impl VhostUserNetArgs {
    /// Serves until SIGTERM.
    pub fn run(&self) -> Result<(), backends::vhost_user_net::daemon::Error> {
        use backends::vhost_user_net::{Mode, NetConfig};
        let mode = match (&self.tap, self.reflect) {
            (Some(name), _) => Mode::Tap(name.clone()),
            (None, true) => Mode::Reflect,
            (None, false) => Mode::Sink,
        };
        backends::vhost_user_net::daemon::run(&backends::vhost_user_net::daemon::DaemonConfig {
            socket: self.socket.clone(),
            client: false,
            mode,
            device: NetConfig {
                mac: vmm::net::DEFAULT_MAC,
                mtu: 1500,
                queue_pairs: 1,
                queue_size: 256,
            },
            serve: backends::vhost_user_net::backend::ServeOptions {
                poll: Duration::from_micros(self.poll_us),
            },
        })
        .map(drop)
    }
}
