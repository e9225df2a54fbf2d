//! `virtio_net_hdr_v1`: the 12 bytes in front of every frame on a VERSION_1 device (and on a
//! TAP with `IFF_VNET_HDR` and a 12-byte header size), and the frame edits the loopback
//! modes make.

/// Size of the header.
pub const HDR_LEN: usize = 12;
/// Offset of `num_buffers` (RX with MRG_RXBUF: how many buffers the frame spans).
pub const NUM_BUFFERS_OFFSET: usize = 10;
/// Destination and source MAC addresses.
const ETH_ADDRS_LEN: usize = 12;

/// `flags`: the checksum from `csum_start` to the end, stored at `csum_start + csum_offset`,
/// is still to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type` without segmentation.
pub const GSO_NONE: u8 = 0;
/// `gso_type` ECN bit (ORed into the TCP types).
pub const GSO_ECN: u8 = 0x80;

/// The fields of the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Swaps destination and source MAC of the Ethernet frame after the header; frames too
/// short to have both are left alone.
pub fn swap_macs(packet: &mut [u8]) {
    if let Some(addrs) = packet.get_mut(HDR_LEN..HDR_LEN + ETH_ADDRS_LEN) {
        let (dst, src) = addrs.split_at_mut(6);
        dst.swap_with_slice(src);
    }
}

/// Computes a checksum the sender left to the device (`F_NEEDS_CSUM`), for a receiver that
/// did not negotiate taking partial checksums, and clears the flag. `false` if the header
/// points outside the frame (the frame is then malformed).
pub fn finish_checksum(packet: &mut [u8]) -> bool {
    let Some(hdr) = packet.first_chunk::<HDR_LEN>().map(VnetHdr::parse) else {
        return false;
    };
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return true;
    }
    let frame = &mut packet[HDR_LEN..];
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if start > frame.len() || at + 2 > frame.len() {
        return false;
    }
    // The stack seeded the field with the pseudo-header sum: summing from `start` over it
    // yields the full checksum.
    let sum = internet_checksum(&frame[start..]);
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    packet[0] &= !F_NEEDS_CSUM;
    true
}

/// RFC 1071 ones' complement sum, complemented.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 0x0102,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = h.to_bytes();
        assert_eq!(&b[4..6], &1448u16.to_le_bytes());
        assert_eq!(b[NUM_BUFFERS_OFFSET], 3);
        assert_eq!(VnetHdr::parse(&b), h);
        assert!(h.is_gso());
        let ecn_only = VnetHdr {
            gso_type: GSO_ECN,
            ..VnetHdr::default()
        };
        assert!(!ecn_only.is_gso());
    }

    #[test]
    fn macs_swap_and_short_frames_stay() {
        let mut p = vec![0u8; HDR_LEN];
        p.extend_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00]);
        swap_macs(&mut p);
        assert_eq!(
            &p[HDR_LEN..HDR_LEN + 12],
            &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
        );
        assert_eq!(&p[..HDR_LEN], &[0; HDR_LEN]);
        let mut short = vec![0u8; HDR_LEN + 11];
        short[HDR_LEN] = 7;
        swap_macs(&mut short);
        assert_eq!(short[HDR_LEN], 7);
    }

    #[test]
    fn partial_checksums_are_finished() {
        // RFC 1071's example words sum to 0xddf2 (complement 0x220d).
        let mut p = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 2,
            csum_offset: 8,
            ..VnetHdr::default()
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(&[0xee, 0xee, 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        p.extend_from_slice(&[0, 0]);
        assert!(finish_checksum(&mut p));
        assert_eq!(p[0] & F_NEEDS_CSUM, 0);
        assert_eq!(&p[HDR_LEN + 10..], &0x220du16.to_be_bytes());
        // Summing the finished range gives 0 (the receiver's check).
        assert_eq!(internet_checksum(&p[HDR_LEN + 2..]), 0);
    }

    #[test]
    fn checksum_fields_outside_the_frame_are_refused() {
        for (start, offset) in [(100u16, 0u16), (0, 13), (u16::MAX, u16::MAX)] {
            let mut p = VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..VnetHdr::default()
            }
            .to_bytes()
            .to_vec();
            p.extend_from_slice(&[0u8; 14]);
            assert!(!finish_checksum(&mut p), "{start} {offset}");
        }
        assert!(!finish_checksum(&mut [0u8; 5]));
        assert!(finish_checksum(&mut [0u8; HDR_LEN]), "nothing to do");
    }
}
