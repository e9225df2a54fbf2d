//! DMA address spaces.
//!
//! Every software device model (NVMe, virtio backends, the vfio-user server) reaches guest
//! memory only through an [`AddressSpace`]: a set of non-overlapping IOVA windows onto host
//! memory. [`AddressSpace::translate`] is the one checkpoint where a device-supplied address is
//! bounds- and permission-checked; everything else (copies, scatter lists for io_uring) is
//! built on it.

mod space;

pub use space::{Access, AddressSpace, DmaRegion, DmaSlice, Error, Perm};
