//! The KVM VM: in-kernel irqchip, guest RAM slots, ioeventfds and irqfds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::{self, GuestRam, RamConfig};
use crate::pci::msix::{MsiMessage, MsiSink};
use crate::vfio::slots::{self, MemorySlots, SlotAllocator};
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
    /// Slots added at run time (passthrough BARs), numbered after RAM's.
    slots: Arc<KvmSlots>,
}

/// Slot numbers KVM accepts in address space 0.
const MAX_SLOT: u32 = 0x7fff;

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
        let fd = Arc::new(fd);
        let first = ram.memory().num_regions() as u32;
        let limit = u32::try_from(kvm.get_nr_memslots())
            .unwrap_or(MAX_SLOT)
            .min(MAX_SLOT);
        let slots = Arc::new(KvmSlots {
            fd: fd.clone(),
            state: Mutex::new(SlotState {
                alloc: SlotAllocator::new(first, limit),
                live: HashMap::new(),
            }),
        });
        Ok(Vm {
            kvm,
            fd,
            ram,
            slots,
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

    /// Maps host memory into the guest while the VM runs, in slots that never collide with
    /// guest RAM's.
    pub fn memory_slots(&self) -> Arc<dyn MemorySlots> {
        self.slots.clone()
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

/// Run-time memory slots.
struct KvmSlots {
    fd: Arc<VmFd>,
    state: Mutex<SlotState>,
}

struct SlotState {
    alloc: SlotAllocator,
    /// Each live slot's guest and host address.
    live: HashMap<u32, (u64, u64)>,
}

impl KvmSlots {
    fn set(&self, slot: u32, gpa: u64, len: u64, host: u64) -> Result<(), kvm_ioctls::Error> {
        let desc = kvm_bindings::kvm_userspace_memory_region {
            slot,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: host,
            flags: 0,
        };
        // SAFETY: adding: the caller of `MemorySlots::add` keeps `host..host+len` mapped until
        // the slot is removed; removing (len 0) makes KVM drop its use of the memory.
        unsafe { self.fd.set_user_memory_region(desc) }
    }
}

impl MemorySlots for KvmSlots {
    unsafe fn add(&self, gpa: u64, len: u64, host: *mut u8) -> Result<u32, slots::Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = state.alloc.alloc()?;
        if let Err(source) = self.set(slot, gpa, len, host as u64) {
            let _ = state.alloc.free(slot);
            return Err(slots::Error::Add {
                slot,
                gpa,
                len,
                source,
            });
        }
        state.live.insert(slot, (gpa, host as u64));
        Ok(slot)
    }

    fn remove(&self, slot: u32) -> Result<(), slots::Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (gpa, host) = *state.live.get(&slot).ok_or(slots::Error::Unknown(slot))?;
        self.set(slot, gpa, 0, host)
            .map_err(|source| slots::Error::Remove { slot, source })?;
        state.live.remove(&slot);
        state.alloc.free(slot)
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
