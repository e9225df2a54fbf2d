//! Making guest RAM reachable by a device: the [`Mapper`] boundary.
//!
//! A VMM maps every guest RAM region once at VM start (IOVA = GPA) and unmaps it at teardown.
//! With kernel VFIO that pins the pages and programs the IOMMU ([`crate::VfioContainerMapper`]);
//! tests use [`crate::RecordingMapper`]. Both keep the same books ([`Ledger`]), so overlap and
//! unknown-window errors and the statistics do not depend on the implementation.

use std::io;
use std::time::{Duration, Instant};

/// One guest RAM region, identity-mapped: the device sees it at IOVA = `gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    pub gpa: u64,
    pub len: u64,
    /// Where the VMM has the region mapped.
    pub host: *mut u8,
}

/// What mapping guest RAM has cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// Windows mapped now.
    pub regions: usize,
    /// Bytes mapped now: with VFIO, the pinned guest RAM.
    pub pinned_bytes: u64,
    /// Time spent in successful map and unmap calls.
    pub map_time: Duration,
    pub unmap_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest RAM window {gpa:#x}+{len:#x} is empty, wraps, or does not fit the host")]
    BadWindow { gpa: u64, len: u64 },
    #[error("guest RAM window {gpa:#x}+{len:#x} overlaps one already mapped")]
    Overlap { gpa: u64, len: u64 },
    #[error("no guest RAM window is mapped exactly at {gpa:#x}+{len:#x}")]
    NotMapped { gpa: u64, len: u64 },
    #[error(
        "VFIO_IOMMU_MAP_DMA of guest RAM {gpa:#x}+{len:#x} failed: the kernel could not pin \
         {pinned_after} bytes of guest RAM; RLIMIT_MEMLOCK is {limit}: raise it (ulimit -l, \
         systemd LimitMEMLOCK=, or run with CAP_IPC_LOCK)"
    )]
    MemlockLimit {
        gpa: u64,
        len: u64,
        /// Bytes that would have been pinned with this window.
        pinned_after: u64,
        limit: String,
        #[source]
        source: io::Error,
    },
    #[error("VFIO_IOMMU_MAP_DMA of guest RAM {gpa:#x}+{len:#x} failed")]
    VfioMap {
        gpa: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("VFIO_IOMMU_UNMAP_DMA of guest RAM {gpa:#x}+{len:#x} failed")]
    VfioUnmap {
        gpa: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("injected failure mapping {gpa:#x}")]
    Injected { gpa: u64 },
}

/// Makes guest RAM reachable by a device at IOVA = GPA.
pub trait Mapper: Send {
    /// Maps one region.
    ///
    /// # Safety
    /// `region.host..region.host + region.len` must stay mapped in this process, and must not
    /// be remapped, until [`Mapper::unmap`] of the same window succeeds or the mapper is
    /// dropped: the device may read and write it at any time until then.
    unsafe fn map(&mut self, region: &RamRegion) -> Result<(), Error>;

    /// Unmaps the window mapped exactly at `gpa..gpa + len`.
    fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), Error>;

    fn stats(&self) -> MapStats;
}

/// Maps every region; if one fails, unmaps the ones this call mapped and returns the error.
///
/// # Safety
/// Each region must meet the contract of [`Mapper::map`].
pub unsafe fn map_all(mapper: &mut dyn Mapper, regions: &[RamRegion]) -> Result<(), Error> {
    for (i, region) in regions.iter().enumerate() {
        // SAFETY: the caller vouches for every region.
        if let Err(e) = unsafe { mapper.map(region) } {
            for done in &regions[..i] {
                if let Err(undo) = mapper.unmap(done.gpa, done.len) {
                    log::warn!("rolling back guest RAM mapping: {undo}");
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmaps every region, trying all of them; returns the first error.
pub fn unmap_all(mapper: &mut dyn Mapper, regions: &[RamRegion]) -> Result<(), Error> {
    let mut first = None;
    for r in regions {
        if let Err(e) = mapper.unmap(r.gpa, r.len) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The windows a mapper has mapped, and what that cost.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Sorted by GPA, non-overlapping.
    windows: Vec<(u64, u64)>,
    stats: MapStats,
}

impl Ledger {
    /// Checks that `gpa..gpa+len` can be mapped: non-empty, not wrapping, fits a `usize`, no
    /// overlap.
    pub fn check_map(&self, gpa: u64, len: u64) -> Result<(), Error> {
        let end = gpa.checked_add(len);
        if len == 0 || end.is_none() || usize::try_from(len).is_err() {
            return Err(Error::BadWindow { gpa, len });
        }
        let end = end.unwrap_or(u64::MAX);
        if self.windows.iter().any(|&(g, l)| g < end && gpa < g + l) {
            return Err(Error::Overlap { gpa, len });
        }
        Ok(())
    }

    /// Records a successful map that started at `started`.
    pub fn mapped(&mut self, gpa: u64, len: u64, started: Instant) {
        let idx = self.windows.partition_point(|&(g, _)| g < gpa);
        self.windows.insert(idx, (gpa, len));
        self.stats.regions += 1;
        self.stats.pinned_bytes += len;
        self.stats.map_time += started.elapsed();
    }

    pub fn check_unmap(&self, gpa: u64, len: u64) -> Result<(), Error> {
        match self.windows.contains(&(gpa, len)) {
            true => Ok(()),
            false => Err(Error::NotMapped { gpa, len }),
        }
    }

    /// Records a successful unmap that started at `started`.
    pub fn unmapped(&mut self, gpa: u64, len: u64, started: Instant) {
        self.windows.retain(|&w| w != (gpa, len));
        self.stats.regions = self.windows.len();
        self.stats.pinned_bytes = self.windows.iter().map(|&(_, l)| l).sum();
        self.stats.unmap_time += started.elapsed();
    }

    /// The windows mapped now, by GPA.
    pub fn windows(&self) -> &[(u64, u64)] {
        &self.windows
    }

    pub fn stats(&self) -> MapStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_rejects_bad_and_overlapping_windows() {
        let mut l = Ledger::default();
        l.mapped(0x1000, 0x1000, Instant::now());
        l.mapped(0x4000, 0x1000, Instant::now());
        for (gpa, len) in [(0x1800, 0x10), (0x0, 0x1001), (0x1fff, 2), (0x3fff, 2)] {
            assert!(
                matches!(l.check_map(gpa, len), Err(Error::Overlap { .. })),
                "{gpa:#x}+{len:#x}"
            );
        }
        assert!(matches!(l.check_map(0, 0), Err(Error::BadWindow { .. })));
        assert!(matches!(
            l.check_map(u64::MAX, 2),
            Err(Error::BadWindow { .. })
        ));
        l.check_map(0x2000, 0x2000).unwrap();
        assert_eq!(l.windows(), [(0x1000, 0x1000), (0x4000, 0x1000)]);
        assert_eq!(l.stats().pinned_bytes, 0x2000);
    }

    #[test]
    fn ledger_unmaps_exact_windows_only() {
        let mut l = Ledger::default();
        l.mapped(0x1000, 0x2000, Instant::now());
        assert!(matches!(
            l.check_unmap(0x1000, 0x1000),
            Err(Error::NotMapped { .. })
        ));
        l.check_unmap(0x1000, 0x2000).unwrap();
        l.unmapped(0x1000, 0x2000, Instant::now());
        let s = l.stats();
        assert_eq!((s.regions, s.pinned_bytes), (0, 0));
        assert!(l.windows().is_empty());
    }

    #[test]
    fn memlock_error_tells_what_to_raise() {
        let e = Error::MemlockLimit {
            gpa: 0,
            len: 1 << 30,
            pinned_after: 1 << 30,
            limit: "8388608 bytes".into(),
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        let msg = e.to_string();
        assert!(msg.contains("RLIMIT_MEMLOCK is 8388608 bytes"), "{msg}");
        assert!(msg.contains("ulimit -l"), "{msg}");
    }
}
