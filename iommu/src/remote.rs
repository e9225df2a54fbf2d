//! The device side of a DMA map protocol (vfio-user DMA_MAP / DMA_UNMAP, a vhost-user memory
//! table): windows of the client's memory arrive as file descriptors and are mapped here.
//!
//! Each window's mmap is owned by its [`DmaRegion`]; it is unmapped once the window is unmapped
//! and the last [`AddressSpace`] snapshot holding it (a device with requests in flight) is
//! gone, so a device can never touch memory that this process has unmapped.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::fd_mapping::{self, FdMapping};
use crate::space::{self, AddressSpace, DmaRegion, Perm};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot map DMA window {iova:#x}+{len:#x}")]
    Mmap {
        iova: u64,
        len: u64,
        #[source]
        source: fd_mapping::Error,
    },
    #[error("DMA window {iova:#x}+{len:#x} rejected")]
    Window {
        iova: u64,
        len: u64,
        #[source]
        source: space::Error,
    },
}

/// One window as received: `len` bytes of `fd` from `offset`, seen by the device at `iova`.
#[derive(Clone, Copy, Debug)]
pub struct FdRegion<'a> {
    pub fd: BorrowedFd<'a>,
    pub offset: u64,
    pub iova: u64,
    pub len: u64,
    pub perm: Perm,
}

/// The windows a client has mapped; [`RemoteDma::address_space`] hands devices a snapshot.
#[derive(Default)]
pub struct RemoteDma {
    space: AddressSpace,
}

impl RemoteDma {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps a window; one that overlaps a mapped window is refused (and its mmap undone).
    pub fn map(&mut self, r: FdRegion<'_>) -> Result<(), Error> {
        let (iova, len) = (r.iova, r.len);
        let mapping = FdMapping::new(r.fd, r.offset, r.len, r.perm)
            .map_err(|source| Error::Mmap { iova, len, source })?;
        let host = mapping.as_ptr();
        // SAFETY: `host..host+len` is the mapping, which the region's owner keeps mapped for as
        // long as any clone of the region lives; the client shares it with us on purpose.
        let region = unsafe { DmaRegion::new(iova, len, host, r.perm, Arc::new(mapping)) };
        self.space
            .map(region)
            .map_err(|source| Error::Window { iova, len, source })
    }

    /// Unmaps the window mapped exactly at `iova..iova + len`.
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<(), Error> {
        self.space
            .unmap(iova, len)
            .map(drop)
            .map_err(|source| Error::Window { iova, len, source })
    }

    pub fn unmap_all(&mut self) {
        self.space = AddressSpace::new();
    }

    /// The windows mapped now, for a device to translate through.
    pub fn address_space(&self) -> Arc<AddressSpace> {
        Arc::new(self.space.clone())
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.space.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::fd_mapping::tests::memfd;
    use crate::space::Access;

    fn window(fd: BorrowedFd<'_>, offset: u64, iova: u64, len: u64, perm: Perm) -> FdRegion<'_> {
        FdRegion {
            fd,
            offset,
            iova,
            len,
            perm,
        }
    }

    #[test]
    fn memfd_round_trip() {
        let f = memfd(0x4000);
        f.write_all_at(b"from the client", 0x2000).unwrap();
        let mut dma = RemoteDma::new();
        dma.map(window(f.as_fd(), 0x2000, 0x10_0000, 0x2000, Perm::RW))
            .unwrap();
        let space = dma.address_space();
        let mut buf = [0u8; 15];
        space.read(0x10_0000, &mut buf).unwrap();
        assert_eq!(&buf, b"from the client");
        space.write(0x10_1000, b"from the device").unwrap();
        let mut back = [0u8; 15];
        f.read_exact_at(&mut back, 0x3000).unwrap();
        assert_eq!(&back, b"from the device");
        assert_eq!(dma.mapped_bytes(), 0x2000);
    }

    #[test]
    fn overlapping_windows_are_refused() {
        let f = memfd(0x4000);
        let mut dma = RemoteDma::new();
        dma.map(window(f.as_fd(), 0, 0x1000, 0x2000, Perm::RW))
            .unwrap();
        for (iova, len) in [(0x0, 0x2000), (0x2000, 0x1000), (0x1800, 0x100)] {
            let err = dma
                .map(window(f.as_fd(), 0, iova, len, Perm::RW))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Window {
                        source: space::Error::Overlap { .. },
                        ..
                    }
                ),
                "{iova:#x}+{len:#x}: {err}"
            );
        }
        dma.map(window(f.as_fd(), 0x3000, 0x3000, 0x1000, Perm::RW))
            .unwrap();
        assert_eq!(dma.mapped_bytes(), 0x3000);
    }

    #[test]
    fn unmapped_and_out_of_range_accesses_are_refused() {
        let f = memfd(0x2000);
        let mut dma = RemoteDma::new();
        dma.map(window(f.as_fd(), 0, 0x4000, 0x2000, Perm::RW))
            .unwrap();
        let space = dma.address_space();
        assert!(space.translate(0x5ff8, 8, Access::Read).is_ok());
        for (iova, len) in [(0x5ff8, 9), (0x3fff, 1), (0x6000, 1), (u64::MAX, 2)] {
            assert!(
                matches!(
                    space.translate(iova, len, Access::Read),
                    Err(space::Error::Unmapped { .. })
                ),
                "{iova:#x}+{len}"
            );
        }
        dma.unmap(0x4000, 0x2000).unwrap();
        assert!(dma
            .address_space()
            .translate(0x4000, 1, Access::Read)
            .is_err());
        assert!(matches!(
            dma.unmap(0x4000, 0x2000),
            Err(Error::Window {
                source: space::Error::NoSuchMapping { .. },
                ..
            })
        ));
    }

    #[test]
    fn read_only_windows_refuse_device_writes() {
        let f = memfd(0x1000);
        f.write_all_at(&[5; 8], 0).unwrap();
        let mut dma = RemoteDma::new();
        dma.map(window(f.as_fd(), 0, 0, 0x1000, Perm::RO)).unwrap();
        let space = dma.address_space();
        assert_eq!(space.read_u64(0).unwrap(), 0x0505_0505_0505_0505);
        assert!(matches!(
            space.write(0, &[1]),
            Err(space::Error::Denied {
                access: Access::Write,
                ..
            })
        ));
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, [5]);
    }

    #[test]
    fn a_snapshot_keeps_an_unmapped_window_alive() {
        let f = memfd(0x1000);
        let mut dma = RemoteDma::new();
        dma.map(window(f.as_fd(), 0, 0, 0x1000, Perm::RW)).unwrap();
        let in_flight = dma.address_space();
        dma.unmap_all();
        assert_eq!(dma.mapped_bytes(), 0);
        // The old snapshot still translates into live memory.
        in_flight.write(0x10, b"late").unwrap();
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, 0x10).unwrap();
        assert_eq!(&b, b"late");
    }
}
