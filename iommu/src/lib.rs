//! DMA address spaces.
//!
//! Every software device model (NVMe, virtio backends, the vfio-user server) reaches guest
//! memory only through an [`AddressSpace`]: a set of non-overlapping IOVA windows onto host
//! memory. [`AddressSpace::translate`] is the one checkpoint where a device-supplied address is
//! bounds- and permission-checked; everything else (copies, scatter lists for io_uring) is
//! built on it.
//!
//! The other half is getting guest RAM to a device: a VMM maps it through a [`Mapper`] (kernel
//! VFIO: [`VfioContainerMapper`]); a device server builds its address space from the windows a
//! client sends ([`RemoteDma`]).

mod fd_mapping;
mod mapper;
mod recording;
mod remote;
mod space;
mod vfio;

pub use fd_mapping::{Error as FdMappingError, FdMapping};
pub use mapper::{map_all, unmap_all, Error as MapError, Ledger, MapStats, Mapper, RamRegion};
pub use recording::{MapEvent, RecordingMapper};
pub use remote::{Error as RemoteDmaError, FdRegion, RemoteDma};
pub use space::{Access, AddressSpace, DmaRegion, DmaSlice, Error, Perm};
pub use vfio::VfioContainerMapper;
