//! The KVM VM: in-kernel irqchip, guest RAM slots, ioeventfds and irqfds.

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::{self, GuestRam, RamConfig};
use crate::pci::msix::{MsiMessage, MsiSink};
use crate::virtio::IoEventRegistrar;

/// Where KVM may put the three pages Intel's real-mode emulation needs: just below the BIOS.
const TSS_ADDRESS: usize = 0xfffb_d000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    #[error("creating the VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("setting the TSS address failed")]
    TssAddress(#[source] kvm_ioctls::Error),
    #[error("creating the in-kernel irqchip failed")]
    IrqChip(#[source] kvm_ioctls::Error),
    #[error("guest RAM")]
    Ram(#[source] memory::Error),
    #[error("registering guest RAM slot {0} failed")]
    MemorySlot(u32, #[source] kvm_ioctls::Error),
    #[error("registering an ioeventfd at {0:?} failed")]
    IoEvent(IoEventAddress, #[source] kvm_ioctls::Error),
    #[error("registering an irqfd for GSI {0} failed")]
    Irqfd(u32, #[source] kvm_ioctls::Error),
}

pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    ram: GuestRam,
}

impl Vm {
    pub fn new(ram: RamConfig) -> Result<Vm, Error> {
        let kvm = Kvm::new().map_err(Error::OpenKvm)?;
        let api = kvm.get_api_version();
        if api != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(Error::ApiVersion(api));
        }
        let fd = kvm.create_vm().map_err(Error::CreateVm)?;
        fd.set_tss_address(TSS_ADDRESS).map_err(Error::TssAddress)?;
        fd.create_irq_chip().map_err(Error::IrqChip)?;
        let ram = GuestRam::new(ram).map_err(Error::Ram)?;
        for (slot, region) in ram.memory().iter().enumerate() {
            let slot = slot as u32;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| Error::MemorySlot(slot, kvm_ioctls::Error::new(libc::EFAULT)))?;
            let desc = kvm_bindings::kvm_userspace_memory_region {
                slot,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping owned by `ram`. Guest accesses only happen
            // while a vCPU runs, and vCPUs (which borrow `Vm`) are gone before `ram` is
            // dropped; clones of the fd kept by MSI sinks only signal interrupts.
            unsafe { fd.set_user_memory_region(desc) }.map_err(|e| Error::MemorySlot(slot, e))?;
        }
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
            ram,
        })
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Delivers device MSIs through KVM_SIGNAL_MSI.
    pub fn msi_sink(&self) -> Arc<dyn MsiSink> {
        Arc::new(KvmMsi(self.fd.clone()))
    }

    /// Writes to `gpa` signal `evt` inside KVM instead of exiting to userspace.
    pub fn register_mmio_ioevent(&self, evt: &EventFd, gpa: u64) -> Result<(), Error> {
        let addr = IoEventAddress::Mmio(gpa);
        self.fd
            .register_ioevent(evt, &addr, NoDatamatch)
            .map_err(|e| Error::IoEvent(addr, e))
    }

    /// Registers and removes MMIO ioeventfds while the VM runs (notify addresses that follow a
    /// BAR the guest may move).
    pub fn ioevent_registrar(&self) -> Arc<dyn IoEventRegistrar> {
        Arc::new(KvmIoEvents(self.fd.clone()))
    }

    /// Signalling `evt` raises `gsi` on the in-kernel irqchip.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), Error> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|e| Error::Irqfd(gsi, e))
    }
}

struct KvmIoEvents(Arc<VmFd>);

impl IoEventRegistrar for KvmIoEvents {
    fn register(&self, evt: &EventFd, gpa: u64) -> Result<(), kvm_ioctls::Error> {
        self.0
            .register_ioevent(evt, &IoEventAddress::Mmio(gpa), NoDatamatch)
    }

    fn unregister(&self, evt: &EventFd, gpa: u64) -> Result<(), kvm_ioctls::Error> {
        self.0
            .unregister_ioevent(evt, &IoEventAddress::Mmio(gpa), NoDatamatch)
    }
}

struct KvmMsi(Arc<VmFd>);

impl MsiSink for KvmMsi {
    fn signal(&self, msg: MsiMessage) {
        let msi = kvm_bindings::kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        // A guest that programmed a bogus address loses that interrupt, nothing else.
        if let Err(e) = self.0.signal_msi(msi) {
            log::debug!("KVM_SIGNAL_MSI {msg:?}: {e}");
        }
    }
}
