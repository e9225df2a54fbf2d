//! The passthrough path's device: [`crate::nvme::Controller`] served as a PCI function over
//! vfio-user (the `iopath-vfio-user-nvme` daemon).
//!
//! - Config space: the emulated NVMe's identity (1b36:0010, class 01:08:02), BAR0 64-bit
//!   16 KiB, BAR4 64-bit 8 KiB with the MSI-X table and PBA, no INTx.
//! - BAR0 registers (below 0x1000) are region read/write messages to the controller.
//! - BAR0 doorbells (0x1000..0x2000) are a sparse mmappable area backed by a memfd: the guest
//!   stores into it directly and a poller thread ([`poller`]) notices, so the data path costs
//!   no exit and no message.
//! - DMA_MAP / DMA_UNMAP build the controller's address space from the client's memory file
//!   descriptors ([`iommu::RemoteDma`], IOVA = guest physical address).
//! - Interrupts: MSI-X vectors signal eventfds set with SET_IRQS; a polling guest needs none.

mod config_space;
mod daemon;
mod doorbells;
mod function;
mod msix;
mod poller;
mod regions;
pub mod relay;

pub use config_space::{DEVICE_ID, VENDOR_ID};
pub use daemon::{run, DaemonConfig, Error, Limits, ENGINE_DEPTH};
pub use function::{Error as FunctionError, NvmeFunction, DEFAULT_MAX_DMA_REGIONS};
pub use poller::PollTuning;
