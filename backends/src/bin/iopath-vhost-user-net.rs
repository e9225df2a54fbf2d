//! iopath-vhost-user-net: a vhost-user-net backend over a TAP device (io_uring), or reflecting
//! or sinking frames without a wire.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backends::cli;
use backends::vhost_user_net::backend::ServeOptions;
use backends::vhost_user_net::config::parse_mac;
use backends::vhost_user_net::daemon::{self, DaemonConfig};
use backends::vhost_user_net::{Mode, NetConfig};
use clap::{ArgGroup, Parser};

const NAME: &str = "iopath-vhost-user-net";

#[derive(Parser)]
#[command(
    name = NAME,
    version,
    about = "vhost-user-net backend: one thread and one engine per queue pair",
    group(ArgGroup::new("mode").required(true).args(["tap", "reflect", "sink"]))
)]
struct Args {
    /// The vhost-user socket (created with mode 0600, or connected to with --client).
    #[arg(long)]
    socket: PathBuf,
    /// Send and receive frames on this TAP device (created if absent; "name%d" lets the
    /// kernel number it), one io_uring per queue pair.
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// Send every TX frame back on RX with source and destination MAC swapped.
    #[arg(long)]
    reflect: bool,
    /// Count TX frames and drop them; nothing is received.
    #[arg(long)]
    sink: bool,
    /// Queue pairs, each with its own thread and engine (1..=31; more than one adds MQ and
    /// the control queue).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Entries per queue (a power of two up to 32768).
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
    /// The MAC address the guest is given.
    #[arg(long, default_value = "52:54:00:12:34:56")]
    mac: String,
    /// The MTU the guest is given (frames longer than it plus headers are dropped).
    #[arg(long, default_value_t = 1500)]
    mtu: u16,
    /// After work, busy-poll the queues this many microseconds before sleeping again.
    #[arg(long, default_value_t = 0)]
    poll_us: u64,
    /// Connect to a socket the frontend listens on instead of listening.
    #[arg(long)]
    client: bool,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("--mac {0:?}: expected six hex bytes such as 52:54:00:12:34:56")]
    Mac(String),
    #[error(transparent)]
    Daemon(#[from] daemon::Error),
}

fn main() -> ExitCode {
    cli::main(NAME, run)
}

fn run(args: Args) -> Result<(), Error> {
    let mode = match (args.tap, args.reflect) {
        (Some(name), _) => Mode::Tap(name),
        (None, true) => Mode::Reflect,
        (None, false) => Mode::Sink,
    };
    let mac = parse_mac(&args.mac).ok_or_else(|| Error::Mac(args.mac.clone()))?;
    let config = DaemonConfig {
        socket: args.socket,
        client: args.client,
        mode,
        device: NetConfig {
            mac,
            mtu: args.mtu,
            queue_pairs: args.queues,
            queue_size: args.queue_size,
        },
        serve: ServeOptions {
            poll: Duration::from_micros(args.poll_us),
        },
    };
    let stats = daemon::run(&config)?;
    // The counters go to stderr whatever the log level: they are the daemon's result.
    eprintln!(
        "{NAME}: tx_frames={} rx_frames={} dropped={} ({stats:?})",
        stats.tx_frames,
        stats.rx_frames,
        stats.dropped()
    );
    Ok(())
}
