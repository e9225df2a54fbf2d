//! Descriptor chains to checked frame buffers (pure): a TX chain is device-readable only and
//! holds the vnet header and the frame; an RX chain is device-writable only. Every address
//! goes through the `iommu` address space.

use iommu::{Access, AddressSpace, DmaSlice};

use crate::net::header::HDR_LEN;
use crate::vhost_user::chain::Desc;

/// Smallest TX frame: the vnet header and an Ethernet header.
pub const MIN_TX: usize = HDR_LEN + 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a device-writable buffer in a TX chain")]
    WritableTx,
    #[error("a device-readable buffer in an RX chain")]
    ReadableRx,
    #[error("chain of {0} bytes is too short for a frame")]
    TooShort(usize),
    #[error("TX frame of {len} bytes is over the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    #[error("buffer at {addr:#x} ({len} bytes) is not in guest memory")]
    Unmapped { addr: u64, len: u32 },
}

/// The checked buffers of one chain.
#[derive(Debug, Default)]
pub struct Buffers {
    pub segments: Vec<DmaSlice>,
    pub len: usize,
}

fn translate(space: &AddressSpace, descs: &[Desc], access: Access) -> Result<Buffers, FrameError> {
    let mut b = Buffers::default();
    for d in descs.iter().filter(|d| d.len > 0) {
        let s = space
            .translate(d.addr, d.len as usize, access)
            .map_err(|_| FrameError::Unmapped {
                addr: d.addr,
                len: d.len,
            })?;
        b.segments.push(s);
        b.len += d.len as usize;
    }
    Ok(b)
}

/// A TX chain: readable buffers, at least [`MIN_TX`] and at most `max` bytes.
pub fn tx(space: &AddressSpace, descs: &[Desc], max: usize) -> Result<Buffers, FrameError> {
    if descs.iter().any(|d| d.writable) {
        return Err(FrameError::WritableTx);
    }
    let len = descs.iter().map(|d| d.len as usize).sum();
    if len < MIN_TX {
        return Err(FrameError::TooShort(len));
    }
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    translate(space, descs, Access::Read)
}

/// An RX chain: writable buffers with room for at least the vnet header.
pub fn rx(space: &AddressSpace, descs: &[Desc]) -> Result<Buffers, FrameError> {
    if descs.iter().any(|d| !d.writable) {
        return Err(FrameError::ReadableRx);
    }
    let len = descs.iter().map(|d| d.len as usize).sum();
    if len < HDR_LEN {
        return Err(FrameError::TooShort(len));
    }
    translate(space, descs, Access::Write)
}

/// Writes `data` at byte `offset` of the chain `descs` (through `space`); `false` if the
/// chain is shorter.
pub fn write_at(space: &AddressSpace, descs: &[Desc], mut offset: usize, data: &[u8]) -> bool {
    let mut rest = data;
    for d in descs {
        if rest.is_empty() {
            break;
        }
        let len = d.len as usize;
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = rest.len().min(len - offset);
        if space.write(d.addr + offset as u64, &rest[..n]).is_err() {
            return false;
        }
        rest = &rest[n..];
        offset = 0;
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhost_user::testing::Mem;

    fn d(addr: u64, len: u32, writable: bool) -> Desc {
        Desc {
            addr,
            len,
            writable,
        }
    }

    #[test]
    fn tx_chains_are_checked_for_direction_size_and_memory() {
        let m = Mem::new();
        let s = m.space();
        let ok = tx(&s, &[d(0x1000, 12, false), d(0x2000, 60, false)], 1530).unwrap();
        assert_eq!((ok.segments.len(), ok.len), (2, 72));
        assert_eq!(
            tx(&s, &[d(0x1000, 12, false), d(0x2000, 60, true)], 1530).unwrap_err(),
            FrameError::WritableTx
        );
        assert_eq!(
            tx(&s, &[d(0x1000, 12, false)], 1530).unwrap_err(),
            FrameError::TooShort(12)
        );
        assert_eq!(
            tx(&s, &[d(0x1000, 2000, false)], 1530).unwrap_err(),
            FrameError::Oversized {
                len: 2000,
                max: 1530
            }
        );
        assert!(matches!(
            tx(&s, &[d(0xfff0, 64, false)], 1530),
            Err(FrameError::Unmapped { addr: 0xfff0, .. })
        ));
        // Many small descriptors add up; u32::MAX lengths cannot overflow the sum.
        assert!(matches!(
            tx(&s, &[d(0, u32::MAX, false), d(0, u32::MAX, false)], 1530),
            Err(FrameError::Oversized { .. })
        ));
    }

    #[test]
    fn rx_chains_need_writable_room_for_the_header() {
        let m = Mem::new();
        let s = m.space();
        let ok = rx(
            &s,
            &[
                d(0x1000, 6, true),
                d(0x2000, 1600, true),
                d(0x3000, 0, true),
            ],
        )
        .unwrap();
        assert_eq!((ok.segments.len(), ok.len), (2, 1606));
        assert_eq!(
            rx(&s, &[d(0x1000, 11, true)]).unwrap_err(),
            FrameError::TooShort(11)
        );
        assert_eq!(
            rx(&s, &[d(0x1000, 64, false)]).unwrap_err(),
            FrameError::ReadableRx
        );
        assert!(matches!(
            rx(&s, &[d(0x10000, 64, true)]),
            Err(FrameError::Unmapped { .. })
        ));
    }

    #[test]
    fn write_at_crosses_descriptors() {
        let m = Mem::new();
        let s = m.space();
        let chain = [d(0x1000, 11, true), d(0x2000, 100, true)];
        assert!(write_at(&s, &chain, 10, &[0xaa, 0xbb]));
        let mut b = [0u8; 1];
        s.read(0x100a, &mut b).unwrap();
        assert_eq!(b, [0xaa]);
        s.read(0x2000, &mut b).unwrap();
        assert_eq!(b, [0xbb]);
        assert!(!write_at(&s, &chain, 110, &[1, 2]));
        assert!(!write_at(&s, &[d(0xfff0, 100, true)], 90, &[1]));
    }
}
