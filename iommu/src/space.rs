use std::any::Any;
use std::sync::Arc;

/// What the device does to memory: `Read` takes data from guest memory (a write command's
/// payload, a descriptor), `Write` puts data into it (a read command's payload, a completion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Which accesses a region allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub read: bool,
    pub write: bool,
}

impl Perm {
    pub const RW: Perm = Perm {
        read: true,
        write: true,
    };
    pub const RO: Perm = Perm {
        read: true,
        write: false,
    };

    fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("DMA window {iova:#x}+{len:#x} overlaps a mapped region")]
    Overlap { iova: u64, len: u64 },
    #[error("DMA window {iova:#x}+{len:#x} is empty or wraps")]
    BadWindow { iova: u64, len: u64 },
    #[error("no DMA region at {iova:#x}+{len:#x}")]
    Unmapped { iova: u64, len: u64 },
    #[error("DMA {access:?} at {iova:#x} not permitted")]
    Denied { iova: u64, access: Access },
    #[error("no region mapped exactly at {iova:#x}+{len:#x}")]
    NoSuchMapping { iova: u64, len: u64 },
}

/// One IOVA window onto host memory. Clones share the owner, so a snapshot of an address
/// space keeps the same host mappings alive.
#[derive(Clone)]
pub struct DmaRegion {
    iova: u64,
    len: u64,
    host: usize,
    perm: Perm,
    /// Keeps the host mapping alive for as long as the region is mapped.
    _owner: Arc<dyn Any + Send + Sync>,
}

impl DmaRegion {
    /// # Safety
    /// `host..host+len` must be a valid, mapped host range for as long as `owner` is alive, and
    /// nothing but DMA through address spaces (and the guest itself) may assume exclusive access
    /// to it.
    pub unsafe fn new(
        iova: u64,
        len: u64,
        host: *mut u8,
        perm: Perm,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        DmaRegion {
            iova,
            len,
            host: host as usize,
            perm,
            _owner: owner,
        }
    }

    pub fn iova(&self) -> u64 {
        self.iova
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn perm(&self) -> Perm {
        self.perm
    }

    fn end(&self) -> u64 {
        self.iova + self.len
    }
}

/// A checked, contiguous host range: the result of a translation.
///
/// It carries a raw pointer because the guest writes the same memory concurrently (the ring
/// protocols make that safe at the protocol level) and because io_uring needs addresses. It is
/// valid while the region it came from stays mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaSlice {
    addr: usize,
    len: usize,
}

impl DmaSlice {
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A set of non-overlapping DMA regions, sorted by IOVA.
#[derive(Clone, Default)]
pub struct AddressSpace {
    regions: Vec<DmaRegion>,
}

impl AddressSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a region; a region that overlaps one already mapped is rejected.
    pub fn map(&mut self, region: DmaRegion) -> Result<(), Error> {
        let (iova, len) = (region.iova, region.len);
        if len == 0 || iova.checked_add(len).is_none() {
            return Err(Error::BadWindow { iova, len });
        }
        let idx = self.regions.partition_point(|r| r.iova < iova);
        let overlaps_prev = idx > 0 && self.regions[idx - 1].end() > iova;
        let overlaps_next = self.regions.get(idx).is_some_and(|r| r.iova < iova + len);
        if overlaps_prev || overlaps_next {
            return Err(Error::Overlap { iova, len });
        }
        self.regions.insert(idx, region);
        Ok(())
    }

    /// Removes the region mapped exactly at `iova..iova+len`.
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<DmaRegion, Error> {
        let idx = self
            .regions
            .iter()
            .position(|r| r.iova == iova && r.len == len)
            .ok_or(Error::NoSuchMapping { iova, len })?;
        Ok(self.regions.remove(idx))
    }

    pub fn regions(&self) -> impl Iterator<Item = &DmaRegion> {
        self.regions.iter()
    }

    /// Bytes mapped in all regions.
    pub fn mapped_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.len).sum()
    }

    /// The one checkpoint: `iova..iova+len` must lie inside a single region that permits
    /// `access`.
    pub fn translate(&self, iova: u64, len: usize, access: Access) -> Result<DmaSlice, Error> {
        let len64 = len as u64;
        let end = iova
            .checked_add(len64)
            .ok_or(Error::Unmapped { iova, len: len64 })?;
        let idx = self.regions.partition_point(|r| r.iova <= iova);
        let region = idx
            .checked_sub(1)
            .map(|i| &self.regions[i])
            .filter(|r| end <= r.end())
            .ok_or(Error::Unmapped { iova, len: len64 })?;
        if !region.perm.allows(access) {
            return Err(Error::Denied { iova, access });
        }
        Ok(DmaSlice {
            addr: region.host + (iova - region.iova) as usize,
            len,
        })
    }

    /// Copies guest memory at `iova` into `buf`.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), Error> {
        let s = self.translate(iova, buf.len(), Access::Read)?;
        // SAFETY: `translate` checked that the range lies in a mapped region, which stays
        // mapped while `self` is borrowed; `buf` is a distinct Rust allocation.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into guest memory at `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) -> Result<(), Error> {
        let s = self.translate(iova, data.len(), Access::Write)?;
        // SAFETY: as in `read`, with the region checked writable.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), s.as_ptr(), data.len()) };
        Ok(())
    }

    /// Reads a little-endian u32 (ring indices, doorbell shadows).
    pub fn read_u32(&self, iova: u64) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.read(iova, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, iova: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.read(iova, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space_over(buf: &mut Vec<u8>, iova: u64, perm: Perm) -> AddressSpace {
        let mut s = AddressSpace::new();
        // SAFETY: the Vec outlives the address space in every test.
        let r =
            unsafe { DmaRegion::new(iova, buf.len() as u64, buf.as_mut_ptr(), perm, Arc::new(())) };
        s.map(r).unwrap();
        s
    }

    fn region(iova: u64, len: u64) -> DmaRegion {
        // SAFETY: never dereferenced: used only to test the map bookkeeping.
        unsafe { DmaRegion::new(iova, len, std::ptr::null_mut(), Perm::RW, Arc::new(())) }
    }

    #[test]
    fn overlapping_maps_are_rejected() {
        let mut s = AddressSpace::new();
        s.map(region(0x1000, 0x1000)).unwrap();
        s.map(region(0x3000, 0x1000)).unwrap();
        for (iova, len) in [
            (0x1800, 0x100),
            (0x0, 0x1001),
            (0x1fff, 0x2),
            (0x2fff, 0x10),
            (0x0, 0x10000),
        ] {
            assert_eq!(
                s.map(region(iova, len)).unwrap_err(),
                Error::Overlap { iova, len }
            );
        }
        s.map(region(0x2000, 0x1000)).unwrap();
        assert_eq!(s.mapped_bytes(), 0x3000);
    }

    #[test]
    fn empty_and_wrapping_windows_are_rejected() {
        let mut s = AddressSpace::new();
        assert!(matches!(
            s.map(region(0x1000, 0)),
            Err(Error::BadWindow { .. })
        ));
        assert!(matches!(
            s.map(region(u64::MAX - 1, 4)),
            Err(Error::BadWindow { .. })
        ));
    }

    #[test]
    fn translate_checks_bounds() {
        let mut mem = vec![0u8; 0x2000];
        let s = space_over(&mut mem, 0x10000, Perm::RW);
        let base = mem.as_ptr() as usize;
        assert_eq!(
            s.translate(0x10000, 0x2000, Access::Read).unwrap().as_ptr() as usize,
            base
        );
        assert_eq!(
            s.translate(0x11000, 16, Access::Write).unwrap().as_ptr() as usize,
            base + 0x1000
        );
        assert!(matches!(
            s.translate(0x11ff9, 8, Access::Read),
            Err(Error::Unmapped { .. })
        ));
        assert!(matches!(
            s.translate(0xffff, 1, Access::Read),
            Err(Error::Unmapped { .. })
        ));
        assert!(matches!(
            s.translate(0x12000, 1, Access::Read),
            Err(Error::Unmapped { .. })
        ));
        assert!(matches!(
            s.translate(u64::MAX, 2, Access::Read),
            Err(Error::Unmapped { .. })
        ));
    }

    #[test]
    fn a_range_spanning_two_regions_is_rejected() {
        let mut a = vec![0u8; 0x1000];
        let mut b = vec![0u8; 0x1000];
        let mut s = space_over(&mut a, 0, Perm::RW);
        // SAFETY: `b` outlives `s`.
        let r = unsafe { DmaRegion::new(0x1000, 0x1000, b.as_mut_ptr(), Perm::RW, Arc::new(())) };
        s.map(r).unwrap();
        assert!(s.translate(0xff0, 0x20, Access::Read).is_err());
        assert!(s.translate(0xff0, 0x10, Access::Read).is_ok());
    }

    #[test]
    fn permissions_are_enforced() {
        let mut mem = vec![7u8; 0x1000];
        let s = space_over(&mut mem, 0, Perm::RO);
        let mut b = [0u8; 4];
        s.read(0x10, &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        assert_eq!(
            s.write(0x10, &[1, 2]).unwrap_err(),
            Error::Denied {
                iova: 0x10,
                access: Access::Write
            }
        );
        assert_eq!(mem[0x10], 7, "a denied write must not touch memory");
    }

    #[test]
    fn read_and_write_round_trip() {
        let mut mem = vec![0u8; 0x1000];
        let s = space_over(&mut mem, 0x4000, Perm::RW);
        s.write(0x4100, &0xdead_beef_u32.to_le_bytes()).unwrap();
        assert_eq!(s.read_u32(0x4100).unwrap(), 0xdead_beef);
        assert!(s.write(0x4ffe, &[0; 4]).is_err());
        drop(s);
        assert_eq!(&mem[0x100..0x104], &0xdead_beef_u32.to_le_bytes());
        assert_eq!(mem[0xffe], 0);
    }

    #[test]
    fn unmap_needs_the_exact_window() {
        let mut s = AddressSpace::new();
        s.map(region(0x1000, 0x2000)).unwrap();
        assert!(s.unmap(0x1000, 0x1000).is_err());
        let r = s.unmap(0x1000, 0x2000).unwrap();
        assert_eq!((r.iova(), r.len()), (0x1000, 0x2000));
        assert!(s.translate(0x1000, 1, Access::Read).is_err());
    }
}
