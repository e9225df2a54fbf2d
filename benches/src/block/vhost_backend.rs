//! The device process of a run: a vhost-user-blk backend for the virtio path (ours, run as a
//! child of this process, or `qemu-storage-daemon`), or our vfio-user NVMe server for the
//! passthrough path; started per run on its own socket, measured from /proc, killed after.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use backends::engine::BackendSpec;

use crate::cpu;

/// qemu-storage-daemon, from Debian's qemu-utils.
pub const QSD: &str = "qemu-storage-daemon";
/// How long a backend may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which program serves the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendProgram {
    /// Our daemon: this executable's hidden `vhost-user-blk-daemon` subcommand, or another
    /// build of `iopath-vhost-user-blk` at `bin`; `poll_us` is its `--poll-us`.
    Ours { bin: Option<PathBuf>, poll_us: u64 },
    /// qemu-storage-daemon's vhost-user-blk export (io_uring on files).
    Qsd,
    /// Our vfio-user NVMe server (this executable's hidden `vfio-user-nvme-daemon`), for the
    /// passthrough path.
    VfioUserNvme,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not installed")]
    Missing(String),
    #[error("starting {0}")]
    Spawn(String, #[source] std::io::Error),
    #[error("{0} exited before creating its socket ({1})")]
    Exited(String, std::process::ExitStatus),
    #[error("{0} did not create its socket within {START_TIMEOUT:?}")]
    NoSocket(String),
    #[error("creating a directory for the socket")]
    TempDir(#[source] std::io::Error),
    #[error("finding this executable")]
    CurrentExe(#[source] std::io::Error),
}

/// A running backend; killed (and its socket directory removed) when dropped.
pub struct BackendProcess {
    child: Child,
    socket: PathBuf,
    name: String,
    _dir: tempfile::TempDir,
}

impl BackendProcess {
    pub fn start(program: &BackendProgram, disk: &BackendSpec) -> Result<Self, Error> {
        Self::spawn("blk.sock", |socket| command(program, disk, socket))
    }

    /// Starts the program `build` makes for a socket path (named `socket_name`, in a fresh
    /// private directory) and waits for it to create the socket.
    pub fn spawn(
        socket_name: &str,
        build: impl FnOnce(&Path) -> Result<(Command, String), Error>,
    ) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("iopath-vhost-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let socket = dir.path().join(socket_name);
        let (mut cmd, name) = build(&socket)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::Missing(name.clone()),
                _ => Error::Spawn(name.clone(), e),
            })?;
        let mut p = BackendProcess {
            child,
            socket,
            name,
            _dir: dir,
        };
        p.wait_for_socket()?;
        Ok(p)
    }

    fn wait_for_socket(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.socket.exists() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited(self.name.clone(), status));
            }
            if Instant::now() > deadline {
                return Err(Error::NoSocket(self.name.clone()));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The backend's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the backend has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu::process_time_of(self.child.id()).unwrap_or_default()
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(
    program: &BackendProgram,
    disk: &BackendSpec,
    socket: &Path,
) -> Result<(Command, String), Error> {
    match program {
        BackendProgram::Ours { bin, poll_us } => {
            let (mut cmd, name) = match bin {
                Some(bin) => (Command::new(bin), bin.display().to_string()),
                None => {
                    let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
                    let mut cmd = Command::new(exe);
                    cmd.arg("vhost-user-blk-daemon");
                    (cmd, "iopath-vhost-user-blk".to_string())
                }
            };
            cmd.arg("--socket").arg(socket);
            cmd.arg("--poll-us").arg(poll_us.to_string());
            match disk {
                BackendSpec::Null { size } => {
                    cmd.arg("--null").arg(size.to_string());
                }
                BackendSpec::File {
                    path,
                    direct,
                    read_only,
                } => {
                    cmd.arg("--path").arg(path);
                    if *direct {
                        cmd.arg("--direct");
                    }
                    if *read_only {
                        cmd.arg("--readonly");
                    }
                }
            }
            Ok((cmd, name))
        }
        BackendProgram::VfioUserNvme => {
            let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
            let mut cmd = Command::new(exe);
            cmd.arg("vfio-user-nvme-daemon").arg("--socket").arg(socket);
            match disk {
                BackendSpec::Null { size } => {
                    cmd.arg("--null").arg(size.to_string());
                }
                BackendSpec::File {
                    path,
                    direct,
                    read_only,
                } => {
                    cmd.arg("--path").arg(path);
                    if *direct {
                        cmd.arg("--direct");
                    }
                    if *read_only {
                        cmd.arg("--readonly");
                    }
                }
            }
            Ok((cmd, "iopath-vfio-user-nvme".to_string()))
        }
        BackendProgram::Qsd => {
            let mut cmd = Command::new(QSD);
            let (blockdev, writable) = match disk {
                BackendSpec::Null { size } => {
                    (format!("driver=null-co,node-name=disk0,size={size}"), true)
                }
                BackendSpec::File {
                    path,
                    direct,
                    read_only,
                } => (
                    format!(
                        "driver=file,node-name=disk0,filename={},cache.direct={},aio=io_uring",
                        path.display(),
                        if *direct { "on" } else { "off" }
                    ),
                    !read_only,
                ),
            };
            cmd.arg("--blockdev").arg(blockdev).arg("--export").arg(format!(
                "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={},writable={}",
                socket.display(),
                if writable { "on" } else { "off" }
            ));
            Ok((cmd, QSD.to_string()))
        }
    }
}

/// Whether `program` can be started here.
pub fn available(program: &BackendProgram) -> bool {
    match program {
        BackendProgram::Ours { bin: Some(bin), .. } => bin.is_file(),
        BackendProgram::Ours { bin: None, .. } | BackendProgram::VfioUserNvme => true,
        BackendProgram::Qsd => std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(QSD).is_file())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qsd_serves_a_file_and_dies_with_its_handle() {
        if !available(&BackendProgram::Qsd) {
            eprintln!("skipped: qemu-storage-daemon not installed");
            return;
        }
        let img = tempfile::NamedTempFile::new().unwrap();
        img.as_file().set_len(1 << 20).unwrap();
        let spec = BackendSpec::File {
            path: img.path().to_path_buf(),
            direct: false,
            read_only: false,
        };
        let p = BackendProcess::start(&BackendProgram::Qsd, &spec).unwrap();
        let socket = p.socket().to_path_buf();
        assert!(socket.exists());
        let pid = p.child.id();
        drop(p);
        assert!(cpu::process_time_of(pid).is_none(), "killed and reaped");
        assert!(!socket.exists(), "socket directory removed");
    }

    #[test]
    fn a_backend_that_exits_at_once_is_an_error_not_a_hang() {
        let spec = BackendSpec::Null { size: 1 << 20 };
        let e = BackendProcess::start(
            &BackendProgram::Ours {
                bin: Some("/bin/false".into()),
                poll_us: 0,
            },
            &spec,
        )
        .err()
        .expect("an error");
        assert!(matches!(e, Error::Exited(..)), "{e}");
        let e = BackendProcess::start(
            &BackendProgram::Ours {
                bin: Some("/nonexistent".into()),
                poll_us: 0,
            },
            &spec,
        )
        .err()
        .expect("an error");
        assert!(matches!(e, Error::Missing(_)), "{e}");
    }
}
