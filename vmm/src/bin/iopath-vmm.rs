//! iopath-vmm: runs the bench guest with a job, boots a Linux guest, or reports what this host
//! can do.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iopath_mailbox::net::{NetDevice, NetJob, NetWorkload};
use iopath_mailbox::{BlockDevice, BlockJob, ExitKind, ExitsJob, Job, JobKind, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::check_host;
use vmm::disk::{DiskConfig, DiskIface};
use vmm::linux_vm::{self, LinuxVmConfig};
use vmm::memory::RamConfig;
use vmm::net::{NetConfig, NetIface};
use vmm::units::{parse_duration, parse_size};
use vmm::vfio::DeviceConfig;

#[derive(Parser)]
#[command(
    name = "iopath-vmm",
    version,
    about = "The iopath VMM: runs the bench guest (or a Linux guest) on KVM"
)]
struct Args {
    /// Report the host kind, KVM capabilities, IOMMU/VFIO, io_uring and hugepages, then exit.
    #[arg(long)]
    check_host: bool,
    /// With --check-host: print JSON instead of a table.
    #[arg(long, requires = "check_host")]
    json: bool,
    /// A bench guest ELF to run instead of the embedded one.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Boot a Linux kernel (bzImage or ELF vmlinux) instead of the bench guest. The run ends
    /// when the guest reboots (exit status 0) or at --timeout.
    #[arg(long, conflicts_with = "guest")]
    kernel: Option<PathBuf>,
    /// With --kernel: an initramfs to load.
    #[arg(long, requires = "kernel")]
    initramfs: Option<PathBuf>,
    /// With --kernel: the kernel command line [default: "console=ttyS0 reboot=k"].
    #[arg(long, requires = "kernel")]
    cmdline: Option<String>,
    /// With --kernel: vCPUs, one thread each [default: 1].
    #[arg(long, requires = "kernel")]
    cpus: Option<u8>,
    /// The job: `exits`, `block` (needs a --disk), `net` (needs a --net), or a raw job number.
    #[arg(long, default_value = "exits")]
    job: String,
    /// Guest RAM (e.g. 128M, 1G).
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    memory: u64,
    /// Back guest RAM with 2 MiB hugetlbfs pages.
    #[arg(long)]
    hugepages: bool,
    /// Where the guest console goes: stdout, none, or a file path.
    #[arg(long, default_value = "stdout")]
    serial: String,
    /// Give up if the guest has not finished after this long [default: 60s for the bench
    /// guest, none for a Linux guest].
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Exits job: iterations per repetition.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Exits job: repetitions (the fastest and the median are kept).
    #[arg(long, default_value_t = 5)]
    repetitions: u32,
    /// Exits job: MiB of random page touches (a power of two; 0 skips it).
    #[arg(long, default_value_t = 32)]
    touch_mib: u32,
    /// A disk: `path=FILE[,direct=on][,readonly=on],iface=nvme`, `null[=SIZE],iface=nvme`, or
    /// `socket=PATH,iface=vhost-user[,queues=N][,queue_size=N]` (a vhost-user-blk backend; the
    /// guest sees virtio-blk).
    #[arg(long)]
    disk: Vec<DiskConfig>,
    /// A passthrough PCI function, after the disks: `vfio=BDF` (kernel VFIO: 0000:03:00.0 or a
    /// sysfs path; the device bound to vfio-pci) or `vfio-user=SOCKET` (a vfio-user server such
    /// as iopath-vfio-user-nvme). Bench guest only.
    #[arg(
        long,
        value_name = "vfio=BDF|vfio-user=SOCKET",
        conflicts_with = "kernel"
    )]
    device: Vec<DeviceConfig>,
    /// A NIC, after the disks and devices: `tap=NAME[,mac=MAC]` or `reflect[,mac=MAC]` (the
    /// emulated e1000), or `socket=PATH[,queues=N][,queue_size=N]` (a vhost-user-net backend;
    /// the guest sees virtio-net). Bench guest only.
    #[arg(long, conflicts_with = "kernel")]
    net: Vec<NetConfig>,
    /// Net job: tx (frames per second) or rr (round trips: latency, and every frame back
    /// intact).
    #[arg(long, default_value = "rr", value_parser = parse_net_workload)]
    net_workload: NetWorkload,
    /// Net job: bytes per frame without FCS (60 to 1514).
    #[arg(long, default_value_t = 64)]
    frame: u32,
    /// Block job: randread, randwrite, read, write, or verify (write a pattern over the region,
    /// read it back and compare).
    #[arg(long, default_value = "randread", value_parser = parse_workload)]
    workload: Workload,
    /// Block job: bytes per I/O.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    bs: u64,
    /// Block job: I/Os in flight. Net job: frames in flight (rr) or per notification (tx).
    #[arg(long, default_value_t = 1)]
    qd: u32,
    /// Block and net jobs: stop after this many I/Os or frames (0: no limit).
    #[arg(long, default_value_t = 0)]
    ops: u64,
    /// Block and net jobs: stop after this long (0s: no limit); with neither --ops nor
    /// --runtime, 1s.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    runtime: std::time::Duration,
    /// Block job: bytes of the disk covered from offset 0 (default: all of it).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    region: u64,
    /// Print the results as JSON.
    #[arg(long)]
    results_json: bool,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("unknown job {0:?} (expected `exits`, `block`, `net` or a job number)")]
    Job(String),
    #[error("--bs {0} does not fit in 32 bits")]
    BlockSize(u64),
    #[error("cannot read guest image {0}")]
    Image(PathBuf, #[source] std::io::Error),
    #[error("cannot open serial output {0}")]
    Serial(String, #[source] std::io::Error),
    #[error("run")]
    Run(#[source] bench_vm::Error),
    #[error("Linux guest")]
    Linux(#[source] linux_vm::Error),
    #[error("writing JSON failed")]
    Json(#[source] serde_json::Error),
    #[error("writing to stdout failed")]
    Stdout(#[source] std::io::Error),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    // The console tail is worth showing only if it did not already go to the terminal.
    let console_shown = args.serial == "stdout";
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The `run` wrapper adds nothing a user needs: print from the cause.
            let shown: &dyn std::error::Error = match &e {
                Error::Run(inner) => inner,
                Error::Linux(inner) => inner,
                other => other,
            };
            eprintln!("iopath-vmm: error: {}", vmm::error_chain(shown));
            if let Some(tail) = match &e {
                Error::Run(inner) => inner.console_tail(),
                Error::Linux(inner) => inner.console_tail(),
                _ => None,
            } {
                if !tail.is_empty() && !console_shown {
                    eprintln!("iopath-vmm: last guest console lines:\n{tail}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    if args.check_host {
        let report = check_host::check();
        if args.json {
            out(&serde_json::to_string_pretty(&report).map_err(Error::Json)?)?;
        } else {
            out(report.table().trim_end())?;
        }
        return Ok(());
    }
    if let Some(kernel) = args.kernel.clone() {
        return run_linux(args, kernel);
    }
    let kind = match args.job.as_str() {
        "exits" => JobKind::Exits as u32,
        "block" => JobKind::Block as u32,
        "net" => JobKind::Net as u32,
        n => n.parse::<u32>().map_err(|_| Error::Job(n.to_string()))?,
    };
    let image = match &args.guest {
        Some(path) => fs::read(path).map_err(|e| Error::Image(path.clone(), e))?,
        None => vmm::guest_image::BENCH_GUEST.to_vec(),
    };
    let console = console(&args.serial)?;
    let duration_ms = match (args.ops, args.runtime.as_millis() as u64) {
        (0, 0) => 1000,
        (_, ms) => ms,
    };
    let job = Job {
        kind,
        seed: 1,
        exits: ExitsJob {
            iterations: args.iterations,
            repetitions: args.repetitions,
            touch_mib: args.touch_mib,
            _pad: 0,
        },
        block: BlockJob {
            // The guest looks for the first disk's interface.
            device: match args.disk.first().map(|d| d.iface) {
                Some(DiskIface::VhostUser) => BlockDevice::VirtioBlk,
                _ => BlockDevice::Nvme,
            } as u32,
            workload: args.workload as u32,
            block_size: u32::try_from(args.bs).map_err(|_| Error::BlockSize(args.bs))?,
            queue_depth: args.qd,
            ops: args.ops,
            duration_ms,
            region_bytes: args.region,
        },
        net: NetJob {
            // The guest looks for the first NIC's interface.
            device: match args.net.first().map(|n| n.iface) {
                Some(NetIface::VhostUser) => NetDevice::VirtioNet,
                _ => NetDevice::E1000,
            } as u32,
            workload: args.net_workload as u32,
            frame_bytes: args.frame,
            depth: args.qd,
            ops: args.ops,
            duration_ms,
            dst_mac: 0,
            timeout_ms: 0,
        },
        ..Job::default()
    };
    let run = bench_vm::run(BenchVmConfig {
        ram: RamConfig {
            size: args.memory,
            hugepages: args.hugepages,
        },
        image,
        job,
        timeout: args.timeout.unwrap_or(DEFAULT_BENCH_TIMEOUT),
        console,
        disks: args.disk,
        devices: args.device,
        nets: args.net,
    })
    .map_err(Error::Run)?;
    let tsc_khz = run.mailbox.job.tsc_khz.max(1) as f64;
    if args.results_json && kind == JobKind::Block as u32 {
        let b = run.mailbox.block;
        let us = |ticks: u64| ticks as f64 * 1e3 / tsc_khz;
        let secs = us(b.elapsed_ticks) / 1e6;
        let doc = serde_json::json!({
            "tsc_khz": run.mailbox.job.tsc_khz,
            "workload": args.workload.name(),
            "ops": b.ops,
            "bytes": b.bytes,
            "errors": b.errors,
            "elapsed_s": secs,
            "iops": if secs > 0.0 { b.ops as f64 / secs } else { 0.0 },
            "p50_us": b.latency.quantile(0.5).map(us),
            "p99_us": b.latency.quantile(0.99).map(us),
            "device_bytes": b.device_bytes,
            "lba_bytes": b.lba_bytes,
            "disk_exits": run.disk_exits,
            "disk_exits_measured": run.disk_exits_measured,
            "vm_exits": run.exits,
        });
        out(&serde_json::to_string_pretty(&doc).map_err(Error::Json)?)?;
    } else if args.results_json && kind == JobKind::Net as u32 {
        let n = run.mailbox.net;
        let us = |ticks: u64| ticks as f64 * 1e3 / tsc_khz;
        let secs = us(n.elapsed_ticks) / 1e6;
        let doc = serde_json::json!({
            "tsc_khz": run.mailbox.job.tsc_khz,
            "workload": args.net_workload.name(),
            "frame_bytes": args.frame,
            "sent": n.sent,
            "received": n.received,
            "bad": n.bad,
            "lost": n.lost,
            "foreign": n.foreign,
            "tx_full": n.tx_full,
            "elapsed_s": secs,
            "pps": if secs > 0.0 { n.sent as f64 / secs } else { 0.0 },
            "p50_us": n.latency.quantile(0.5).map(us),
            "p99_us": n.latency.quantile(0.99).map(us),
            "mac": format!("{:02x?}", iopath_mailbox::net::mac_from_u64(n.mac)),
            // Trapped register accesses per device (disks, passthrough functions, then NICs),
            // in all and inside the measured loop.
            "device_exits": run.disk_exits,
            "device_exits_measured": run.disk_exits_measured,
            "vm_exits": run.exits,
        });
        out(&serde_json::to_string_pretty(&doc).map_err(Error::Json)?)?;
    } else if args.results_json {
        let rows: Vec<_> = ExitKind::ALL
            .iter()
            .map(|k| {
                let s = run.mailbox.exits.kinds[*k as usize];
                serde_json::json!({
                    "kind": k.name(),
                    "iterations": s.iterations,
                    "min_ns": s.min_per_iter().map(|t| t * 1e6 / tsc_khz),
                    "median_ns": s.median_per_iter().map(|t| t * 1e6 / tsc_khz),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "tsc_khz": run.mailbox.job.tsc_khz,
            "startup_ms": run.startup.as_secs_f64() * 1e3,
            "rss_beyond_ram_kib": run.rss_beyond_ram_kib,
            "exits": rows,
            "vm_exits": run.exits,
        });
        out(&serde_json::to_string_pretty(&doc).map_err(Error::Json)?)?;
    } else {
        eprintln!(
            "iopath-vmm: guest done in {:.1} ms ({} exits to userspace, started in {:.2} ms)",
            run.guest_time.as_secs_f64() * 1e3,
            run.exits.total(),
            run.startup.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// How long the bench guest may take when no --timeout is given.
const DEFAULT_BENCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the guest console goes: `stdout`, `none`, or a file (created or truncated).
fn console(serial: &str) -> Result<Option<Box<dyn std::io::Write + Send>>, Error> {
    Ok(match serial {
        "stdout" => Some(Box::new(std::io::stdout())),
        "none" => None,
        file => Some(Box::new(
            fs::File::create(file).map_err(|e| Error::Serial(file.to_string(), e))?,
        )),
    })
}

/// Boots `kernel` and runs it until it reboots or the time-out.
fn run_linux(args: Args, kernel: PathBuf) -> Result<(), Error> {
    let run = linux_vm::run(LinuxVmConfig {
        ram: RamConfig {
            size: args.memory,
            hugepages: args.hugepages,
        },
        kernel,
        initramfs: args.initramfs,
        cmdline: args
            .cmdline
            .unwrap_or_else(|| linux_vm::DEFAULT_CMDLINE.to_string()),
        cpus: args.cpus.unwrap_or(1),
        console: console(&args.serial)?,
        disks: args.disk,
        timeout: args.timeout,
    })
    .map_err(Error::Linux)?;
    let how = match run.exit {
        linux_vm::Exit::Reset => "rebooted".to_string(),
        linux_vm::Exit::TripleFault { vcpu, rip } => {
            format!("reset by a triple fault (vCPU {vcpu}, rip {rip:#x})")
        }
    };
    eprintln!(
        "iopath-vmm: guest {how} after {:.1} s",
        run.elapsed.as_secs_f64()
    );
    Ok(())
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    Workload::from_name(s).ok_or_else(|| {
        format!("unknown workload {s:?} (expected randread, randwrite, read, write or verify)")
    })
}

fn parse_net_workload(s: &str) -> Result<NetWorkload, String> {
    NetWorkload::from_name(s)
        .ok_or_else(|| format!("unknown net workload {s:?} (expected tx or rr)"))
}

/// Prints a line to stdout; a closed pipe is an error, not a panic.
fn out(text: &str) -> Result<(), Error> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}").map_err(Error::Stdout)
}
