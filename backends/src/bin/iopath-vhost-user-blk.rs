//! iopath-vhost-user-blk: a vhost-user-blk backend over the shared io_uring engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backends::cli;
use backends::engine::BackendSpec;
use backends::vhost_user_blk::backend::ServeOptions;
use backends::vhost_user_blk::daemon::{self, DaemonConfig};
use clap::{ArgGroup, Parser};

const NAME: &str = "iopath-vhost-user-blk";

#[derive(Parser)]
#[command(
    name = NAME,
    version,
    about = "vhost-user-blk backend: one thread and one io_uring per queue",
    group(ArgGroup::new("device").required(true).args(["path", "null"]))
)]
struct Args {
    /// The vhost-user socket (created with mode 0600, or connected to with --client).
    #[arg(long)]
    socket: PathBuf,
    /// Back the device with this file or block device.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Back the device with nothing: SIZE bytes (e.g. 1G) that read as whatever is in the
    /// buffer and absorb writes.
    #[arg(long, value_name = "SIZE")]
    null: Option<String>,
    /// Refuse writes, discards and write-zeroes (and open the file read-only).
    #[arg(long)]
    readonly: bool,
    /// Open the file with O_DIRECT (needs --path).
    #[arg(long)]
    direct: bool,
    /// Request queues, each with its own thread and io_uring (1..=64).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Entries per queue (a power of two up to 32768).
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
    /// After work, busy-poll the queue this many microseconds before sleeping again.
    #[arg(long, default_value_t = 0)]
    poll_us: u64,
    /// Connect to a socket the frontend listens on instead of listening.
    #[arg(long)]
    client: bool,
    /// Frontends served at once, each with its own queues and engines over the same device
    /// (one VM per daemon is the usual setup: more than one writing the same file corrupts
    /// it unless they coordinate). A frontend beyond the limit is accepted and, unless a
    /// connection hangs up within a second, closed with a log line, so that it fails (and
    /// QEMU's reconnect retries) instead of hanging.
    #[arg(long, default_value_t = daemon::DEFAULT_MAX_CONNECTIONS)]
    max_connections: u16,
    /// Guest memory regions one frontend may map (SET_MEM_TABLE, ADD_MEM_REG); also the
    /// GET_MAX_MEM_SLOTS answer (1..=509).
    #[arg(long, default_value_t = daemon::DEFAULT_MAX_MEM_SLOTS)]
    max_mem_slots: u32,
    /// When started as root: open the device and bind the socket, then run as this user
    /// (its groups too). The socket is handed to the user, still mode 0600.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("--null {0:?}: expected a size such as 4096, 64M or 1G (a multiple of 512)")]
    NullSize(String),
    #[error("--direct needs --path")]
    DirectWithoutPath,
    #[error("one of --path or --null is required")]
    NoDevice,
    #[error(transparent)]
    Daemon(#[from] daemon::Error),
}

fn main() -> ExitCode {
    cli::main(NAME, run)
}

fn run(args: Args) -> Result<(), Error> {
    let backend = match (&args.path, &args.null) {
        (Some(path), _) => BackendSpec::File {
            path: path.clone(),
            direct: args.direct,
            read_only: args.readonly,
        },
        (None, Some(_)) if args.direct => return Err(Error::DirectWithoutPath),
        (None, Some(size)) => match format!("null:{size}").parse() {
            Ok(spec) => spec,
            Err(_) => return Err(Error::NullSize(size.clone())),
        },
        (None, None) => return Err(Error::NoDevice),
    };
    let config = DaemonConfig {
        socket: args.socket,
        client: args.client,
        backend,
        read_only: args.readonly,
        queues: args.queues,
        queue_size: args.queue_size,
        serve: ServeOptions {
            poll: Duration::from_micros(args.poll_us),
        },
        max_connections: args.max_connections,
        max_mem_slots: args.max_mem_slots,
        user: args.user,
    };
    daemon::run(&config)?;
    Ok(())
}
