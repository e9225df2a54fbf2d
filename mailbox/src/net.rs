//! The net job: what the VMM asks of the guest's network driver, what the guest measured, and
//! the frame every path carries, so that the guest, the reflectors and the host-side peers all
//! build and check frames the same way.
//!
//! A frame is an Ethernet II frame with the IEEE local experimental EtherType:
//!
//! | bytes | field |
//! |---|---|
//! | 0..6 | destination MAC |
//! | 6..12 | source MAC |
//! | 12..14 | [`ETHERTYPE`], big endian |
//! | 14..22 | sequence number, little endian |
//! | 22..30 | sender's timestamp (guest TSC), little endian |
//! | 30.. | [`crate::pattern`] bytes of the seed, the same in every frame |
//!
//! A reflector swaps the two MACs and sends the frame back; nothing else may change, so the
//! receiver checks every byte after the MACs. The payload does not depend on the sequence
//! number so that a sender can build it once and patch only the header per frame
//! ([`set_header`]): a misdelivered frame shows up as an unexpected sequence number instead.

use crate::histogram::Histogram;
use crate::pattern;

/// IEEE 802 local experimental EtherType 1: never a protocol a host stack answers.
pub const ETHERTYPE: u16 = 0x88b5;
/// Bytes of the frame header (MACs, EtherType, sequence number, timestamp).
pub const HEADER_BYTES: usize = 30;
/// The smallest frame without its FCS (IEEE 802.3 minimum of 64 bytes with it).
pub const MIN_FRAME: u32 = 60;
/// The largest frame without its FCS at a 1500-byte MTU.
pub const MAX_FRAME: u32 = 1514;
/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Which device a net job drives.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetDevice {
    /// Intel 82540EM (PCI 8086:100e), emulated by the VMM.
    E1000 = 1,
    /// virtio-net (PCI 1af4:1041), modern transport.
    VirtioNet = 2,
}

impl NetDevice {
    pub fn from_raw(raw: u32) -> Option<NetDevice> {
        match raw {
            1 => Some(NetDevice::E1000),
            2 => Some(NetDevice::VirtioNet),
            _ => None,
        }
    }
}

/// What a net job measures.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetWorkload {
    /// Transmit frames as fast as the device takes them (frames per second). Frames that come
    /// back (a reflector) are received and checked but not waited for.
    Tx = 0,
    /// Keep `depth` frames in flight, each waiting for its reflection: the round-trip latency
    /// of every frame, and whether every frame came back intact.
    RoundTrip = 1,
}

impl NetWorkload {
    pub const ALL: [NetWorkload; 2] = [NetWorkload::Tx, NetWorkload::RoundTrip];

    pub fn from_raw(raw: u32) -> Option<NetWorkload> {
        match raw {
            0 => Some(NetWorkload::Tx),
            1 => Some(NetWorkload::RoundTrip),
            _ => None,
        }
    }

    /// The workload [`NetWorkload::name`] names.
    pub fn from_name(name: &str) -> Option<NetWorkload> {
        NetWorkload::ALL.into_iter().find(|w| w.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            NetWorkload::Tx => "tx",
            NetWorkload::RoundTrip => "rr",
        }
    }
}

/// Parameters of a net job. The guest stops at `ops` frames sent or after `duration_ms`,
/// whichever comes first (0 means no limit of that kind; one of them must be set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetJob {
    /// A [`NetDevice`] value.
    pub device: u32,
    /// A [`NetWorkload`] value.
    pub workload: u32,
    /// Bytes per frame without the FCS, [`MIN_FRAME`]..=[`MAX_FRAME`].
    pub frame_bytes: u32,
    /// Round trip: frames in flight. Tx: frames queued per notification.
    pub depth: u32,
    pub ops: u64,
    pub duration_ms: u64,
    /// Destination MAC, byte 0 of the address in the lowest byte (see [`mac_to_u64`]);
    /// 0 means broadcast.
    pub dst_mac: u64,
    /// Round trip: a frame not back after this long is counted lost (0: 100 ms).
    pub timeout_ms: u64,
}

/// What a net job measured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetResults {
    pub sent: u64,
    /// Frames back that passed the check.
    pub received: u64,
    /// Frames of ours back that failed it: wrong length, unknown sequence number, damaged
    /// payload.
    pub bad: u64,
    /// Frames that were not ours (another EtherType: a host stack's neighbour discovery, say).
    pub foreign: u64,
    /// Round trip: frames not back within the timeout.
    pub lost: u64,
    /// Bytes sent (frames without FCS).
    pub bytes: u64,
    /// TSC ticks from the first send to the last completion.
    pub elapsed_ticks: u64,
    /// The device's MAC as the guest read it (see [`mac_to_u64`]).
    pub mac: u64,
    /// Times a send found the TX ring full.
    pub tx_full: u64,
    /// Round-trip latency per frame in TSC ticks.
    pub latency: Histogram,
}

/// A MAC as a u64: byte 0 of the address in the lowest byte.
pub fn mac_to_u64(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac);
    u64::from_le_bytes(b)
}

/// The MAC [`mac_to_u64`] encoded (the top two bytes are ignored).
pub fn mac_from_u64(v: u64) -> [u8; 6] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// What the receiver learns from a frame that passed [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub seq: u64,
    pub stamp: u64,
}

/// Why a frame failed [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than [`HEADER_BYTES`] or not the expected length.
    Length,
    /// Not [`ETHERTYPE`]: someone else's frame.
    EtherType,
    /// The payload differs from the pattern at this byte of the frame.
    Payload(usize),
}

/// Writes a whole frame into `frame` (its length is the frame's length, at least
/// [`HEADER_BYTES`]).
pub fn write(frame: &mut [u8], dst: [u8; 6], src: [u8; 6], seq: u64, stamp: u64, seed: u64) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    set_header(frame, seq, stamp);
    // `chunks`, not `chunks_exact`: a frame's length need not be a multiple of 8.
    for (i, chunk) in frame[HEADER_BYTES..].chunks_mut(8).enumerate() {
        let w = pattern::word(seed, i as u64 * 8).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// Rewrites the sequence number and timestamp of a frame [`write`] built.
pub fn set_header(frame: &mut [u8], seq: u64, stamp: u64) {
    frame[14..22].copy_from_slice(&seq.to_le_bytes());
    frame[22..30].copy_from_slice(&stamp.to_le_bytes());
}

/// Checks a frame that came back: `len` is the length it was sent with (`None`: any length).
pub fn check(frame: &[u8], len: Option<usize>, seed: u64) -> Result<FrameInfo, FrameError> {
    if frame.len() < HEADER_BYTES || len.is_some_and(|l| l != frame.len()) {
        return Err(FrameError::Length);
    }
    if frame[12..14] != ETHERTYPE.to_be_bytes() {
        return Err(FrameError::EtherType);
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&frame[14..22]);
    let seq = u64::from_le_bytes(word);
    word.copy_from_slice(&frame[22..30]);
    let stamp = u64::from_le_bytes(word);
    for (i, chunk) in frame[HEADER_BYTES..].chunks(8).enumerate() {
        let w = pattern::word(seed, i as u64 * 8).to_le_bytes();
        if let Some(j) = chunk.iter().zip(w).position(|(a, b)| *a != b) {
            return Err(FrameError::Payload(HEADER_BYTES + i * 8 + j));
        }
    }
    Ok(FrameInfo { seq, stamp })
}

/// Turns a frame around in place, as every reflector does: the two MACs swap.
pub fn reflect(frame: &mut [u8]) {
    if frame.len() >= 12 {
        let (dst, rest) = frame.split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    #[test]
    fn a_reflected_frame_passes_the_check() {
        // 1514 - 30 is not a multiple of 8: the tail is written and checked too.
        let mut f = [0u8; 1514];
        write(&mut f, PEER, GUEST, 42, 1234, 7);
        assert_ne!(f[1510..], [0u8; 4]);
        reflect(&mut f);
        assert_eq!(&f[0..6], &GUEST);
        assert_eq!(&f[6..12], &PEER);
        let mut tail = f;
        tail[1513] ^= 0x80;
        assert_eq!(check(&tail, None, 7), Err(FrameError::Payload(1513)));
        assert_eq!(
            check(&f, Some(1514), 7),
            Ok(FrameInfo {
                seq: 42,
                stamp: 1234
            })
        );
    }

    #[test]
    fn damage_length_and_foreign_frames_are_caught() {
        let mut f = [0u8; 64];
        write(&mut f, BROADCAST, GUEST, 1, 0, 7);
        assert_eq!(check(&f, Some(60), 7), Err(FrameError::Length));
        assert_eq!(check(&f[..20], None, 7), Err(FrameError::Length));
        assert!(matches!(
            check(&f, Some(64), 8),
            Err(FrameError::Payload(30..=37))
        ));
        let mut bad = f;
        bad[50] ^= 1;
        assert_eq!(check(&bad, None, 7), Err(FrameError::Payload(50)));
        let mut ipv4 = f;
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(check(&ipv4, None, 7), Err(FrameError::EtherType));
    }

    #[test]
    fn a_patched_header_is_what_the_receiver_reads() {
        let mut f = [0u8; 64];
        write(&mut f, BROADCAST, GUEST, 0, 0, 7);
        set_header(&mut f, 9, 99);
        assert_eq!(check(&f, None, 7), Ok(FrameInfo { seq: 9, stamp: 99 }));
    }

    #[test]
    fn macs_round_trip_through_u64() {
        assert_eq!(mac_from_u64(mac_to_u64(GUEST)), GUEST);
        assert_eq!(mac_to_u64(GUEST) & 0xff, 0x52);
        assert_eq!(NetWorkload::from_name("rr"), Some(NetWorkload::RoundTrip));
        assert_eq!(NetDevice::from_raw(2), Some(NetDevice::VirtioNet));
        assert_eq!(NetDevice::from_raw(3), None);
    }
}
