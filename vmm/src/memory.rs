//! Guest RAM: one memfd (shareable with backend daemons later), optionally on hugetlbfs,
//! mapped shared and described with vm-memory.

use std::any::Any;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Where the PCI/MMIO hole starts below 4 GiB; RAM above it continues at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 1 << 32;

const HUGE_PAGE: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest RAM size {0:#x} is not a multiple of {1:#x}")]
    BadSize(u64, u64),
    #[error("memfd_create failed")]
    Memfd(#[source] std::io::Error),
    #[error("duplicating the guest RAM fd failed")]
    Dup(#[source] std::io::Error),
    #[error("sizing guest RAM to {0} bytes failed")]
    Truncate(u64, #[source] std::io::Error),
    #[error("building the DMA view of guest RAM failed")]
    Dma(#[source] iommu::Error),
    #[error("mapping guest RAM failed")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// How to back guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamConfig {
    pub size: u64,
    /// 2 MiB pages from hugetlbfs (needs pages reserved in /proc/sys/vm/nr_hugepages).
    pub hugepages: bool,
}

/// Guest RAM and the file behind it.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    file: File,
    size: u64,
}

impl GuestRam {
    pub fn new(cfg: RamConfig) -> Result<GuestRam, Error> {
        let align = if cfg.hugepages { HUGE_PAGE } else { 4096 };
        if cfg.size == 0 || !cfg.size.is_multiple_of(align) {
            return Err(Error::BadSize(cfg.size, align));
        }
        let file = memfd(cfg.hugepages)?;
        file.set_len(cfg.size)
            .map_err(|e| Error::Truncate(cfg.size, e))?;
        let mut ranges = Vec::new();
        for (gpa, len, offset) in ram_ranges(cfg.size) {
            // vm-memory's FileOffset takes a File by value; every region shares the one memfd.
            let fo = FileOffset::new(file.try_clone().map_err(Error::Dup)?, offset);
            ranges.push((GuestAddress(gpa), len as usize, Some(fo)));
        }
        let memory = GuestMemoryMmap::from_ranges_with_files(&ranges).map_err(Error::Map)?;
        Ok(GuestRam {
            memory,
            file,
            size: cfg.size,
        })
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The memfd: backends map guest RAM from it.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Guest RAM as a DMA address space with IOVA = GPA: what software device models reach
    /// guest memory through.
    pub fn dma_space(&self) -> Result<iommu::AddressSpace, Error> {
        let mut space = iommu::AddressSpace::new();
        let owner: Arc<dyn Any + Send + Sync> = Arc::new(self.memory.clone());
        for region in self.memory.iter() {
            // SAFETY: the region's mapping lives as long as any clone of the collection, and
            // `owner` is one; the guest shares it by design, which the DMA contract allows.
            let r = unsafe {
                iommu::DmaRegion::new(
                    region.start_addr().0,
                    region.len(),
                    region.as_ptr(),
                    iommu::Perm::RW,
                    owner.clone(),
                )
            };
            space.map(r).map_err(Error::Dma)?;
        }
        Ok(space)
    }
}

/// Splits `size` bytes of RAM around the MMIO hole: (guest address, length, file offset).
pub fn ram_ranges(size: u64) -> Vec<(u64, u64, u64)> {
    if size <= MMIO_HOLE_START {
        vec![(0, size, 0)]
    } else {
        vec![
            (0, MMIO_HOLE_START, 0),
            (MMIO_HOLE_END, size - MMIO_HOLE_START, MMIO_HOLE_START),
        ]
    }
}

fn memfd(hugepages: bool) -> Result<File, Error> {
    let name = CString::new("iopath-guest-ram").expect("static name has no NUL");
    let mut flags = libc::MFD_CLOEXEC;
    if hugepages {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `name` is a valid C string; the call returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend};

    use super::*;

    #[test]
    fn small_ram_is_one_region() {
        assert_eq!(ram_ranges(64 << 20), vec![(0, 64 << 20, 0)]);
    }

    #[test]
    fn large_ram_skips_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(0, 3 << 30, 0), (4 << 30, 1 << 30, 3 << 30)]);
    }

    #[test]
    fn ram_is_shared_with_the_memfd() {
        use std::io::{Read, Seek, SeekFrom};
        let ram = GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap();
        ram.memory()
            .write_slice(b"iopath", GuestAddress(0x1234))
            .unwrap();
        let mut f = ram.file().try_clone().unwrap();
        f.seek(SeekFrom::Start(0x1234)).unwrap();
        let mut b = [0u8; 6];
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"iopath");
        assert_eq!(ram.memory().num_regions(), 1);
    }

    #[test]
    fn dma_space_sees_guest_ram_at_its_gpa() {
        let ram = GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap();
        let dma = ram.dma_space().unwrap();
        dma.write(0x2000, b"dma").unwrap();
        let mut b = [0u8; 3];
        ram.memory()
            .read_slice(&mut b, GuestAddress(0x2000))
            .unwrap();
        assert_eq!(&b, b"dma");
        assert!(dma.write((1 << 20) - 1, b"xx").is_err());
    }

    #[test]
    fn unaligned_size_is_rejected() {
        assert!(matches!(
            GuestRam::new(RamConfig {
                size: 4097,
                hugepages: false
            }),
            Err(Error::BadSize(..))
        ));
        assert!(matches!(
            GuestRam::new(RamConfig {
                size: 4096,
                hugepages: true
            }),
            Err(Error::BadSize(..))
        ));
    }
}
