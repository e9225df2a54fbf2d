//! Runs the real `iopath-vfio-user-nvme` binary on a socket in a temporary directory.

use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_iopath-vfio-user-nvme");

pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon with `args` after `--socket`, and waits for its socket.
    pub fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nvme.sock");
        let mut d = Daemon::spawn(socket, dir, args);
        let start = Instant::now();
        while !d.socket.exists() {
            d.check_running(start);
        }
        d
    }

    /// Starts the daemon on `socket`, which may already exist (a stale socket), and waits
    /// until it accepts connections (the probe connection is served and dropped).
    pub fn start_at(socket: &Path, args: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(socket.into(), tempfile::tempdir().unwrap(), args);
        let start = Instant::now();
        while UnixStream::connect(socket).is_err() {
            d.check_running(start);
        }
        d
    }

    fn spawn(socket: PathBuf, dir: tempfile::TempDir, args: &[&str]) -> Daemon {
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        Daemon {
            child: Some(child),
            socket,
            dir,
        }
    }

    fn check_running(&mut self, start: Instant) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon not ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill has no memory effects; the pid is our child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// Runs the daemon to completion (for argument and startup errors); one still running after
/// 10 s is killed and the test fails.
pub fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the daemon");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Whether a status is a clean exit 0 (not a signal death).
pub fn exited_zero(status: ExitStatus) -> bool {
    status.code() == Some(0) && status.signal().is_none()
}
