//! Our vhost-user-net daemon as the virtio path's backend (and the peer frontend's target):
//! `iopath-vhost-user-net --socket PATH (--tap NAME | --reflect | --sink)`, started per run,
//! measured from /proc, killed after.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::block::vhost_backend::{BackendProcess, Error};

/// The daemon's binary name.
pub const DAEMON: &str = "iopath-vhost-user-net";

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

/// Starts the daemon: `bin`, or the one built beside this executable, or the one on PATH;
/// `poll_us` is its `--poll-us`.
pub fn start(bin: Option<&Path>, mode: &DaemonMode, poll_us: u64) -> Result<BackendProcess, Error> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => find().ok_or_else(|| Error::Missing(DAEMON.into()))?,
    };
    BackendProcess::spawn("net.sock", |socket| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket").arg(socket);
        cmd.arg("--poll-us").arg(poll_us.to_string());
        match mode {
            DaemonMode::Tap(name) => cmd.arg("--tap").arg(name),
            DaemonMode::Reflect => cmd.arg("--reflect"),
            DaemonMode::Sink => cmd.arg("--sink"),
        };
        Ok((cmd, bin.display().to_string()))
    })
}

/// The daemon beside this executable (cargo builds every binary of the workspace into one
/// directory; tests run from its `deps/`), or on PATH.
pub fn find() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let mut candidates = vec![dir.join(DAEMON)];
    if dir.ends_with("deps") {
        candidates.extend(dir.parent().map(|d| d.join(DAEMON)));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|d| d.join(DAEMON)));
    }
    candidates.into_iter().find(|p| p.is_file())
}
