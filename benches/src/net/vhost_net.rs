//! Our vhost-user-net daemon as the virtio path's backend (and the testpmd frontend's target),
//! started per run, measured from /proc, killed after: this executable's hidden
//! `vhost-user-net-daemon` subcommand, or another build of `iopath-vhost-user-net`, with
//! `--socket PATH (--tap NAME | --reflect | --sink) --poll-us N`.

use std::path::Path;
use std::process::Command;

use crate::block::vhost_backend::{BackendProcess, Error};

/// What the daemon does with the guest's frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonMode {
    /// Forwards them to and from a TAP device.
    Tap(String),
    /// Sends each one back with its MACs swapped.
    Reflect,
    /// Counts and drops them.
    Sink,
}

/// Starts the daemon (`bin`, or ours from this executable); `poll_us` is its `--poll-us`.
pub fn start(bin: Option<&Path>, mode: &DaemonMode, poll_us: u64) -> Result<BackendProcess, Error> {
    BackendProcess::spawn("net.sock", |socket| {
        let (mut cmd, name) = match bin {
            Some(bin) => (Command::new(bin), bin.display().to_string()),
            None => {
                let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
                let mut cmd = Command::new(exe);
                cmd.arg("vhost-user-net-daemon");
                (cmd, "iopath-vhost-user-net".to_string())
            }
        };
        cmd.arg("--socket").arg(socket);
        cmd.arg("--poll-us").arg(poll_us.to_string());
        match mode {
            DaemonMode::Tap(name) => cmd.arg("--tap").arg(name),
            DaemonMode::Reflect => cmd.arg("--reflect"),
            DaemonMode::Sink => cmd.arg("--sink"),
        };
        Ok((cmd, name))
    })
}
