//! The boundary between the passthrough device model and the thing that reaches the device:
//! kernel VFIO ([`super::kernel`]) or a vfio-user server ([`super::user`]). Both speak VFIO's
//! vocabulary (regions by index, sparse mmap areas, interrupt indexes), so the model above it
//! cannot tell them apart; tests use a double.

use std::os::fd::BorrowedFd;

use vmm_sys_util::eventfd::EventFd;

/// VFIO's PCI region indexes: BARs 0..=5, the expansion ROM, then configuration space.
pub const BAR_REGIONS: u32 = 6;
pub const CONFIG_REGION: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kernel(super::kernel::Error),
    #[error(transparent)]
    User(super::user::Error),
    #[error("region {index} has no {len} bytes at {offset:#x}")]
    OutOfRange { index: u32, offset: u64, len: usize },
    /// For test doubles.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether the device is gone for good (a vfio-user server that hung up or stopped
    /// answering), as opposed to one refused or out-of-range access.
    pub fn device_lost(&self) -> bool {
        match self {
            Error::User(e) => e.connection_lost(),
            _ => false,
        }
    }
}

/// One part of a region that may be mmapped (offsets within the region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// What a region is, as the device describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// 0: the region does not exist (an unimplemented BAR).
    pub size: u64,
    pub readable: bool,
    pub writable: bool,
    /// Some of it may be mmapped: the `areas`, or the whole region when `areas` is empty.
    pub mmappable: bool,
    pub areas: Vec<Area>,
}

impl RegionInfo {
    /// The parts that may be mmapped: the sparse areas, or all of an mmappable region.
    pub fn mmap_areas(&self) -> Vec<Area> {
        match (self.mmappable, self.areas.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => vec![Area {
                offset: 0,
                size: self.size,
            }],
            (true, false) => self.areas.clone(),
        }
    }

    /// Whether `offset..offset + len` lies inside the region.
    pub fn contains(&self, offset: u64, len: usize) -> bool {
        offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.size)
    }
}

/// One window of guest RAM for the device to DMA into, identity-mapped (IOVA = GPA). Kernel
/// VFIO pins it through `host`; a vfio-user server maps `fd` from `fd_offset` itself.
#[derive(Clone, Copy, Debug)]
pub struct DmaWindow<'a> {
    pub gpa: u64,
    pub len: u64,
    pub host: *mut u8,
    pub fd: BorrowedFd<'a>,
    pub fd_offset: u64,
}

/// Reaches a PCI function: its configuration space and regions, DMA into guest RAM, its
/// interrupts and its reset.
pub trait Transport: Send {
    /// Configuration space (the device's own, not the guest's view).
    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error>;
    fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error>;

    /// Region `index`, if the device has it.
    fn region(&self, index: u32) -> Option<&RegionInfo>;
    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Error>;
    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Error>;
    /// Where an mmappable region's bytes live: a file and the offset of the region's first
    /// byte in it.
    fn mmap_source(&self, index: u32) -> Option<(BorrowedFd<'_>, u64)>;
    /// A descriptor that polls as hung up (POLLHUP / POLLRDHUP) when the device goes away
    /// between accesses: a vfio-user server's socket. None where loss shows only in accesses.
    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Lets the device DMA into `window`.
    ///
    /// # Safety
    /// `window.host..window.host + window.len` must stay mapped, and `window.fd` must keep
    /// those bytes, until [`Transport::dma_unmap`] of the same window succeeds or the
    /// transport is dropped: the device reads and writes them at any time until then.
    unsafe fn dma_map(&mut self, window: &DmaWindow<'_>) -> Result<(), Error>;
    fn dma_unmap(&mut self, gpa: u64, len: u64) -> Result<(), Error>;

    /// MSI-X vectors the device can signal through eventfds (0: none).
    fn msix_vectors(&self) -> u32;
    /// Routes vector `i` to `fds[i]`.
    fn enable_msix(&mut self, fds: &[&EventFd]) -> Result<(), Error>;
    fn disable_msix(&mut self) -> Result<(), Error>;

    /// Function-level reset, if the device supports one (a no-op otherwise).
    fn reset(&mut self) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmap_areas_default_to_the_whole_region() {
        let mut r = RegionInfo {
            size: 0x4000,
            readable: true,
            writable: true,
            mmappable: true,
            areas: Vec::new(),
        };
        assert_eq!(
            r.mmap_areas(),
            [Area {
                offset: 0,
                size: 0x4000
            }]
        );
        r.areas = vec![Area {
            offset: 0x1000,
            size: 0x1000,
        }];
        assert_eq!(r.mmap_areas(), r.areas);
        r.mmappable = false;
        assert!(r.mmap_areas().is_empty());
    }

    #[test]
    fn contains_checks_ends_and_overflow() {
        let r = RegionInfo {
            size: 0x100,
            ..RegionInfo::default()
        };
        assert!(r.contains(0xfc, 4));
        assert!(!r.contains(0xfd, 4));
        assert!(!r.contains(u64::MAX, 2));
    }
}
