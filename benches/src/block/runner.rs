//! Runs the matrix: every cell on every path, paths interleaved within each repetition so drift
//! on the host hits them alike.

use std::io::Write;
use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_mailbox::Workload;

use super::guest_vm::{self, GuestDisk, GuestVmJob};
use super::qemu_peer;
use super::sample::Sample;
use super::summary::{compare_with_native, summarize};
use super::vhost_backend::BackendProgram;
use super::work::BlockWork;
use super::{fio, native, BlockOptions, BlockReport, Error, IoPath, NativeJob, Scenario};
use crate::host::HostInfo;
use crate::peer::qemu::{QemuBlockJob, QemuDisk};

/// A disk to run on: the spec and the name the table shows.
pub(super) struct Disk {
    pub spec: BackendSpec,
    pub label: String,
}

/// One measurement point.
struct Point<'a> {
    path: IoPath,
    workload: Workload,
    block_size: u32,
    disk: &'a Disk,
    qd: u16,
}

impl Point<'_> {
    fn describe(&self) -> String {
        format!(
            "{} {} B on {} qd {}",
            self.workload.name(),
            self.block_size,
            self.disk.spec,
            self.qd
        )
    }
}

/// What the runner tells its caller after each run.
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub line: &'a str,
}

/// Runs the matrix of `opts`; `progress` hears about every measured run.
pub fn run(opts: &BlockOptions, mut progress: impl FnMut(Progress)) -> Result<BlockReport, Error> {
    if opts.paths.is_empty()
        || opts.queue_depths.is_empty()
        || opts.workloads.is_empty()
        || opts.block_sizes.is_empty()
        || opts.repeat == 0
    {
        return Err(Error::Options(
            "need at least one path, workload, block size, queue depth and repetition",
        ));
    }
    // The temporary file is deleted when this guard goes.
    let (disks, _temp) = disks(opts)?;
    let total = opts.workloads.len()
        * opts.block_sizes.len()
        * disks.len()
        * opts.queue_depths.len()
        * opts.paths.len()
        * opts.repeat as usize;
    let mut done = 0;
    let mut scenarios = Vec::new();
    for &workload in &opts.workloads {
        for &block_size in &opts.block_sizes {
            let mut rows = Vec::new();
            for disk in &disks {
                for &qd in &opts.queue_depths {
                    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); opts.paths.len()];
                    for rep in 1..=opts.repeat {
                        for (i, &path) in opts.paths.iter().enumerate() {
                            let point = Point {
                                path,
                                workload,
                                block_size,
                                disk,
                                qd,
                            };
                            if !opts.warmup.is_zero() {
                                run_one(opts, &point, opts.warmup)?;
                            }
                            let s = run_one(opts, &point, opts.runtime)?;
                            done += 1;
                            let line = format!(
                                "{path} {} {} B {} qd {qd} run {rep}/{}: {:.0} IOPS, p99 {:.1} us",
                                workload.name(),
                                block_size,
                                disk.label,
                                opts.repeat,
                                s.iops(),
                                s.p99_us
                            );
                            progress(Progress {
                                done,
                                total,
                                line: &line,
                            });
                            samples[i].push(s);
                        }
                    }
                    let first = rows.len();
                    for (&path, samples) in opts.paths.iter().zip(samples) {
                        rows.push(summarize(path, disk, qd, samples));
                    }
                    compare_with_native(&mut rows[first..]);
                }
            }
            scenarios.push(Scenario {
                workload: workload.name().into(),
                block_size,
                rows,
            });
        }
    }
    Ok(BlockReport {
        host: HostInfo::probe(),
        runtime_s: opts.runtime.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        repeat: opts.repeat,
        vhost_poll_us: opts.vhost_poll_us,
        scenarios,
    })
}

fn run_one(opts: &BlockOptions, p: &Point, duration: Duration) -> Result<Sample, Error> {
    let spec = &p.disk.spec;
    let work = BlockWork {
        workload: p.workload,
        block_size: p.block_size,
        queue_depth: p.qd,
        ops: 0,
        duration,
        region_bytes: opts.region_bytes,
        seed: opts.seed,
    };
    let guest_vm = |disk| {
        guest_vm::run(&GuestVmJob {
            disk,
            work: work.clone(),
            memory: opts.memory,
        })
        .map_err(|e| Error::GuestVm(p.path, p.describe(), e))
    };
    let qemu = |disk| {
        qemu_peer::run(&QemuBlockJob {
            disk,
            work: work.clone(),
            memory: opts.memory,
        })
        .map_err(|e| Error::Qemu(p.path, p.describe(), e))
    };
    match p.path {
        IoPath::Emulated => guest_vm(GuestDisk::Nvme(spec.clone())),
        IoPath::Virtio => guest_vm(GuestDisk::VhostUser(
            BackendProgram::Ours {
                bin: opts.vhost_user_blk_bin.clone(),
                poll_us: opts.vhost_poll_us,
            },
            spec.clone(),
        )),
        IoPath::VirtioQsd => guest_vm(GuestDisk::VhostUser(BackendProgram::Qsd, spec.clone())),
        IoPath::Passthrough => guest_vm(GuestDisk::VfioUser(spec.clone())),
        IoPath::QemuNvme => qemu(QemuDisk::Nvme(spec.clone())),
        IoPath::QemuVirtio => qemu(QemuDisk::VirtioBlk(spec.clone())),
        IoPath::Native => native::run(&NativeJob {
            backend: spec.clone(),
            work,
        })
        .map_err(|e| Error::Native(p.describe(), e)),
        IoPath::Fio => fio::run(&fio::FioJob {
            backend: spec.clone(),
            work,
        })
        .map_err(|e| Error::Fio(p.describe(), e)),
    }
}

/// The disks of the run: the ones asked for, or `null` and a temporary file.
fn disks(opts: &BlockOptions) -> Result<(Vec<Disk>, Option<tempfile::NamedTempFile>), Error> {
    if !opts.backends.is_empty() {
        let disks = opts
            .backends
            .iter()
            .map(|spec| Disk {
                label: match spec {
                    BackendSpec::Null { .. } => "null".into(),
                    BackendSpec::File { .. } => "file".into(),
                },
                spec: spec.clone(),
            })
            .collect();
        return Ok((disks, None));
    }
    let file = temp_disk(opts.temp_file_size)?;
    let disks = vec![
        Disk {
            spec: BackendSpec::Null {
                size: backends::engine::DEFAULT_NULL_SIZE,
            },
            label: "null".into(),
        },
        Disk {
            spec: BackendSpec::File {
                path: file.path().to_path_buf(),
                direct: false,
                read_only: false,
            },
            label: "temp-file".into(),
        },
    ];
    Ok((disks, Some(file)))
}

/// A temporary file of `size` bytes holding data (not holes), so reads copy real pages.
fn temp_disk(size: u64) -> Result<tempfile::NamedTempFile, Error> {
    let mut f = tempfile::Builder::new()
        .prefix("iopath-disk-")
        .tempfile()
        .map_err(Error::TempFile)?;
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).map_err(Error::TempFile)?;
        left -= n as u64;
    }
    f.as_file().sync_data().map_err(Error::TempFile)?;
    Ok(f)
}
