//! A [`Mapper`] test double: records every call, maps nothing.

use std::time::Instant;

use crate::mapper::{Error, Ledger, MapStats, Mapper, RamRegion};

/// One call a [`RecordingMapper`] saw and accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapEvent {
    Map { gpa: u64, len: u64, host: usize },
    Unmap { gpa: u64, len: u64 },
}

/// Records accepted map and unmap calls in order; can be told to fail one map, as a kernel
/// refusing to pin memory would.
#[derive(Debug, Default)]
pub struct RecordingMapper {
    ledger: Ledger,
    events: Vec<MapEvent>,
    /// A map of a window starting here fails with [`Error::Injected`].
    pub fail_map_at: Option<u64>,
}

impl RecordingMapper {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> &[MapEvent] {
        &self.events
    }

    /// The windows mapped now, by GPA.
    pub fn windows(&self) -> &[(u64, u64)] {
        self.ledger.windows()
    }
}

impl Mapper for RecordingMapper {
    unsafe fn map(&mut self, region: &RamRegion) -> Result<(), Error> {
        let started = Instant::now();
        self.ledger.check_map(region.gpa, region.len)?;
        if self.fail_map_at == Some(region.gpa) {
            return Err(Error::Injected { gpa: region.gpa });
        }
        self.events.push(MapEvent::Map {
            gpa: region.gpa,
            len: region.len,
            host: region.host as usize,
        });
        self.ledger.mapped(region.gpa, region.len, started);
        Ok(())
    }

    fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), Error> {
        let started = Instant::now();
        self.ledger.check_unmap(gpa, len)?;
        self.events.push(MapEvent::Unmap { gpa, len });
        self.ledger.unmapped(gpa, len, started);
        Ok(())
    }

    fn stats(&self) -> MapStats {
        self.ledger.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::{map_all, unmap_all};

    /// Guest RAM as the VMM lays it out: below the 32-bit hole and above 4 GiB.
    fn ram(buf: &mut [u8]) -> Vec<RamRegion> {
        let host = buf.as_mut_ptr();
        vec![
            RamRegion {
                gpa: 0,
                len: 0x8000,
                host,
            },
            RamRegion {
                gpa: 1 << 32,
                len: 0x8000,
                // SAFETY: in bounds of `buf` (0x10000 bytes).
                host: unsafe { host.add(0x8000) },
            },
        ]
    }

    #[test]
    fn every_ram_region_is_mapped_and_unmapped() {
        let mut buf = vec![0u8; 0x10000];
        let regions = ram(&mut buf);
        let mut m = RecordingMapper::new();
        // SAFETY: the mapper never touches memory.
        unsafe { map_all(&mut m, &regions) }.unwrap();
        let s = m.stats();
        assert_eq!((s.regions, s.pinned_bytes), (2, 0x10000));
        assert_eq!(m.windows(), [(0, 0x8000), (1 << 32, 0x8000)]);
        unmap_all(&mut m, &regions).unwrap();
        let host = buf.as_ptr() as usize;
        assert_eq!(
            m.events(),
            [
                MapEvent::Map {
                    gpa: 0,
                    len: 0x8000,
                    host
                },
                MapEvent::Map {
                    gpa: 1 << 32,
                    len: 0x8000,
                    host: host + 0x8000
                },
                MapEvent::Unmap {
                    gpa: 0,
                    len: 0x8000
                },
                MapEvent::Unmap {
                    gpa: 1 << 32,
                    len: 0x8000
                },
            ]
        );
        let s = m.stats();
        assert_eq!((s.regions, s.pinned_bytes), (0, 0));
    }

    #[test]
    fn a_failed_map_rolls_back_the_regions_before_it() {
        let mut buf = vec![0u8; 0x10000];
        let regions = ram(&mut buf);
        let mut m = RecordingMapper {
            fail_map_at: Some(1 << 32),
            ..Default::default()
        };
        // SAFETY: the mapper never touches memory.
        let err = unsafe { map_all(&mut m, &regions) }.unwrap_err();
        assert!(matches!(err, Error::Injected { gpa } if gpa == 1 << 32));
        assert!(m.windows().is_empty());
        assert_eq!(m.stats().pinned_bytes, 0);
        assert_eq!(
            m.events().last(),
            Some(&MapEvent::Unmap {
                gpa: 0,
                len: 0x8000
            })
        );
    }

    #[test]
    fn overlapping_and_unknown_windows_are_refused() {
        let mut buf = vec![0u8; 0x10000];
        let regions = ram(&mut buf);
        let mut m = RecordingMapper::new();
        // SAFETY: the mapper never touches memory.
        unsafe { map_all(&mut m, &regions) }.unwrap();
        let overlapping = RamRegion {
            gpa: 0x4000,
            len: 0x1000,
            host: buf.as_mut_ptr(),
        };
        // SAFETY: as above.
        let err = unsafe { m.map(&overlapping) }.unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }), "{err}");
        assert!(matches!(m.unmap(0, 0x4000), Err(Error::NotMapped { .. })));
        assert_eq!(m.events().len(), 2, "refused calls are not recorded");
    }
}
