//! The DMA view of the vhost-user memory table: every guest region mapped at IOVA = GPA.

use std::any::Any;
use std::io;
use std::sync::Arc;

use iommu::{AddressSpace, DmaRegion, Perm};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Builds the address space of one memory-table snapshot. The regions hold the snapshot, so
/// its mappings outlive a later memory table for as long as a request still uses them.
pub fn address_space(mem: Arc<GuestMemoryMmap>) -> Result<AddressSpace, iommu::Error> {
    let mut space = AddressSpace::new();
    let owner: Arc<dyn Any + Send + Sync> = mem.clone();
    for region in mem.iter() {
        // SAFETY: the region's mapping lives as long as any clone of the snapshot, and `owner`
        // is one; only the guest shares it, as the DMA contract allows.
        let r = unsafe {
            DmaRegion::new(
                region.start_addr().0,
                region.len(),
                region.as_ptr(),
                Perm::RW,
                owner.clone(),
            )
        };
        space.map(r)?;
    }
    Ok(space)
}

/// Refuses a memory table with a region that maps its file past the end: touching such a
/// page raises SIGBUS and kills the daemon (vm-memory 0.18 maps it without checking the file
/// size). Files that are not regular files (no meaningful size) are taken as they are.
pub fn check_files(mem: &GuestMemoryMmap) -> io::Result<()> {
    for region in mem.iter() {
        let Some(fo) = region.file_offset() else {
            continue;
        };
        let meta = fo.file().metadata()?;
        if !meta.is_file() {
            continue;
        }
        let end = fo.start().checked_add(region.len());
        if end.is_none_or(|end| end > meta.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "memory region at {:#x} maps {:#x} bytes from file offset {:#x}, past the \
                     end of its {:#x}-byte file",
                    region.start_addr().0,
                    region.len(),
                    fo.start(),
                    meta.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use iommu::Access;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    #[test]
    fn regions_are_mapped_at_their_guest_addresses() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x100000), 0x2000),
        ])
        .unwrap();
        mem.write_obj(0xabcd_u16, GuestAddress(0x100010)).unwrap();
        let space = address_space(Arc::new(mem)).unwrap();
        assert_eq!(space.mapped_bytes(), 0x12000);
        let mut b = [0u8; 2];
        space.read(0x100010, &mut b).unwrap();
        assert_eq!(u16::from_le_bytes(b), 0xabcd);
        assert!(space.translate(0x10000, 1, Access::Read).is_err());
        assert!(space.translate(0x101fff, 2, Access::Write).is_err());
    }

    #[test]
    fn the_space_keeps_the_snapshot_mapped() {
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap());
        let space = address_space(mem.clone()).unwrap();
        drop(mem);
        space.write(0xff0, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 3];
        space.read(0xff0, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
    }

    /// Regression (found by `fuzz/` target `vhost_user_messages`): a SET_MEM_TABLE region
    /// whose mmap_offset lies past the end of the frontend's memfd was mapped, and the first
    /// ring access killed the daemon with SIGBUS.
    #[test]
    fn regions_past_the_end_of_their_file_are_refused() {
        use vm_memory::{FileOffset, GuestRegionMmap, MmapRegion};

        let file = tempfile::tempfile().unwrap();
        file.set_len(0x2000).unwrap();
        let region = |offset: u64, len: usize| {
            let fo = FileOffset::new(file.try_clone().unwrap(), offset);
            let mmap = MmapRegion::<()>::from_file(fo, len).unwrap();
            GuestMemoryMmap::from_regions(
                vec![GuestRegionMmap::new(mmap, GuestAddress(0)).unwrap()],
            )
            .unwrap()
        };
        assert!(check_files(&region(0, 0x2000)).is_ok());
        assert!(check_files(&region(0x1000, 0x1000)).is_ok());
        let err = check_files(&region(0x1000, 0x2000)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(check_files(&region(0x2d_0000_0000, 0x1000)).is_err());
        // Anonymous memory has no file to check.
        let anon = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(check_files(&anon).is_ok());
    }
}
