//! Paths that run the bench guest in our VMM: **emulated** (the guest's polled e1000 driver
//! against the VMM's e1000 model, every register access an exit) and **virtio** (the guest's
//! polled virtio-net driver; the VMM is a vhost-user frontend and a backend process moves the
//! frames: our daemon, or DPDK testpmd as a peer).

use std::path::PathBuf;
use std::time::Duration;

use iopath_mailbox::net::NetDevice;
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;
use vmm::net::{NetBackend, NetConfig, NetIface, DEFAULT_QUEUE_SIZE};

use super::far::{self, FarSide};
use super::testpmd;
use super::vhost_net::{self, DaemonMode};
use super::{NetSample, NetWork};
use crate::block::vhost_backend;
use crate::cpu;

/// Set-up and tear-down time allowed on top of the run time.
const GRACE: Duration = Duration::from_secs(120);

/// How the guest reaches the network.
#[derive(Clone, Debug)]
pub enum GuestNic {
    /// The VMM's e1000, on the far side's TAP or the VMM's own reflect.
    E1000,
    /// virtio-net served by our vhost-user-net daemon (`bin`: another build of it), polling
    /// `poll_us` after work.
    VhostUser { bin: Option<PathBuf>, poll_us: u64 },
    /// virtio-net served by DPDK testpmd (net_vhost, macswap).
    Testpmd,
}

#[derive(Clone, Debug)]
pub struct GuestVmJob {
    pub nic: GuestNic,
    pub work: NetWork,
    /// Guest RAM.
    pub memory: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bench guest run failed")]
    Run(#[source] bench_vm::Error),
    #[error("KVM did not report the TSC frequency; cannot convert ticks to time")]
    NoTsc,
    #[error("the vhost-user-net backend")]
    Backend(#[source] vhost_backend::Error),
    #[error("the far end")]
    Far(#[source] far::Error),
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

pub fn run(job: &GuestVmJob, far: &FarSide) -> Result<NetSample, Error> {
    // The backend and the VM start inside the far side's namespace, if it has one: that is
    // where the TAP device is found by name.
    far.run_in(|| run_here(job, far.tap()))
        .map_err(Error::Far)?
}

fn run_here(job: &GuestVmJob, tap: Option<&str>) -> Result<NetSample, Error> {
    // Started before the VM and dropped after it: the VMM connects at start.
    let backend = match &job.nic {
        GuestNic::E1000 => None,
        GuestNic::VhostUser { bin, poll_us } => {
            let mode = tap.map_or(DaemonMode::Reflect, |t| DaemonMode::Tap(t.into()));
            Some(vhost_net::start(bin.as_deref(), &mode, *poll_us).map_err(Error::Backend)?)
        }
        GuestNic::Testpmd => Some(testpmd::start_backend().map_err(Error::Backend)?),
    };
    let (device, net) = match &backend {
        None => (
            NetDevice::E1000,
            NetConfig {
                backend: tap.map_or(NetBackend::Reflect, |t| NetBackend::Tap(t.into())),
                iface: NetIface::E1000,
                mac: None,
            },
        ),
        Some(b) => (
            NetDevice::VirtioNet,
            NetConfig {
                backend: NetBackend::VhostUser {
                    socket: b.socket().to_path_buf(),
                    queue_pairs: 1,
                    queue_size: DEFAULT_QUEUE_SIZE,
                },
                iface: NetIface::VhostUser,
                mac: None,
            },
        ),
    };
    let config = BenchVmConfig {
        ram: RamConfig {
            size: job.memory,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job: job.work.guest_job(device),
        timeout: job.work.duration + GRACE,
        console: None,
        disks: Vec::new(),
        devices: Vec::new(),
        nets: vec![net],
    };
    let (run, processes) = cpu::measured_vm_run(config, backend.as_ref()).map_err(Error::Run)?;
    drop(backend);
    let khz = run.mailbox.job.tsc_khz;
    if khz == 0 {
        return Err(Error::NoTsc);
    }
    Ok(NetSample::from_results(
        &run.mailbox.net,
        job.work.workload,
        khz as f64 / 1000.0,
        run.disk_exits_measured.first().copied(),
        processes,
    ))
}
