//! Passthrough PCI devices: one device model ([`VfioPciDevice`]) over two transports behind
//! [`transport::Transport`]: kernel VFIO ([`kernel`], `--device vfio=BDF`, lab servers) and
//! vfio-user ([`user`], `--device vfio-user=SOCKET`, any host).
//!
//! The guest sees a PCI function with the device's identity, BARs placed by our PCI root and
//! an MSI-X capability the VMM emulates ([`shadow`]). Mmappable BAR pieces are mapped straight
//! into the guest as KVM memory slots ([`plan`], [`maps`], [`slots`]), so a store to the
//! vfio-user NVMe server's doorbell page never exits; other BAR bytes are trapped and
//! forwarded. Guest RAM is mapped for the device's DMA at start (IOVA = GPA) and unmapped at
//! teardown. A device whose server dies is marked failed and reads as removed ([`health`]);
//! the VM keeps running.

pub mod config;
pub mod device;
pub mod health;
pub mod irq;
pub mod kernel;
pub mod maps;
pub mod plan;
pub mod shadow;
pub mod slots;
pub mod transport;
pub mod user;

#[cfg(test)]
mod testing;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub use config::DeviceConfig;
pub use device::VfioPciDevice;
pub use health::DeviceFailure;

use self::health::HangupWatch;
use self::transport::Transport;
use crate::lock;
use crate::pci::{self, PciRoot};
use crate::vm::Vm;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--device {0}")]
    Unavailable(String, #[source] kernel::Error),
    #[error("--device {0}")]
    Open(String, #[source] transport::Error),
    #[error("--device {0}")]
    Device(String, #[source] device::Error),
    #[error("--device {0}")]
    Pci(String, #[source] pci::root::Error),
    #[error("--device {0}: watching the connection")]
    Watch(String, #[source] std::io::Error),
}

/// Fails early, before a VM is made, for devices this host cannot pass through.
pub fn preflight(configs: &[DeviceConfig]) -> Result<(), Error> {
    for cfg in configs {
        cfg.preflight()
            .map_err(|e| Error::Unavailable(cfg.to_string(), e))?;
    }
    Ok(())
}

fn open(cfg: &DeviceConfig, vm: &Vm) -> Result<Box<dyn Transport>, transport::Error> {
    Ok(match cfg {
        DeviceConfig::Vfio { sysfs } => Box::new(kernel::KernelVfio::open(sysfs, vm.fd())?),
        DeviceConfig::VfioUser { socket } => Box::new(user::VfioUser::connect(socket)?),
    })
}

/// The passthrough devices of one VM. Dropping it tears every device down (slots, DMA maps,
/// interrupts, connections) even though the PCI root, which the buses keep alive, still
/// holds them.
pub struct Passthrough {
    devices: Vec<Arc<Mutex<VfioPciDevice>>>,
    /// Stopped before the devices are shut down: a watch may be waiting for a device's lock.
    watches: Vec<HangupWatch>,
}

impl Passthrough {
    /// Opens each device and puts it behind `root`, in order.
    pub fn attach(
        vm: &Vm,
        root: &Mutex<PciRoot>,
        configs: &[DeviceConfig],
    ) -> Result<Passthrough, Error> {
        let mut attached = Passthrough {
            devices: Vec::new(),
            watches: Vec::new(),
        };
        for cfg in configs {
            let name = cfg.to_string();
            let t = open(cfg, vm).map_err(|e| Error::Open(name.clone(), e))?;
            let res = device::Resources {
                slots: vm.memory_slots(),
                msi: vm.msi_sink(),
                ram: vm.ram().memory().clone(),
            };
            let dev = VfioPciDevice::new(name.clone(), t, res)
                .map_err(|e| Error::Device(name.clone(), e))?;
            let dev = Arc::new(Mutex::new(dev));
            attached.devices.push(dev.clone());
            if let Some(w) = watch(&dev).map_err(|e| Error::Watch(name.clone(), e))? {
                attached.watches.push(w);
            }
            root.lock()
                .unwrap_or_else(|e| e.into_inner())
                .add_device(dev)
                .map_err(|e| Error::Pci(name, e))?;
        }
        Ok(attached)
    }

    /// Each device's trapped-access counter, in attach order.
    pub fn exit_counters(&self) -> Vec<Arc<AtomicU64>> {
        self.devices
            .iter()
            .map(|d| lock(d).exit_counter())
            .collect()
    }

    /// The devices that failed while the VM ran (their server died), in attach order.
    pub fn failures(&self) -> Vec<DeviceFailure> {
        self.devices
            .iter()
            .filter_map(|d| lock(d).health().failure().cloned())
            .collect()
    }

    /// The devices, in attach order.
    pub fn devices(&self) -> &[Arc<Mutex<VfioPciDevice>>] {
        &self.devices
    }
}

/// Fails `dev` when its transport's connection hangs up, if it has one to watch.
fn watch(dev: &Arc<Mutex<VfioPciDevice>>) -> std::io::Result<Option<HangupWatch>> {
    let d = lock(dev);
    let Some(fd) = d.hangup_fd() else {
        return Ok(None);
    };
    let health = d.health();
    let weak = Arc::downgrade(dev);
    let w = HangupWatch::spawn(d.name(), fd, move || {
        const REASON: &str = "the server hung up";
        // Recorded first: the vCPU may hold the device's lock for a while.
        health.fail(REASON);
        if let Some(dev) = weak.upgrade() {
            lock(&dev).fail(REASON);
        }
    })?;
    Ok(Some(w))
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        self.watches.clear();
        for d in &self.devices {
            lock(d).shutdown();
        }
    }
}
