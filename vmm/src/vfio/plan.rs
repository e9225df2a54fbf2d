//! Which parts of a BAR go straight to the guest and which are trapped.
//!
//! A piece is mapped into the guest (a KVM memory slot over an mmap of the device) when the
//! device says it may be mmapped, it is readable and writable, it is not part of the MSI-X
//! table or PBA (the VMM emulates those), and it covers whole pages (KVM maps pages). Every
//! other byte of the BAR stays trapped: an access exits and is forwarded as a region read or
//! write. The split is a pure function so it is tested without a device.

use std::ops::Range;

use super::transport::RegionInfo;

pub const PAGE: u64 = 4096;

/// A page-aligned run of a BAR mapped into the guest (offsets within the BAR, which are the
/// region's offsets too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub len: u64,
}

impl Piece {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The pieces of `region` to map, sorted and disjoint; `trapped` (the MSI-X table and PBA)
/// are kept out, widened to whole pages.
pub fn plan(region: &RegionInfo, trapped: &[Range<u64>]) -> Vec<Piece> {
    if !(region.readable && region.writable) {
        return Vec::new();
    }
    let mut ranges: Vec<Range<u64>> = region
        .mmap_areas()
        .iter()
        .filter_map(|a| {
            let end = a.offset.checked_add(a.size)?.min(region.size);
            (a.offset < end).then_some(a.offset..end)
        })
        .collect();
    for hole in trapped.iter().filter(|h| h.start < h.end) {
        let hole = align_down(hole.start)..align_up(hole.end);
        ranges = ranges
            .into_iter()
            .flat_map(|r| {
                let before = r.start..r.end.min(hole.start);
                let after = r.start.max(hole.end)..r.end;
                [before, after]
            })
            .filter(|r| r.start < r.end)
            .collect();
    }
    let mut pieces: Vec<Piece> = ranges
        .into_iter()
        .filter_map(|r| {
            let (start, end) = (align_up(r.start), align_down(r.end));
            (start < end).then_some(Piece {
                offset: start,
                len: end - start,
            })
        })
        .collect();
    pieces.sort_by_key(|p| p.offset);
    // Overlapping or touching areas (a confused device) become one piece: KVM refuses two
    // slots over the same guest page.
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match merged.last_mut() {
            Some(last) if p.offset <= last.end() => {
                last.len = last.end().max(p.end()) - last.offset
            }
            _ => merged.push(p),
        }
    }
    merged
}

fn align_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn align_up(x: u64) -> u64 {
    x.checked_next_multiple_of(PAGE).unwrap_or(align_down(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::transport::Area;

    fn region(size: u64, mmappable: bool, areas: &[(u64, u64)]) -> RegionInfo {
        RegionInfo {
            size,
            readable: true,
            writable: true,
            mmappable,
            areas: areas
                .iter()
                .map(|&(offset, size)| Area { offset, size })
                .collect(),
        }
    }

    fn piece(offset: u64, len: u64) -> Piece {
        Piece { offset, len }
    }

    #[test]
    fn the_nvme_doorbell_page_is_the_only_piece() {
        // BAR0 of the vfio-user NVMe: registers trapped, doorbells mapped.
        let bar0 = region(0x4000, true, &[(0x1000, 0x1000)]);
        assert_eq!(plan(&bar0, &[]), [piece(0x1000, 0x1000)]);
        // BAR4 (MSI-X) is not mmappable: all trapped.
        assert!(plan(&region(0x2000, false, &[]), &[0..0x410, 0x1000..0x1010]).is_empty());
    }

    #[test]
    fn msix_table_and_pba_pages_stay_trapped() {
        // A real SSD: BAR0 16 KiB, whole BAR mmappable, MSI-X table at 0x2000 and PBA at
        // 0x3000 in the same BAR.
        let bar0 = region(0x4000, true, &[]);
        assert_eq!(
            plan(&bar0, &[0x2000..0x2100, 0x3000..0x3008]),
            [piece(0, 0x2000)]
        );
        // A table that straddles a page boundary takes both pages.
        // (Given twice: a duplicate hole changes nothing.)
        let straddling = [0x1ff0..0x2010, 0x1ff0..0x2010];
        assert_eq!(
            plan(&region(0x8000, true, &[]), &straddling),
            [piece(0, 0x1000), piece(0x3000, 0x5000)]
        );
    }

    #[test]
    fn unaligned_areas_shrink_to_whole_pages() {
        let r = region(0x10000, true, &[(0x800, 0x2000), (0x5000, 0x800)]);
        assert_eq!(plan(&r, &[]), [piece(0x1000, 0x1000)]);
    }

    #[test]
    fn areas_are_clipped_to_the_region_and_merged() {
        let r = region(
            0x4000,
            true,
            &[
                (0x3000, 0x4000),
                (0, 0x2000),
                (0x1000, 0x2000),
                (u64::MAX, 2),
            ],
        );
        assert_eq!(plan(&r, &[]), [piece(0, 0x4000)]);
    }

    #[test]
    fn read_only_or_write_only_regions_are_trapped() {
        let mut r = region(0x4000, true, &[]);
        r.writable = false;
        assert!(plan(&r, &[]).is_empty());
        r.writable = true;
        r.readable = false;
        assert!(plan(&r, &[]).is_empty());
    }
}
