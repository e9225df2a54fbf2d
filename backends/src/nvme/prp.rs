//! Physical Region Page lists (NVMe 1.4 section 4.3) turned into checked host segments.
//!
//! Every address comes from the guest; each one is translated through the address space
//! before anything is read from or written to the memory it names, and the whole list is
//! translated before the caller starts a transfer, so a bad entry fails the command without
//! touching memory. Pages that are contiguous in IOVA space (and in one region) are merged into
//! one segment.

use iommu::{Access, AddressSpace, DmaSlice};

use super::regs::PAGE_SIZE;
use super::spec::Status;

const PAGE_MASK: u64 = PAGE_SIZE - 1;
const ENTRY_SIZE: u64 = 8;

/// Why a PRP list was refused; becomes the command's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrpError {
    #[error("PRP entry {0:#x} has an offset the specification does not allow there")]
    Offset(u64),
    #[error("PRP address {0:#x} is not mapped for this transfer")]
    Transfer(u64),
}

impl From<PrpError> for Status {
    fn from(e: PrpError) -> Status {
        match e {
            PrpError::Offset(_) => Status::PRP_OFFSET_INVALID,
            PrpError::Transfer(_) => Status::DATA_TRANSFER_ERROR,
        }
    }
}

/// Collects translated segments, merging IOVA-contiguous pieces.
struct Segments<'a> {
    dma: &'a AddressSpace,
    access: Access,
    out: Vec<DmaSlice>,
    /// IOVA range of the last segment.
    run: Option<(u64, u64)>,
}

impl Segments<'_> {
    fn add(&mut self, iova: u64, len: u64) -> Result<(), PrpError> {
        if let Some((start, run_len)) = self.run {
            let merged = run_len + len;
            if start.checked_add(run_len) == Some(iova) {
                if let (Ok(n), Some(last)) = (usize::try_from(merged), self.out.last_mut()) {
                    if let Ok(s) = self.dma.translate(start, n, self.access) {
                        *last = s;
                        self.run = Some((start, merged));
                        return Ok(());
                    }
                }
            }
        }
        let n = usize::try_from(len).map_err(|_| PrpError::Transfer(iova))?;
        let s = self
            .dma
            .translate(iova, n, self.access)
            .map_err(|_| PrpError::Transfer(iova))?;
        self.out.push(s);
        self.run = Some((iova, len));
        Ok(())
    }
}

/// The host segments of a `len`-byte transfer described by `prp1`/`prp2`, checked for
/// `access` (`Access::Write` when the device writes guest memory).
///
/// Rules (4 KiB pages): PRP1 may have a dword-aligned offset; PRP2 is a page-aligned data
/// pointer if the rest fits in one page, else a qword-aligned pointer to a PRP list whose
/// entries are page-aligned; the last entry of a list page points to the next list page
/// (page-aligned) when more entries are needed.
pub fn walk(
    dma: &AddressSpace,
    prp1: u64,
    prp2: u64,
    len: u64,
    access: Access,
) -> Result<Vec<DmaSlice>, PrpError> {
    let mut segs = Segments {
        dma,
        access,
        out: Vec::new(),
        run: None,
    };
    if len == 0 {
        return Ok(segs.out);
    }
    if prp1 & 0x3 != 0 {
        return Err(PrpError::Offset(prp1));
    }
    let first = len.min(PAGE_SIZE - (prp1 & PAGE_MASK));
    segs.add(prp1, first)?;
    let mut left = len - first;
    if left == 0 {
        return Ok(segs.out);
    }
    if left <= PAGE_SIZE {
        if prp2 & PAGE_MASK != 0 {
            return Err(PrpError::Offset(prp2));
        }
        segs.add(prp2, left)?;
        return Ok(segs.out);
    }
    if prp2 & (ENTRY_SIZE - 1) != 0 {
        return Err(PrpError::Offset(prp2));
    }
    let mut list = prp2;
    let mut buf = Vec::new();
    while left > 0 {
        let room = (PAGE_SIZE - (list & PAGE_MASK)) / ENTRY_SIZE;
        let needed = left.div_ceil(PAGE_SIZE);
        let chained = needed > room;
        let entries = if chained { room } else { needed };
        // Both are at most 512 entries (one page).
        buf.resize((entries * ENTRY_SIZE) as usize, 0);
        dma.read(list, &mut buf)
            .map_err(|_| PrpError::Transfer(list))?;
        let mut values = buf
            .chunks_exact(ENTRY_SIZE as usize)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        let data_entries = if chained { entries - 1 } else { entries };
        for entry in values.by_ref().take(data_entries as usize) {
            if entry & PAGE_MASK != 0 {
                return Err(PrpError::Offset(entry));
            }
            let chunk = left.min(PAGE_SIZE);
            segs.add(entry, chunk)?;
            left -= chunk;
        }
        if chained {
            let next = values.next().ok_or(PrpError::Transfer(list))?;
            if next & PAGE_MASK != 0 {
                return Err(PrpError::Offset(next));
            }
            list = next;
        }
    }
    Ok(segs.out)
}

/// Writes `data` to the buffer `prp1`/`prp2` describe, then zeroes it up to `total` bytes (a
/// transfer longer than the data, such as a log page read past its end).
pub fn copy_to_guest(
    dma: &AddressSpace,
    prp1: u64,
    prp2: u64,
    data: &[u8],
    total: u64,
) -> Result<(), PrpError> {
    let segs = walk(dma, prp1, prp2, total, Access::Write)?;
    let mut src = data;
    for s in segs {
        let n = s.len().min(src.len());
        let (now, rest) = src.split_at(n);
        // SAFETY: `s` was translated from `dma`, which is borrowed for this call, so the host
        // range stays mapped; it is `s.len()` bytes long, `now.len() <= s.len()`, and `data`
        // is a Rust allocation that cannot overlap guest memory.
        unsafe {
            std::ptr::copy_nonoverlapping(now.as_ptr(), s.as_ptr(), n);
            std::ptr::write_bytes(s.as_ptr().add(n), 0, s.len() - n);
        }
        src = rest;
    }
    Ok(())
}

/// Fills `buf` from the buffer `prp1`/`prp2` describe.
pub fn copy_from_guest(
    dma: &AddressSpace,
    prp1: u64,
    prp2: u64,
    buf: &mut [u8],
) -> Result<(), PrpError> {
    let segs = walk(dma, prp1, prp2, buf.len() as u64, Access::Read)?;
    let mut dst = buf;
    for s in segs {
        let n = s.len().min(dst.len());
        let (now, rest) = dst.split_at_mut(n);
        // SAFETY: as in `copy_to_guest`, with the range checked readable.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), now.as_mut_ptr(), n) };
        dst = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::testing::{pattern, GuestMem};

    const P: u64 = PAGE_SIZE;

    /// Guest-side view of the segments: IOVA ranges.
    fn iovas(mem: &GuestMem, segs: &[DmaSlice]) -> Vec<(u64, usize)> {
        segs.iter().map(|s| (mem.iova_of(s), s.len())).collect()
    }

    fn write_list(mem: &GuestMem, at: u64, entries: &[u64]) {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write(at, &bytes);
    }

    #[test]
    fn single_page_with_offset() {
        let mem = GuestMem::new(16);
        let segs = walk(mem.space(), 0x1100, 0xdead_0000, 0x200, Access::Write).unwrap();
        assert_eq!(iovas(&mem, &segs), [(0x1100, 0x200)]);
        // Exactly to the end of the page: PRP2 is ignored.
        let segs = walk(mem.space(), 0x1100, 0x123, P - 0x100, Access::Write).unwrap();
        assert_eq!(iovas(&mem, &segs), [(0x1100, 0xf00)]);
    }

    #[test]
    fn prp2_as_second_data_pointer() {
        let mem = GuestMem::new(16);
        let segs = walk(mem.space(), 0x1800, 0x5000, P, Access::Read).unwrap();
        assert_eq!(iovas(&mem, &segs), [(0x1800, 0x800), (0x5000, 0x800)]);
        // Contiguous pages merge into one segment.
        let segs = walk(mem.space(), 0x1000, 0x2000, 2 * P, Access::Read).unwrap();
        assert_eq!(iovas(&mem, &segs), [(0x1000, 0x2000)]);
        // A second data pointer must be page aligned.
        assert_eq!(
            walk(mem.space(), 0x1800, 0x5010, P, Access::Read).unwrap_err(),
            PrpError::Offset(0x5010)
        );
    }

    #[test]
    fn prp1_must_be_dword_aligned() {
        let mem = GuestMem::new(4);
        let e = walk(mem.space(), 0x1002, 0, 16, Access::Read).unwrap_err();
        assert_eq!(e, PrpError::Offset(0x1002));
        assert_eq!(Status::from(e), Status::PRP_OFFSET_INVALID);
    }

    #[test]
    fn prp_list_with_offset_first_page() {
        let mem = GuestMem::new(32);
        // 0x200 bytes in the first page, then 3 pages, then 0x100 bytes.
        write_list(&mem, 0x8000, &[0x3000, 0x5000, 0x6000, 0x9000]);
        let len = 0x200 + 3 * P + 0x100;
        let segs = walk(mem.space(), 0x1e00, 0x8000, len, Access::Write).unwrap();
        assert_eq!(
            iovas(&mem, &segs),
            [
                (0x1e00, 0x200),
                (0x3000, 0x1000),
                (0x5000, 0x2000),
                (0x9000, 0x100)
            ]
        );
        let total: usize = segs.iter().map(|s| s.len()).sum();
        assert_eq!(total as u64, len);
    }

    #[test]
    fn prp_list_chains_across_list_pages() {
        let mem = GuestMem::new(2048);
        // The list starts 16 bytes before the end of its page: one data entry, then a pointer to
        // the next list page; that one holds the remaining entries.
        let list = 0x2000 - 16;
        write_list(&mem, list, &[0x10_0000, 0x3000]);
        // Pages in reverse order so nothing merges.
        let data: Vec<u64> = (0..600).map(|i| 0x20_0000 + (600 - i) * 2 * P).collect();
        // 511 data entries + chain pointer in page 0x3000, the rest in 0x4000.
        let mut first: Vec<u64> = data[..511].to_vec();
        first.push(0x4000);
        write_list(&mem, 0x3000, &first);
        write_list(&mem, 0x4000, &data[511..]);
        let len = P + 600 * P; // PRP1 page + one entry in the first list page + 599 more
        let segs = walk(mem.space(), 0x1000, list, len + P, Access::Read).unwrap();
        let got = iovas(&mem, &segs);
        assert_eq!(got.len(), 602);
        assert_eq!(got[0], (0x1000, 0x1000));
        assert_eq!(got[1], (0x10_0000, 0x1000));
        assert_eq!(got[2], (data[0], 0x1000));
        assert_eq!(got[512], (data[510], 0x1000));
        assert_eq!(got[513], (data[511], 0x1000));
        assert_eq!(got[601], (data[599], 0x1000));
    }

    #[test]
    fn list_entries_and_chain_pointers_must_be_page_aligned() {
        let mem = GuestMem::new(16);
        write_list(&mem, 0x8000, &[0x3000, 0x4008]);
        assert_eq!(
            walk(mem.space(), 0x1000, 0x8000, 3 * P, Access::Read).unwrap_err(),
            PrpError::Offset(0x4008)
        );
        // A list pointer must be qword aligned.
        assert_eq!(
            walk(mem.space(), 0x1000, 0x8004, 3 * P, Access::Read).unwrap_err(),
            PrpError::Offset(0x8004)
        );
        // Chain pointers with an offset: alone in its list page, and after a data entry.
        write_list(&mem, 0x8ff8, &[0x9010]);
        assert_eq!(
            walk(mem.space(), 0x1000, 0x8ff8, 4 * P, Access::Read).unwrap_err(),
            PrpError::Offset(0x9010)
        );
        write_list(&mem, 0x8ff0, &[0x3000, 0x9010]);
        assert_eq!(
            walk(mem.space(), 0x1000, 0x8ff0, 4 * P, Access::Read).unwrap_err(),
            PrpError::Offset(0x9010)
        );
    }

    #[test]
    fn unmapped_pages_and_lists_fail_the_transfer() {
        let mem = GuestMem::new(16); // 64 KiB at IOVA 0
        assert_eq!(
            walk(mem.space(), 0x10_0000, 0, 16, Access::Read).unwrap_err(),
            PrpError::Transfer(0x10_0000)
        );
        assert_eq!(
            walk(mem.space(), 0xf000, 0x10000, 2 * P, Access::Read).unwrap_err(),
            PrpError::Transfer(0x10000)
        );
        // List itself unmapped.
        assert_eq!(
            walk(mem.space(), 0x1000, 0x40_0000, 3 * P, Access::Read).unwrap_err(),
            PrpError::Transfer(0x40_0000)
        );
        // One bad entry in a list.
        write_list(&mem, 0x8000, &[0x3000, 0x7f_0000]);
        let e = walk(mem.space(), 0x1000, 0x8000, 3 * P, Access::Read).unwrap_err();
        assert_eq!(e, PrpError::Transfer(0x7f_0000));
        assert_eq!(Status::from(e), Status::DATA_TRANSFER_ERROR);
        // A wrapping address.
        assert!(walk(mem.space(), u64::MAX - 0xfff, 0, 0x1000, Access::Read).is_err());
    }

    #[test]
    fn read_only_memory_is_not_a_destination() {
        let mem = GuestMem::with_ro(4, 0x10_0000, 1, 0xaa);
        assert!(walk(mem.space(), 0x10_0000, 0, 512, Access::Read).is_ok());
        assert_eq!(
            walk(mem.space(), 0x10_0000, 0, 512, Access::Write).unwrap_err(),
            PrpError::Transfer(0x10_0000)
        );
    }

    #[test]
    fn copies_scatter_and_gather() {
        let mem = GuestMem::new(16);
        let data = pattern(5, 0x1000);
        mem.write(0x4000, &[0xff; 0x1000]);
        copy_to_guest(mem.space(), 0x1a00, 0x4000, &data, 0x1000).unwrap();
        assert_eq!(mem.read(0x1a00, 0x600), data[..0x600]);
        assert_eq!(mem.read(0x4000, 0xa00), data[0x600..]);
        assert_eq!(mem.read(0x4a00, 0x10), [0xff; 0x10]);
        let mut back = vec![0; 0x1000];
        copy_from_guest(mem.space(), 0x1a00, 0x4000, &mut back).unwrap();
        assert_eq!(back, data);
        // Zero fill past the data.
        copy_to_guest(mem.space(), 0x4000, 0, &[1, 2, 3, 4], 0x100).unwrap();
        let mut want = vec![0; 0x100];
        want[..4].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(mem.read(0x4000, 0x100), want);
    }
}
