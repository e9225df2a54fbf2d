//! One bench-guest run: a fresh VM with the bench devices, the guest loaded with a job, run to
//! completion or time-out, results read back from the mailbox.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use iopath_mailbox::io::{
    DONE_PORT, MARK_PORT, MMIO_IOEVENTFD_GPA, MMIO_PROBE_GPA, PIO_PROBE_PORT, UART_PORT,
};
use iopath_mailbox::layout::TOUCH_GPA;
use iopath_mailbox::{error as guest_error, Job, Mailbox, Status};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN};

use backends::nvme::ControllerConfig;

use crate::boot::bench_guest;
use crate::bus::{self, Bus};
use crate::devices::done::{DonePort, DoneSignal};
use crate::devices::e1000::E1000Device;
use crate::devices::mark::MarkPort;
use crate::devices::nvme::NvmeDevice;
use crate::devices::probe::ExitProbe;
use crate::devices::serial::{ConsoleSink, IrqTrigger, Serial};
use crate::disk::{DiskBackend, DiskConfig, DiskIface};
use crate::memory::RamConfig;
use crate::net::{NetBackend, NetConfig, NetIface};
use crate::pci::{self, PciConfigIo, PciConfigMmio, PciDevice, PciRoot};
use crate::vcpu::{self, ExitCounters, ExitCounts, Vcpu, VcpuShared};
use crate::vfio::{self, DeviceConfig, Passthrough};
use crate::virtio::vhost_user_blk::VhostUserBlk;
use crate::virtio::vhost_user_net::{VhostUserNet, VhostUserNetConfig};
use crate::virtio::{VirtioDevice, VirtioPciDevice};
use crate::vm::{self, Vm};

/// COM1's interrupt line.
const COM1_GSI: u32 = 4;
/// How many lines of the guest console an error quotes.
const LOG_LINES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the VM failed")]
    Vm(#[source] vm::Error),
    #[error("creating an eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("placing a device failed")]
    Bus(#[source] bus::Error),
    #[error("the job needs {need} MiB of guest RAM, the VM has {have} MiB")]
    RamTooSmall { need: u64, have: u64 },
    #[error("loading the bench guest failed")]
    Load(#[source] bench_guest::Error),
    #[error("vCPU")]
    Vcpu(#[source] vcpu::Error),
    #[error("spawning the vCPU thread failed")]
    Spawn(#[source] std::io::Error),
    #[error("the vCPU thread panicked")]
    VcpuPanic,
    #[error("guest did not signal done within {0:?}")]
    Timeout(Duration, String),
    #[error("guest failed: {reason}{}", failed_note(.failed_devices))]
    GuestFailed {
        reason: &'static str,
        /// The guest's error code (`iopath_mailbox::error`).
        code: u32,
        log: String,
        /// Passthrough devices that failed during the run: the likely cause.
        failed_devices: Vec<vfio::DeviceFailure>,
    },
    #[error("guest stopped with status {0:#x} but left no valid mailbox")]
    BadMailbox(u32),
    #[error("opening disk {0}")]
    Disk(String, #[source] backends::engine::uring::Error),
    #[error("guest RAM")]
    Ram(#[source] crate::memory::Error),
    #[error("NVMe device")]
    Nvme(#[source] crate::devices::nvme::Error),
    #[error("PCI")]
    Pci(#[source] pci::root::Error),
    #[error("vhost-user disk")]
    VhostUser(#[source] crate::virtio::vhost_user_blk::Error),
    #[error("vhost-user NIC")]
    VhostUserNet(#[source] crate::virtio::vhost_user_net::Error),
    #[error("virtio-pci device")]
    Virtio(#[source] crate::virtio::transport::Error),
    #[error("disk {backend} cannot be reached through iface={iface}")]
    DiskIface { backend: String, iface: DiskIface },
    #[error("e1000 NIC")]
    E1000(#[source] crate::devices::e1000::Error),
    #[error("--net {backend} cannot be reached through iface={iface}")]
    NetIface { backend: String, iface: NetIface },
    // Boxed: the passthrough errors are large and rare.
    #[error(transparent)]
    Passthrough(Box<vfio::Error>),
}

impl Error {
    /// The last lines the guest printed, for errors that come from the guest.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::Timeout(_, log) | Error::GuestFailed { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// ` (DEVICE failed: REASON; ...)`, or nothing.
fn failed_note(failed: &[vfio::DeviceFailure]) -> String {
    if failed.is_empty() {
        return String::new();
    }
    let list: Vec<String> = failed.iter().map(ToString::to_string).collect();
    format!(" ({})", list.join("; "))
}

/// What to run.
pub struct BenchVmConfig {
    pub ram: RamConfig,
    /// The bench guest ELF.
    pub image: Vec<u8>,
    pub job: Job,
    pub timeout: Duration,
    /// Where the guest console goes besides the kept tail (stdout, a file, or nowhere).
    pub console: Option<Box<dyn Write + Send>>,
    /// Disks, in PCI slot order after the host bridge.
    pub disks: Vec<DiskConfig>,
    /// Passthrough PCI functions (kernel VFIO or vfio-user), in slot order after the disks.
    pub devices: Vec<DeviceConfig>,
    /// NICs, in slot order after the passthrough functions.
    pub nets: Vec<NetConfig>,
}

/// Queue depth each disk's engine accepts: the most any guest queue pair can have in flight.
const DISK_ENGINE_DEPTH: u32 = 256;

/// What a run produced.
#[derive(Debug)]
pub struct BenchRun {
    pub mailbox: Mailbox,
    pub exits: ExitCounts,
    /// From the start of `run` to the first KVM_RUN.
    pub startup: Duration,
    /// From the first KVM_RUN to the guest's done signal.
    pub guest_time: Duration,
    /// Resident memory of this process beyond guest RAM, sampled while the VM was alive (KiB).
    pub rss_beyond_ram_kib: Option<u64>,
    pub console: String,
    /// Exits taken on each disk's registers, in `disks` order, then on each passthrough
    /// device's trapped BAR ranges, in `devices` order, then on each NIC's, in `nets` order.
    pub disk_exits: Vec<u64>,
    /// The part of `disk_exits` taken inside the guest's measured loops.
    pub disk_exits_measured: Vec<u64>,
    /// Passthrough devices that failed during the run (their server died).
    pub failed_devices: Vec<vfio::DeviceFailure>,
}

pub fn run(cfg: BenchVmConfig) -> Result<BenchRun, Error> {
    let t0 = Instant::now();
    let touch = u64::from(cfg.job.exits.touch_mib) << 20;
    if touch > 0 && cfg.ram.size < TOUCH_GPA + touch {
        return Err(Error::RamTooSmall {
            need: (TOUCH_GPA + touch) >> 20,
            have: cfg.ram.size >> 20,
        });
    }
    vfio::preflight(&cfg.devices).map_err(|e| Error::Passthrough(Box::new(e)))?;
    vcpu::install_kick_handler().map_err(Error::Vcpu)?;
    let vm = Vm::new(cfg.ram).map_err(Error::Vm)?;

    let done = DoneSignal::new();
    let sink = ConsoleSink::new(cfg.console);
    let console = sink.tail();
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_irqfd(&serial_irq, COM1_GSI)
        .map_err(Error::Vm)?;
    // Writes to the ioeventfd probe never reach userspace; the eventfd just counts them.
    let probe_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_mmio_ioevent(&probe_evt, MMIO_IOEVENTFD_GPA)
        .map_err(Error::Vm)?;

    let pio = Bus::new();
    let mmio = Bus::new();
    pio.insert(
        Arc::new(Mutex::new(Serial::new(IrqTrigger(serial_irq), sink))),
        UART_PORT as u64,
        8,
    )
    .map_err(Error::Bus)?;
    pio.insert(
        Arc::new(Mutex::new(DonePort::new(done.clone()))),
        DONE_PORT as u64,
        4,
    )
    .map_err(Error::Bus)?;
    pio.insert(
        Arc::new(Mutex::new(ExitProbe::new())),
        PIO_PROBE_PORT as u64,
        4,
    )
    .map_err(Error::Bus)?;
    // Reads of the ioeventfd page still exit; the probe answers them.
    mmio.insert(
        Arc::new(Mutex::new(ExitProbe::new())),
        MMIO_PROBE_GPA,
        0x2000,
    )
    .map_err(Error::Bus)?;

    let _clear_buses = bus::ClearOnDrop(vec![pio.clone(), mmio.clone()]);
    let root = pci_root(&pio, &mmio)?;
    let mut disk_counters = add_disks(&vm, &root, &cfg.disks)?;
    // Declared after `vm`, so dropped before it: tears the devices down (DMA maps, slots,
    // connections) on every way out of this function.
    let passthrough = Passthrough::attach(&vm, &root, &cfg.devices)
        .map_err(|e| Error::Passthrough(Box::new(e)))?;
    disk_counters.extend(passthrough.exit_counters());
    disk_counters.extend(add_nets(&vm, &root, &cfg.nets)?);
    let (mark, marked_exits) = MarkPort::new(disk_counters.clone());
    pio.insert(Arc::new(Mutex::new(mark)), u64::from(MARK_PORT), 4)
        .map_err(Error::Bus)?;

    let shared = VcpuShared {
        pio,
        mmio,
        counters: Arc::new(ExitCounters::default()),
        done: done.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        entered: Arc::new(OnceLock::new()),
    };
    let vcpu = Vcpu::new(&vm, 0, shared.clone()).map_err(Error::Vcpu)?;
    let mut job = cfg.job;
    job.tsc_khz = vcpu.tsc_khz().map_or(0, u64::from);
    let entry = bench_guest::load(
        vm.ram().memory(),
        vm.ram().size(),
        &cfg.image,
        &Mailbox::new(job),
    )
    .map_err(Error::Load)?;
    vcpu.enter_bench_guest(entry).map_err(Error::Vcpu)?;

    let handle = thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || vcpu.run())
        .map_err(Error::Spawn)?;
    // The vCPU thread returns on done, on a guest failure, or when stopped: wait for whichever
    // comes first, without letting a guest that never signals hang us.
    let status = wait_for_guest(&done, &handle, cfg.timeout);
    let rss_beyond_ram_kib = rss_beyond_shared_memory();
    shared.stop.store(true, Ordering::Release);
    while !handle.is_finished() {
        // A polling guest never exits on its own: interrupt KVM_RUN until the thread sees `stop`.
        let _ = handle.kill(SIGRTMIN());
        thread::sleep(Duration::from_millis(1));
    }
    let vcpu_result = handle.join().map_err(|_| Error::VcpuPanic)?;
    let log = || console.last_lines(LOG_LINES);
    let entered = shared.entered.get().copied();
    if let Err(e) = vcpu_result {
        return Err(Error::Vcpu(e));
    }
    let Some(status) = status else {
        return Err(Error::Timeout(cfg.timeout, log()));
    };
    let mailbox = bench_guest::read_mailbox(vm.ram().memory()).map_err(Error::Load)?;
    if !mailbox.is_valid() {
        return Err(Error::BadMailbox(status));
    }
    if Status::from_raw(mailbox.status) != Some(Status::Done) {
        return Err(Error::GuestFailed {
            reason: guest_error::describe(mailbox.error),
            code: mailbox.error,
            log: log(),
            failed_devices: passthrough.failures(),
        });
    }
    let done_at = Instant::now();
    let entered = entered.unwrap_or(done_at);
    Ok(BenchRun {
        mailbox,
        exits: shared.counters.snapshot(),
        startup: entered.duration_since(t0),
        guest_time: done_at.duration_since(entered),
        rss_beyond_ram_kib,
        console: console.text(),
        disk_exits_measured: marked_exits.get(),
        failed_devices: passthrough.failures(),
        disk_exits: disk_counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect(),
    })
}

/// Puts a PCI root on the buses and a device per disk behind it; returns each disk's exit
/// counter.
pub(crate) fn attach_disks(
    vm: &Vm,
    disks: &[DiskConfig],
    pio: &Bus,
    mmio: &Bus,
) -> Result<Vec<Arc<std::sync::atomic::AtomicU64>>, Error> {
    let root = pci_root(pio, mmio)?;
    add_disks(vm, &root, disks)
}

/// A PCI root reachable through CF8/CFC and ECAM.
fn pci_root(pio: &Bus, mmio: &Bus) -> Result<Arc<Mutex<PciRoot>>, Error> {
    let root = Arc::new(Mutex::new(PciRoot::new(mmio.clone(), pio.clone())));
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        pci::CONFIG_IO_PORT,
        8,
    )
    .map_err(Error::Bus)?;
    mmio.insert(
        Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
        pci::ECAM_BASE,
        pci::ECAM_SIZE,
    )
    .map_err(Error::Bus)?;
    Ok(root)
}

/// A device per disk behind `root`; returns each disk's exit counter.
fn add_disks(
    vm: &Vm,
    root: &Mutex<PciRoot>,
    disks: &[DiskConfig],
) -> Result<Vec<Arc<std::sync::atomic::AtomicU64>>, Error> {
    if disks.is_empty() {
        return Ok(Vec::new());
    }
    let dma = Arc::new(vm.ram().dma_space().map_err(Error::Ram)?);
    let mut counters = Vec::new();
    for disk in disks {
        let dev: Arc<Mutex<dyn PciDevice>> = match (&disk.backend, disk.iface) {
            (DiskBackend::Engine(spec), DiskIface::Nvme) => {
                let engine = spec
                    .open(DISK_ENGINE_DEPTH)
                    .map_err(|e| Error::Disk(spec.to_string(), e))?;
                let dev = NvmeDevice::new(
                    ControllerConfig::default(),
                    engine,
                    dma.clone(),
                    vm.msi_sink(),
                )
                .map_err(Error::Nvme)?;
                counters.push(dev.exit_counter());
                Arc::new(Mutex::new(dev))
            }
            (DiskBackend::VhostUser(cfg), DiskIface::VhostUser) => {
                let blk = VhostUserBlk::connect(cfg, vm.ram().memory().clone())
                    .map_err(Error::VhostUser)?;
                let dev = virtio_pci(vm, Box::new(blk))?;
                counters.push(dev.exit_counter());
                Arc::new(Mutex::new(dev))
            }
            (backend, iface) => {
                return Err(Error::DiskIface {
                    backend: backend.to_string(),
                    iface,
                })
            }
        };
        plug(root, dev)?;
    }
    Ok(counters)
}

/// A device per NIC behind `root`; returns each NIC's exit counter.
fn add_nets(
    vm: &Vm,
    root: &Mutex<PciRoot>,
    nets: &[NetConfig],
) -> Result<Vec<Arc<std::sync::atomic::AtomicU64>>, Error> {
    let mut counters = Vec::new();
    for net in nets {
        let dev: Arc<Mutex<dyn PciDevice>> = match (&net.backend, net.iface) {
            (NetBackend::Tap(_) | NetBackend::Reflect, NetIface::E1000) => {
                let dev = E1000Device::attach(net, vm).map_err(Error::E1000)?;
                counters.push(dev.exit_counter());
                Arc::new(Mutex::new(dev))
            }
            (
                NetBackend::VhostUser {
                    socket,
                    queue_pairs,
                    queue_size,
                },
                NetIface::VhostUser,
            ) => {
                let cfg = VhostUserNetConfig {
                    socket: socket.clone(),
                    queue_pairs: *queue_pairs,
                    queue_size: *queue_size,
                    mac: net.mac,
                };
                let nic = VhostUserNet::connect(&cfg, vm.ram().memory().clone())
                    .map_err(Error::VhostUserNet)?;
                let dev = virtio_pci(vm, Box::new(nic))?;
                counters.push(dev.exit_counter());
                Arc::new(Mutex::new(dev))
            }
            (backend, iface) => {
                return Err(Error::NetIface {
                    backend: backend.to_string(),
                    iface,
                })
            }
        };
        plug(root, dev)?;
    }
    Ok(counters)
}

/// `device` on a virtio PCI transport wired to the VM's ioevents and MSIs.
fn virtio_pci(vm: &Vm, device: Box<dyn VirtioDevice>) -> Result<VirtioPciDevice, Error> {
    VirtioPciDevice::new(device, vm.ioevent_registrar(), vm.msi_sink()).map_err(Error::Virtio)
}

/// Puts `dev` behind `root`.
fn plug(root: &Mutex<PciRoot>, dev: Arc<Mutex<dyn PciDevice>>) -> Result<(), Error> {
    root.lock()
        .unwrap_or_else(|e| e.into_inner())
        .add_device(dev)
        .map_err(Error::Pci)?;
    Ok(())
}

/// Waits for the done signal, returning early if the vCPU thread ends first (a guest fault).
fn wait_for_guest<T>(
    done: &DoneSignal,
    handle: &thread::JoinHandle<T>,
    timeout: Duration,
) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return done.get();
        }
        if let Some(s) = done.wait((deadline - now).min(Duration::from_millis(50))) {
            return Some(s);
        }
        if handle.is_finished() {
            return done.get();
        }
    }
}

/// VmRSS less RssShmem: guest RAM is a shared memfd, so what remains is the VMM's own memory.
fn rss_beyond_shared_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(kib("VmRSS:")?.saturating_sub(kib("RssShmem:")?))
}
