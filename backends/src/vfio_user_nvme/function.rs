//! The NVMe controller as a vfio-user PCI function: the `ServerBackend` the vfio_user crate's
//! `Server` calls for every message of one client.
//!
//! Registers (BAR0 below 0x1000) go through region read/write messages to the controller;
//! doorbells are the shared page the poller watches; DMA_MAP / DMA_UNMAP rebuild the
//! controller's address space (IOVA = what the client calls the address: the guest physical
//! address).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use iommu::{AddressSpace, FdRegion, Perm, RemoteDma, RemoteDmaError};
use log::debug;
use vfio_bindings::bindings::vfio::VFIO_PCI_MSIX_IRQ_INDEX;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion};

use super::config_space::ConfigSpace;
use super::doorbells::{self, DoorbellPage, MAX_PAIRS};
use super::msix::{self, MsixBar, Vectors};
use super::poller::{self, PollTuning, Poller, Shared};
use super::regions::{self, BAR0, BAR4, CONFIG};
use crate::engine::BlockEngine;
use crate::nvme::{Controller, ControllerConfig, CC, DOORBELL_BASE};

/// DMA windows a client may map unless told otherwise: guest RAM is one or two windows (below
/// and above the 32-bit hole) for our VMM, a few more for others.
pub const DEFAULT_MAX_DMA_REGIONS: usize = 64;

/// MSI-X vectors whose table entries fit below the PBA.
const MAX_VECTORS: u16 = (msix::PBA_OFFSET / 16) as u16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the doorbell page")]
    Doorbells(#[source] doorbells::Error),
    #[error("cannot start the doorbell poller")]
    Poller(#[source] poller::Error),
    #[error("region {region} has no {len} bytes at {offset:#x}")]
    OutOfRange {
        region: u32,
        offset: u64,
        len: usize,
    },
    #[error("DMA_MAP without a file descriptor: message-based DMA is not supported")]
    NoFd,
    #[error("DMA_MAP failed")]
    Map(#[source] RemoteDmaError),
    #[error("DMA_MAP refused: {0} windows are mapped, the limit (--max-dma-regions)")]
    DmaRegions(usize),
    #[error("DMA_UNMAP failed")]
    Unmap(#[source] RemoteDmaError),
    #[error("DMA_UNMAP flags {0:#x} are not supported (dirty page tracking)")]
    UnmapFlags(u32),
    #[error("SET_IRQS on interrupt index {0}: only MSI-X has vectors")]
    IrqIndex(u32),
    #[error("SET_IRQS failed")]
    Irqs(#[source] msix::Error),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

pub struct NvmeFunction {
    // Declared first so it stops before the rest is dropped.
    _poller: Poller,
    shared: Arc<Shared>,
    config: ConfigSpace,
    msix_bar: MsixBar,
    vectors: Arc<Vectors>,
    vector_count: u16,
    dma: RemoteDma,
    max_dma_regions: usize,
}

impl NvmeFunction {
    /// A controller over `engine`, with no memory mapped, and its poller running. The
    /// configuration is clamped to what the function can offer: at most 511 I/O queues (their
    /// doorbells fill the shared page) and 256 MSI-X vectors.
    pub fn new(
        cfg: ControllerConfig,
        engine: Box<dyn BlockEngine>,
        tuning: PollTuning,
    ) -> Result<Self, Error> {
        let vector_count = cfg.interrupt_vectors.clamp(1, MAX_VECTORS);
        let cfg = ControllerConfig {
            max_io_queues: cfg.max_io_queues.clamp(1, MAX_PAIRS as u16 - 1),
            interrupt_vectors: vector_count,
            ..cfg
        };
        let doorbells =
            DoorbellPage::new(usize::from(cfg.max_io_queues) + 1).map_err(Error::Doorbells)?;
        let mut ctrl = Controller::new(cfg, engine, Arc::new(AddressSpace::new()));
        let vectors = Arc::new(Vectors::new(vector_count));
        let hook = vectors.clone();
        ctrl.set_interrupt(Box::new(move |vector| hook.trigger(vector)));
        let completion_fd = ctrl.completion_fd();
        let shared = Arc::new(Shared {
            ctrl: Mutex::new(ctrl),
            doorbells,
        });
        let poller = Poller::spawn(shared.clone(), completion_fd, tuning).map_err(Error::Poller)?;
        Ok(NvmeFunction {
            _poller: poller,
            shared,
            config: ConfigSpace::new(Controller::BAR0_SIZE, vector_count),
            msix_bar: MsixBar::new(vector_count),
            vectors,
            vector_count,
            dma: RemoteDma::new(),
            max_dma_regions: DEFAULT_MAX_DMA_REGIONS,
        })
    }

    /// DMA windows a client may have mapped at once (at least 1).
    pub fn set_max_dma_regions(&mut self, max: usize) {
        self.max_dma_regions = max.max(1);
    }

    /// The regions to advertise (the doorbell memfd stays owned by the function).
    pub fn regions(&self) -> Vec<ServerRegion> {
        regions::regions(self.shared.doorbells.fd())
    }

    pub fn irqs(&self) -> Vec<IrqInfo> {
        regions::irqs(self.vector_count)
    }

    pub fn controller(&self) -> &Mutex<Controller> {
        &self.shared.ctrl
    }

    /// The client went away: reset the function and forget its memory, ready for the next.
    pub fn disconnect(&mut self) {
        self.reset_function();
        self.dma.unmap_all();
        self.shared
            .lock()
            .set_address_space(Arc::new(AddressSpace::new()));
        self.config = ConfigSpace::new(Controller::BAR0_SIZE, self.vector_count);
    }

    /// Controller reset (CC.EN = 0: in-flight I/O is drained, queues deleted), a clean
    /// doorbell page, no interrupt eventfds, a masked MSI-X table. DMA mappings belong to the
    /// client's IOMMU view, not the device, and stay.
    fn reset_function(&mut self) {
        {
            let mut ctrl = self.shared.lock();
            ctrl.bar_write(CC, &0u32.to_le_bytes());
            self.shared.doorbells.clear();
        }
        self.vectors.clear();
        self.msix_bar = MsixBar::new(self.vector_count);
    }

    fn out_of_range(region: u32, offset: u64, len: usize) -> io::Error {
        Error::OutOfRange {
            region,
            offset,
            len,
        }
        .into()
    }

    fn bar0_range(offset: u64, len: usize) -> Result<(), io::Error> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= Controller::BAR0_SIZE => Ok(()),
            _ => Err(Self::out_of_range(BAR0, offset, len)),
        }
    }

    fn bar0_write(&self, offset: u64, data: &[u8]) {
        let page = &self.shared.doorbells;
        if let (Some(slot), Ok(value)) = (page.slot_of(offset), <[u8; 4]>::try_from(data)) {
            // Written through a message rather than the mapping: same effect, the poller
            // picks it up.
            page.store(slot, u32::from_le_bytes(value));
            return;
        }
        let mut ctrl = self.shared.lock();
        let was_enabled = enabled(&mut ctrl);
        ctrl.bar_write(offset, data);
        if enabled(&mut ctrl) != was_enabled {
            // New (or no) admin queues: they start at 0, so must the slots the poller
            // compares against.
            page.clear();
        }
    }
}

fn enabled(ctrl: &mut Controller) -> bool {
    let mut cc = [0u8; 4];
    ctrl.bar_read(CC, &mut cc);
    u32::from_le_bytes(cc) & 1 != 0
}

impl ServerBackend for NvmeFunction {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let len = data.len();
        let ok = match region {
            CONFIG => self.config.read(offset, data),
            BAR0 => {
                Self::bar0_range(offset, len)?;
                if offset >= DOORBELL_BASE {
                    data.fill(0);
                } else {
                    self.shared.lock().bar_read(offset, data);
                }
                true
            }
            BAR4 => self.msix_bar.read(offset, data),
            _ => false,
        };
        match ok {
            true => Ok(()),
            false => Err(Self::out_of_range(region, offset, len)),
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let ok = match region {
            CONFIG => self.config.write(offset, data),
            BAR0 => {
                Self::bar0_range(offset, data.len())?;
                self.bar0_write(offset, data);
                true
            }
            BAR4 => self.msix_bar.write(offset, data),
            _ => false,
        };
        match ok {
            true => Ok(()),
            false => Err(Self::out_of_range(region, offset, data.len())),
        }
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        let fd = fd.ok_or(Error::NoFd)?;
        let mapped = self.dma.address_space().regions().count();
        if mapped >= self.max_dma_regions {
            log::warn!("DMA_MAP {address:#x}+{size:#x} refused: {mapped} windows mapped");
            return Err(Error::DmaRegions(mapped).into());
        }
        let perm = Perm {
            read: flags.contains(DmaMapFlags::READ),
            write: flags.contains(DmaMapFlags::WRITE),
        };
        debug!("DMA_MAP {address:#x}+{size:#x} from offset {offset:#x} ({perm:?})");
        self.dma
            .map(FdRegion {
                fd: fd.as_fd(),
                offset,
                iova: address,
                len: size,
                perm,
            })
            .map_err(Error::Map)?;
        self.shared
            .lock()
            .set_address_space(self.dma.address_space());
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        debug!("DMA_UNMAP {address:#x}+{size:#x} ({flags:?})");
        if flags.contains(DmaUnmapFlags::GET_DIRTY_PAGE_INFO) {
            return Err(Error::UnmapFlags(flags.bits()).into());
        }
        if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            self.dma.unmap_all();
        } else {
            self.dma.unmap(address, size).map_err(Error::Unmap)?;
        }
        // Requests in flight keep the old snapshot (and its mappings) until they finish.
        self.shared
            .lock()
            .set_address_space(self.dma.address_space());
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        self.reset_function();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            return Err(Error::IrqIndex(index).into());
        }
        self.vectors
            .set(flags, start, count, fds)
            .map_err(Error::Irqs)?;
        Ok(())
    }
}
