//! Paths that run the bench guest in our VMM: **emulated** (the guest's polled NVMe driver
//! against the VMM's NVMe model, every doorbell a trapped MMIO exit) and **virtio** (the
//! guest's polled virtio-blk driver; the VMM is a vhost-user frontend, notifies are ioeventfds
//! and a backend process does the I/O).

use std::path::PathBuf;
use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_mailbox::BlockDevice;
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::disk::{DiskBackend, DiskConfig, DiskIface};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;
use vmm::vfio::DeviceConfig;
use vmm::virtio::vhost_user_blk::{VhostUserBlkConfig, DEFAULT_QUEUE_SIZE};

use super::sample::Sample;
use super::vhost_backend::{self, BackendProcess, BackendProgram};
use super::work::BlockWork;
use crate::cpu;

/// Set-up and tear-down time allowed on top of the run time.
const GRACE: Duration = Duration::from_secs(120);

/// How the guest reaches the disk.
#[derive(Clone, Debug)]
pub enum GuestDisk {
    /// Emulated NVMe over the VMM's own engine.
    Nvme(BackendSpec),
    /// virtio-blk, served by a vhost-user-blk backend process started for the run.
    VhostUser(BackendProgram, BackendSpec),
    /// Passthrough over vfio-user: our NVMe server process, started for the run; guest RAM
    /// is mapped for its DMA and its doorbell page is mapped into the guest.
    VfioUser(BackendSpec),
}

#[derive(Clone, Debug)]
pub struct GuestVmJob {
    pub disk: GuestDisk,
    pub work: BlockWork,
    /// Guest RAM.
    pub memory: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bench guest run failed")]
    Run(#[source] bench_vm::Error),
    #[error("KVM did not report the TSC frequency; cannot convert ticks to time")]
    NoTsc,
    #[error("the vhost-user-blk backend")]
    Backend(#[source] vhost_backend::Error),
}

impl Error {
    /// The guest's last console lines, if the guest ran.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::Run(e) => e.console_tail(),
            _ => None,
        }
    }
}

pub fn run(job: &GuestVmJob) -> Result<Sample, Error> {
    // Started before the VM and dropped after it: the VMM connects at start.
    let backend = match &job.disk {
        GuestDisk::VhostUser(program, spec) => {
            Some(BackendProcess::start(program, spec).map_err(Error::Backend)?)
        }
        GuestDisk::VfioUser(spec) => Some(
            BackendProcess::start(&BackendProgram::VfioUserNvme, spec).map_err(Error::Backend)?,
        ),
        GuestDisk::Nvme(_) => None,
    };
    let socket = backend.as_ref().map(|b| PathBuf::from(b.socket()));
    let (device, disks, devices) = match (&job.disk, socket) {
        (GuestDisk::VhostUser(..), Some(socket)) => (
            BlockDevice::VirtioBlk,
            vec![DiskConfig {
                backend: DiskBackend::VhostUser(VhostUserBlkConfig {
                    socket,
                    queues: 1,
                    queue_size: DEFAULT_QUEUE_SIZE,
                }),
                iface: DiskIface::VhostUser,
            }],
            Vec::new(),
        ),
        // The guest's NVMe driver finds the passed-through controller by its class.
        (GuestDisk::VfioUser(_), Some(socket)) => (
            BlockDevice::Nvme,
            Vec::new(),
            vec![DeviceConfig::VfioUser { socket }],
        ),
        (GuestDisk::Nvme(spec) | GuestDisk::VhostUser(_, spec) | GuestDisk::VfioUser(spec), _) => (
            BlockDevice::Nvme,
            vec![DiskConfig {
                backend: DiskBackend::Engine(spec.clone()),
                iface: DiskIface::Nvme,
            }],
            Vec::new(),
        ),
    };
    let guest_job = job.work.guest_job(device);
    let config = BenchVmConfig {
        ram: RamConfig {
            size: job.memory,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job: guest_job,
        timeout: job.work.duration + GRACE,
        console: None,
        disks,
        devices,
        nets: Vec::new(),
    };
    let (run, processes) = cpu::measured_vm_run(config, backend.as_ref()).map_err(Error::Run)?;
    drop(backend);
    let khz = run.mailbox.job.tsc_khz;
    if khz == 0 {
        return Err(Error::NoTsc);
    }
    Ok(Sample::from_guest(
        &run.mailbox.block,
        khz,
        run.disk_exits_measured.first().copied(),
        processes,
    ))
}
