//! Walks one split-ring descriptor chain, direct or through an indirect table.
//!
//! virtio-queue would walk it too, but through vm-memory; here every descriptor (and indirect
//! table entry) is read through the `iommu` address space, the one checkpoint for guest
//! addresses. A chain that cannot be walked to its end has no trustworthy status byte, so the
//! caller completes it with used length 0.

use iommu::AddressSpace;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Bytes per descriptor in a table.
pub const DESC_SIZE: u64 = 16;

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address (IOVA).
    pub addr: u64,
    pub len: u32,
    /// Device-writable (`VRING_DESC_F_WRITE`).
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor index {index} is outside a table of {size}")]
    IndexOutOfRange { index: u16, size: u16 },
    #[error("chain is longer than its table of {0}: a descriptor loop")]
    Loop(u16),
    #[error("descriptor table entry at {0:#x} is not in guest memory")]
    Unmapped(u64),
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    #[error("indirect descriptor also chains to a next descriptor")]
    IndirectWithNext,
    #[error("indirect table length {0} is not a non-zero multiple of 16")]
    BadIndirectLength(u32),
    #[error("chain covers more than 4 GiB")]
    TooLong,
}

/// One raw table entry.
#[derive(Clone, Copy, Debug)]
struct Raw {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_entry(space: &AddressSpace, table: u64, index: u16) -> Result<Raw, ChainError> {
    let at = table.wrapping_add(u64::from(index) * DESC_SIZE);
    let mut b = [0u8; DESC_SIZE as usize];
    space
        .read(at, &mut b)
        .map_err(|_| ChainError::Unmapped(at))?;
    Ok(Raw {
        addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// Appends the chain starting at `head` of the `size`-entry table at `table` to `out`.
pub fn walk(
    space: &AddressSpace,
    table: u64,
    size: u16,
    head: u16,
    out: &mut Vec<Desc>,
) -> Result<(), ChainError> {
    let (mut table, mut size, mut index) = (table, size, head);
    let mut indirect = false;
    // A chain visits each entry of its table at most once; more means a loop.
    let mut budget = size;
    let mut total: u64 = 0;
    loop {
        if index >= size {
            return Err(ChainError::IndexOutOfRange { index, size });
        }
        if budget == 0 {
            return Err(ChainError::Loop(size));
        }
        budget -= 1;
        let raw = read_entry(space, table, index)?;
        if raw.flags & F_INDIRECT != 0 {
            if indirect {
                return Err(ChainError::NestedIndirect);
            }
            if raw.flags & F_NEXT != 0 {
                return Err(ChainError::IndirectWithNext);
            }
            let entries = raw.len / DESC_SIZE as u32;
            if raw.len == 0
                || !raw.len.is_multiple_of(DESC_SIZE as u32)
                || entries > u32::from(u16::MAX)
            {
                return Err(ChainError::BadIndirectLength(raw.len));
            }
            (table, size, index) = (raw.addr, entries as u16, 0);
            budget = size;
            indirect = true;
            continue;
        }
        total += u64::from(raw.len);
        if total > u64::from(u32::MAX) {
            return Err(ChainError::TooLong);
        }
        out.push(Desc {
            addr: raw.addr,
            len: raw.len,
            writable: raw.flags & F_WRITE != 0,
        });
        if raw.flags & F_NEXT == 0 {
            return Ok(());
        }
        index = raw.next;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Mem;
    use super::*;

    fn walk_all(mem: &Mem, size: u16, head: u16) -> Result<Vec<Desc>, ChainError> {
        let space = mem.space();
        let mut out = Vec::new();
        walk(&space, 0, size, head, &mut out).map(|()| out)
    }

    const W: u16 = F_WRITE;
    const N: u16 = F_NEXT;

    #[test]
    fn direct_chain_is_followed_through_next() {
        let m = Mem::new();
        m.put(0, 3, 0x1000, 16, N, 5);
        m.put(0, 5, 0x2000, 512, N | W, 1);
        m.put(0, 1, 0x3000, 1, W, 0);
        let chain = walk_all(&m, 8, 3).unwrap();
        assert_eq!(
            chain,
            vec![
                Desc {
                    addr: 0x1000,
                    len: 16,
                    writable: false
                },
                Desc {
                    addr: 0x2000,
                    len: 512,
                    writable: true
                },
                Desc {
                    addr: 0x3000,
                    len: 1,
                    writable: true
                },
            ]
        );
    }

    #[test]
    fn loops_and_bad_indices_are_errors() {
        let m = Mem::new();
        m.put(0, 0, 0x1000, 16, N, 1);
        m.put(0, 1, 0x2000, 16, N, 0);
        assert_eq!(walk_all(&m, 4, 0), Err(ChainError::Loop(4)));
        // A self loop.
        m.put(0, 2, 0x1000, 16, N, 2);
        assert_eq!(walk_all(&m, 4, 2), Err(ChainError::Loop(4)));
        m.put(0, 0, 0x1000, 16, N, 9);
        assert_eq!(
            walk_all(&m, 4, 0),
            Err(ChainError::IndexOutOfRange { index: 9, size: 4 })
        );
        assert_eq!(
            walk_all(&m, 4, 4),
            Err(ChainError::IndexOutOfRange { index: 4, size: 4 })
        );
    }

    #[test]
    fn a_table_outside_memory_is_an_error() {
        let m = Mem::new();
        let space = m.space();
        let mut out = Vec::new();
        assert_eq!(
            walk(&space, 0x10000, 4, 0, &mut out),
            Err(ChainError::Unmapped(0x10000))
        );
        assert_eq!(
            walk(&space, u64::MAX - 8, 4, 0, &mut out),
            Err(ChainError::Unmapped(u64::MAX - 8))
        );
    }

    #[test]
    fn indirect_tables_are_followed_once() {
        let m = Mem::new();
        m.put(0, 0, 0x800, 48, F_INDIRECT | W, 0);
        m.put(0x800, 0, 0x1000, 16, N, 2);
        m.put(0x800, 2, 0x2000, 4096, N | W, 1);
        m.put(0x800, 1, 0x3000, 1, W, 0);
        let chain = walk_all(&m, 4, 0).unwrap();
        let got: Vec<_> = chain.iter().map(|d| (d.addr, d.len, d.writable)).collect();
        assert_eq!(
            got,
            vec![(0x1000, 16, false), (0x2000, 4096, true), (0x3000, 1, true)]
        );

        // Direct descriptors may precede the indirect one.
        m.put(0, 1, 0x4000, 16, N, 0);
        assert_eq!(walk_all(&m, 4, 1).unwrap().len(), 4);

        m.put(0x800, 1, 0x900, 16, F_INDIRECT, 0);
        assert_eq!(walk_all(&m, 4, 0), Err(ChainError::NestedIndirect));
        m.put(0x800, 1, 0x800, 48, 0, 0);
        m.put(0x800, 1, 0x3000, 1, N | W, 0);
        assert_eq!(walk_all(&m, 4, 0), Err(ChainError::Loop(3)));
        for len in [0, 40] {
            m.put(0, 0, 0x800, len, F_INDIRECT, 0);
            assert_eq!(walk_all(&m, 4, 0), Err(ChainError::BadIndirectLength(len)));
        }
        m.put(0, 0, 0x800, 48, F_INDIRECT | N, 1);
        assert_eq!(walk_all(&m, 4, 0), Err(ChainError::IndirectWithNext));
        m.put(0, 0, 0xfff8, 48, F_INDIRECT, 0);
        assert_eq!(walk_all(&m, 4, 0), Err(ChainError::Unmapped(0xfff8)));
    }

    #[test]
    fn chains_over_4_gib_are_refused() {
        let m = Mem::new();
        m.put(0, 0, 0x1000, u32::MAX, N, 1);
        m.put(0, 1, 0x2000, 1, W, 0);
        assert_eq!(walk_all(&m, 4, 0), Err(ChainError::TooLong));
    }
}
