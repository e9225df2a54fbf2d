//! `--peer qemu`: the bench guest under QEMU/KVM, booted through its PVH entry, driving one of
//! QEMU's disks (emulated NVMe, virtio-blk with an iothread, or vhost-user-blk). Results come
//! back through the same mailbox as on our VMM: QEMU's guest RAM is a shared file, read after
//! QEMU exits.
//!
//! QEMU boots through PC firmware (SeaBIOS), which on PVM runs emulated instruction by
//! instruction: expect several seconds before the guest starts. The firmware does not count
//! in the results (the guest times its own job in TSC ticks), and the CPU time of QEMU is
//! reported from the guest's first console line on as well as in total.

pub mod args;
mod child;
mod host;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use backends::engine::BackendSpec;
use iopath_mailbox::layout::{MAILBOX_GPA, RAM_MIN};
use iopath_mailbox::{error as guest_error, BlockDevice, BlockResults, Job, Mailbox, Status};
use vmm::guest_image::BENCH_GUEST;

use self::args::{qemu_args, RunFiles};
pub use self::host::{find_qemu, QEMU};
use crate::block::BlockWork;

/// Set-up and tear-down time allowed on top of the run time: firmware boot on PVM takes
/// 10-20 s on a loaded machine.
const GRACE: Duration = Duration::from_secs(120);
/// How many console lines an error quotes.
const LOG_LINES: usize = 20;
/// The guest's first console line; seeing it ends the firmware phase.
const GUEST_BANNER: &str = "iopath bench guest";
/// tmpfs for guest RAM when the host has one: a disk file would be written back for nothing.
const SHM: &str = "/dev/shm";

/// The disk the guest drives, and QEMU's device model for it.
#[derive(Clone, Debug)]
pub enum QemuDisk {
    /// QEMU's emulated NVMe controller (`-device nvme`).
    Nvme(BackendSpec),
    /// virtio-blk-pci, modern only, served by an iothread.
    VirtioBlk(BackendSpec),
    /// vhost-user-blk-pci: the backend is a daemon already listening on `socket`.
    VhostUserBlk { socket: PathBuf },
}

impl QemuDisk {
    fn guest_device(&self) -> BlockDevice {
        match self {
            QemuDisk::Nvme(_) => BlockDevice::Nvme,
            QemuDisk::VirtioBlk(_) | QemuDisk::VhostUserBlk { .. } => BlockDevice::VirtioBlk,
        }
    }
}

/// One block job under QEMU; the fields mean what they mean for our own VMM's runs.
#[derive(Clone, Debug)]
pub struct QemuBlockJob {
    pub disk: QemuDisk,
    pub work: BlockWork,
    /// Guest RAM in bytes, a whole number of MiB.
    pub memory: u64,
}

/// What one QEMU run produced.
#[derive(Clone, Debug)]
pub struct QemuBlockRun {
    /// Exactly what the guest measured, as on our VMM.
    pub results: BlockResults,
    /// The TSC rate of the run (ticks per millisecond).
    pub tsc_khz: u64,
    /// QEMU's CPU time (all threads), from the guest's first console line to exit: the job.
    pub qemu_cpu_guest: Option<Duration>,
    /// QEMU's CPU time over its whole life, firmware boot included.
    pub qemu_cpu_total: Option<Duration>,
    /// Spawn to exit.
    pub wall: Duration,
    /// The guest's first console line to exit.
    pub guest_wall: Option<Duration>,
    /// The guest's console (COM1), firmware output first.
    pub console: String,
    /// The program and arguments that ran.
    pub command_line: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{QEMU} is not installed (apt install qemu-system-x86)")]
    NotInstalled,
    #[error("{} is absent; the QEMU peer runs with KVM only", host::KVM)]
    NoKvm,
    #[error("guest RAM must be a whole number of MiB and at least {min} MiB, not {0} bytes", min = RAM_MIN >> 20)]
    Memory(u64),
    #[error("reading the host's TSC rate")]
    Tsc(#[source] host::Error),
    #[error("preparing the run's files: {0}")]
    Files(&'static str, #[source] io::Error),
    #[error("starting {0}")]
    Spawn(PathBuf, #[source] io::Error),
    #[error("waiting for QEMU")]
    Wait(#[source] io::Error),
    #[error("QEMU did not finish within {0:?} and was killed")]
    Timeout(Duration, String),
    #[error("QEMU stopped ({status}) before the guest finished: {stderr}")]
    Exited {
        status: ExitStatus,
        stderr: String,
        console: String,
    },
    #[error("guest failed: {reason}")]
    GuestFailed {
        reason: &'static str,
        console: String,
    },
    #[error("the guest signalled done but left no valid mailbox")]
    BadMailbox(String),
}

impl Error {
    /// Why the peer cannot run on this host at all, for a "skipped: ..." line; `None` for
    /// errors of a run that did start.
    pub fn skip_reason(&self) -> Option<&'static str> {
        match self {
            Error::NotInstalled => Some("qemu-system-x86_64 not installed"),
            Error::NoKvm => Some("/dev/kvm absent"),
            _ => None,
        }
    }

    /// The last lines of the guest console, for errors from a run that started.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::Timeout(_, console)
            | Error::Exited { console, .. }
            | Error::GuestFailed { console, .. }
            | Error::BadMailbox(console) => Some(console),
            _ => None,
        }
    }
}

/// The QEMU binary, if this host can run the peer at all.
pub fn available() -> Result<PathBuf, Error> {
    let qemu = find_qemu().ok_or(Error::NotInstalled)?;
    if !host::kvm_present() {
        return Err(Error::NoKvm);
    }
    Ok(qemu)
}

/// Runs `job` in the bench guest under QEMU and returns what the guest measured.
pub fn run_block(job: &QemuBlockJob) -> Result<QemuBlockRun, Error> {
    let qemu = available()?;
    if job.memory < RAM_MIN || !job.memory.is_multiple_of(1 << 20) {
        return Err(Error::Memory(job.memory));
    }
    let tsc_khz = host::tsc_khz().map_err(Error::Tsc)?;
    let dir = run_dir().map_err(|e| Error::Files("temporary directory", e))?;
    let files = RunFiles {
        kernel: dir.path().join("iopath-guest.elf"),
        ram: dir.path().join("ram"),
        mailbox: dir.path().join("mailbox.bin"),
        console: dir.path().join("console.log"),
    };
    std::fs::write(&files.kernel, BENCH_GUEST).map_err(|e| Error::Files("guest image", e))?;
    let mailbox = Mailbox::new(guest_job(job, tsc_khz));
    std::fs::write(&files.mailbox, mailbox.as_bytes()).map_err(|e| Error::Files("mailbox", e))?;
    let stderr_path = dir.path().join("qemu-stderr.log");
    let stderr = File::create(&stderr_path).map_err(|e| Error::Files("stderr log", e))?;

    let args = qemu_args(&files, job.memory, &job.disk);
    let mut command_line = vec![qemu.display().to_string()];
    command_line.extend(args.iter().cloned());
    log::debug!("{}", command_line.join(" "));
    let started = Instant::now();
    let mut child = Command::new(&qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::Spawn(qemu.clone(), e))?;
    let timeout = job.work.duration + GRACE;
    let watched = child::watch(&mut child, started, timeout, || {
        std::fs::read(&files.console)
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(GUEST_BANNER))
    })
    .map_err(Error::Wait)?;

    let console = read_lossy(&files.console);
    let Some(status) = watched.status else {
        return Err(Error::Timeout(timeout, tail(&console)));
    };
    // No readable, valid mailbox means the guest never started (QEMU refused its options,
    // the firmware failed) or it wrecked the page; QEMU's stderr tells which.
    let mailbox = read_mailbox(&files.ram).ok().filter(Mailbox::is_valid);
    match mailbox.map(|m| (m, Status::from_raw(m.status))) {
        Some((m, Some(Status::Done))) => Ok(QemuBlockRun {
            results: m.block,
            tsc_khz,
            qemu_cpu_guest: watched.cpu_after_mark,
            qemu_cpu_total: watched.cpu,
            wall: watched.wall,
            guest_wall: watched.wall_after_mark,
            console,
            command_line,
        }),
        Some((m, Some(Status::Failed))) => Err(Error::GuestFailed {
            reason: guest_error::describe(m.error),
            console: tail(&console),
        }),
        None if status.code().is_some_and(guest_signalled) => {
            Err(Error::BadMailbox(tail(&console)))
        }
        _ => Err(Error::Exited {
            status,
            stderr: read_lossy(&stderr_path).trim().to_string(),
            console: tail(&console),
        }),
    }
}

/// Whether a QEMU exit code is isa-debug-exit's for a guest done write: (status << 1) | 1.
fn guest_signalled(code: i32) -> bool {
    [Status::Done, Status::Failed]
        .iter()
        .any(|&s| code == (s as i32) << 1 | 1)
}

fn guest_job(job: &QemuBlockJob, tsc_khz: u64) -> Job {
    Job {
        tsc_khz,
        ..job.work.guest_job(job.disk.guest_device())
    }
}

/// A private directory for one run, on tmpfs when there is one.
fn run_dir() -> io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("iopath-qemu-");
    if Path::new(SHM).is_dir() {
        if let Ok(dir) = b.tempdir_in(SHM) {
            return Ok(dir);
        }
    }
    b.tempdir()
}

/// The mailbox from a guest RAM file (file offset = guest-physical address in low RAM).
fn read_mailbox(ram: &Path) -> io::Result<Mailbox> {
    let mut buf = vec![0u8; std::mem::size_of::<Mailbox>()];
    File::open(ram)?.read_exact_at(&mut buf, MAILBOX_GPA)?;
    Mailbox::from_bytes(&buf).ok_or_else(|| io::Error::other("short mailbox read"))
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `LOG_LINES` lines.
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use iopath_mailbox::{JobKind, Workload};
    use std::time::Duration;

    /// Writes `mailbox` into a RAM-like file at `MAILBOX_GPA`, as the guest leaves it.
    fn write_mailbox_at_gpa(ram: &Path, mailbox: &Mailbox) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(ram)?;
        f.set_len(MAILBOX_GPA + (1 << 16))?;
        f.write_all_at(mailbox.as_bytes(), MAILBOX_GPA)?;
        f.flush()
    }

    fn job() -> QemuBlockJob {
        QemuBlockJob {
            disk: QemuDisk::VirtioBlk(BackendSpec::Null { size: 1 << 30 }),
            work: BlockWork {
                workload: Workload::RandWrite,
                block_size: 8192,
                queue_depth: 16,
                ops: 0,
                duration: Duration::from_millis(1500),
                region_bytes: 4 << 20,
                seed: 99,
            },
            memory: 256 << 20,
        }
    }

    #[test]
    fn the_guest_job_carries_every_parameter_and_the_tsc_rate() {
        let j = guest_job(&job(), 2_000_000);
        assert_eq!(j.kind, JobKind::Block as u32);
        assert_eq!((j.tsc_khz, j.seed), (2_000_000, 99));
        assert_eq!(j.block.device, BlockDevice::VirtioBlk as u32);
        assert_eq!(j.block.workload, Workload::RandWrite as u32);
        assert_eq!((j.block.block_size, j.block.queue_depth), (8192, 16));
        assert_eq!((j.block.ops, j.block.duration_ms), (0, 1500));
        assert_eq!(j.block.region_bytes, 4 << 20);
    }

    #[test]
    fn mailbox_bytes_round_trip_through_a_ram_file() {
        let dir = tempfile::tempdir().unwrap();
        let ram = dir.path().join("ram");
        let mut m = Mailbox::new(guest_job(&job(), 1_234_567));
        m.status = Status::Done as u32;
        m.block.ops = 42;
        m.block.latency.record(1000);
        write_mailbox_at_gpa(&ram, &m).unwrap();
        let back = read_mailbox(&ram).unwrap();
        assert_eq!(back, m);
        assert!(back.is_valid());
        // The staged copy QEMU loads is the same bytes.
        std::fs::write(dir.path().join("mb.bin"), m.as_bytes()).unwrap();
        let staged = std::fs::read(dir.path().join("mb.bin")).unwrap();
        assert_eq!(Mailbox::from_bytes(&staged), Some(m));
    }

    #[test]
    fn a_short_ram_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let ram = dir.path().join("ram");
        std::fs::write(&ram, [0u8; 16]).unwrap();
        assert!(read_mailbox(&ram).is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text);
        assert!(t.starts_with("line 30\n") && t.ends_with("line 49"));
    }

    #[test]
    fn only_host_errors_are_skip_reasons() {
        assert_eq!(
            Error::NotInstalled.skip_reason(),
            Some("qemu-system-x86_64 not installed")
        );
        assert!(Error::BadMailbox(String::new()).skip_reason().is_none());
    }

    #[test]
    fn debug_exit_codes_of_the_guest_are_recognised() {
        assert!(guest_signalled(5) && guest_signalled(7));
        assert!(!guest_signalled(0) && !guest_signalled(1) && !guest_signalled(3));
    }
}
