//! The real daemons (`iopath-vfio-user-nvme`, `iopath-vhost-user-blk`) as child processes of a
//! VMM test. They are another package's binaries, so Cargo gives this crate no
//! `CARGO_BIN_EXE_*` for them: they are taken from the same target directory as
//! `iopath-vmm` (`cargo test --workspace` builds them; `cargo build -p backends` does too).
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The daemon binary `name` next to `iopath-vmm`; says so in one line when it is absent.
pub fn bin_or_skip(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_iopath-vmm")).with_file_name(name);
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "skipped: {} is absent (build it with `cargo build -p backends`)",
        path.display()
    );
    None
}

/// A daemon child, killed (SIGKILL) and reaped when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `bin --socket SOCKET ARGS..` and waits until the socket accepts connections
    /// (the probe connection is dropped unused).
    pub fn start(bin: &Path, socket: &Path, args: &[&str]) -> Daemon {
        let child = Command::new(bin)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        let mut d = Daemon {
            child: Some(child),
            socket: socket.into(),
        };
        let start = Instant::now();
        while UnixStream::connect(socket).is_err() {
            assert!(d.alive(), "{} exited at start", bin.display());
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} not ready",
                bin.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn alive(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        child.try_wait().expect("wait").is_none()
    }

    /// SIGKILL, and the status it died with.
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits up to `limit` for `done` to hold, polling.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}
