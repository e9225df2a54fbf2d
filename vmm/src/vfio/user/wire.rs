//! vfio-user messages as bytes: the 16-byte header, the request bodies this client sends and
//! the replies it reads. Pure functions, so every check on what the server sends is tested
//! without a socket. Multi-byte fields are little-endian (x86 hosts; the protocol uses the
//! host's order).

use std::mem::size_of;

use vfio_bindings::bindings::vfio::{vfio_region_info, VFIO_REGION_INFO_CAP_SPARSE_MMAP};

pub const HEADER_SIZE: usize = 16;
/// The largest reply accepted: a region read of up to this client's transfer size plus room.
pub const MAX_MESSAGE: u32 = 1 << 20;

pub const FLAG_REPLY: u32 = 1;
pub const FLAG_ERROR: u32 = 1 << 5;

/// `vfio_region_info`: argsz, flags, index, cap_offset, size, offset.
const REGION_INFO_SIZE: usize = size_of::<vfio_region_info>();
/// Room asked for capabilities: plenty for a handful of sparse areas.
pub const REGION_INFO_ARGSZ: u32 = (REGION_INFO_SIZE + 512) as u32;
/// Sparse areas accepted per region; more is a confused server.
const MAX_AREAS: usize = 64;
/// Capabilities followed per region before giving up on a looping list.
const MAX_CAPS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    Version = 1,
    DmaMap = 2,
    DmaUnmap = 3,
    DeviceGetInfo = 4,
    DeviceGetRegionInfo = 5,
    GetIrqInfo = 7,
    SetIrqs = 8,
    RegionRead = 9,
    RegionWrite = 10,
    DeviceReset = 13,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{what}: {len} bytes is too short")]
    Short { what: &'static str, len: usize },
    #[error("reply size {0} is out of range")]
    Size(u32),
    #[error("reply {got_id} to {got:#x} does not answer request {want_id} ({want:?})")]
    Mismatch {
        want: Command,
        want_id: u16,
        got: u16,
        got_id: u16,
    },
    #[error("a request (flags {0:#x}) arrived where a reply was expected")]
    NotAReply(u32),
    #[error("the server's capabilities are not JSON")]
    Json,
    #[error("region {index}: capability at {offset:#x} lies outside the {len}-byte reply")]
    CapOutside { index: u32, offset: u32, len: usize },
    #[error("region {index}: the capability list loops or is too long")]
    CapLoop { index: u32 },
    #[error("region {index}: {count} sparse areas do not fit the reply")]
    AreaCount { index: u32, count: u32 },
    #[error(
        "region {index}: sparse area {offset:#x}+{size:#x} is outside the {region:#x}-byte region"
    )]
    AreaOutside {
        index: u32,
        offset: u64,
        size: u64,
        region: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub command: u16,
    /// The whole message, header included.
    pub size: u32,
    pub flags: u32,
    pub error: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_SIZE]) -> Header {
        Header {
            id: u16_at(b, 0),
            command: u16_at(b, 2),
            size: u32_at(b, 4),
            flags: u32_at(b, 8),
            error: u32_at(b, 12),
        }
    }

    /// Checks that this header answers request `id` of `command`, and returns the size of the
    /// payload that follows it. An error reply is a valid answer (the caller checks
    /// [`FLAG_ERROR`]).
    pub fn check_reply(&self, command: Command, id: u16) -> Result<usize, Error> {
        if self.flags & FLAG_REPLY == 0 {
            return Err(Error::NotAReply(self.flags));
        }
        if self.id != id || self.command != command as u16 {
            return Err(Error::Mismatch {
                want: command,
                want_id: id,
                got: self.command,
                got_id: self.id,
            });
        }
        if self.size < HEADER_SIZE as u32 || self.size > MAX_MESSAGE {
            return Err(Error::Size(self.size));
        }
        Ok(self.size as usize - HEADER_SIZE)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn need(what: &'static str, b: &[u8], len: usize) -> Result<(), Error> {
    match b.len() >= len {
        true => Ok(()),
        false => Err(Error::Short { what, len: b.len() }),
    }
}

/// A request: header plus `body`.
pub fn request(command: Command, id: u16, body: &[u8]) -> Vec<u8> {
    let header = Header {
        id,
        command: command as u16,
        size: (HEADER_SIZE + body.len()) as u32,
        flags: 0,
        error: 0,
    };
    let mut m = Vec::with_capacity(HEADER_SIZE + body.len());
    m.extend_from_slice(&header.encode());
    m.extend_from_slice(body);
    m
}

/// VERSION: major 0, minor 1, and our capabilities as a NUL-terminated JSON string. We take
/// at most one file descriptor per reply (a region's mmap fd).
pub fn version() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(br#"{"capabilities":{"max_msg_fds":1,"max_data_xfer_size":1048576}}"#);
    b.push(0);
    b
}

/// The server's version reply: the most file descriptors it takes in one message.
pub fn parse_version(b: &[u8]) -> Result<u32, Error> {
    need("VERSION reply", b, 4)?;
    let json = &b[4..];
    let json = json.strip_suffix(&[0]).unwrap_or(json);
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|_| Error::Json)?;
    // The protocol's default when the server names no limit.
    let fds = v["capabilities"]["max_msg_fds"].as_u64().unwrap_or(1);
    Ok(u32::try_from(fds).unwrap_or(u32::MAX).max(1))
}

/// DMA_MAP of `size` bytes of the attached file from `offset`, at IOVA `address`.
pub fn dma_map(flags: u32, offset: u64, address: u64, size: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&32u32.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&address.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b
}

pub fn dma_unmap(address: u64, size: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&24u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&address.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b
}

pub fn device_get_info() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0..4].copy_from_slice(&16u32.to_le_bytes());
    b
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

pub fn parse_device_info(b: &[u8]) -> Result<DeviceInfo, Error> {
    need("DEVICE_GET_INFO reply", b, 16)?;
    Ok(DeviceInfo {
        flags: u32_at(b, 4),
        num_regions: u32_at(b, 8),
        num_irqs: u32_at(b, 12),
    })
}

pub fn region_info(index: u32, argsz: u32) -> Vec<u8> {
    let mut b = vec![0u8; REGION_INFO_SIZE];
    b[0..4].copy_from_slice(&argsz.to_le_bytes());
    b[8..12].copy_from_slice(&index.to_le_bytes());
    b
}

/// A region as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionReply {
    /// The size the full reply needs; larger than what was asked: ask again.
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub size: u64,
    /// Offset of the region's first byte in the mmap file.
    pub offset: u64,
    /// Sparse mmap areas (offset, size), checked to lie inside the region.
    pub areas: Vec<(u64, u64)>,
}

/// Parses a DEVICE_GET_REGION_INFO reply: `vfio_region_info` and the capability list after
/// it, whose offsets count from the start of `vfio_region_info`.
pub fn parse_region_info(b: &[u8]) -> Result<RegionReply, Error> {
    need("DEVICE_GET_REGION_INFO reply", b, REGION_INFO_SIZE)?;
    let mut r = RegionReply {
        argsz: u32_at(b, 0),
        flags: u32_at(b, 4),
        index: u32_at(b, 8),
        size: u64_at(b, 16),
        offset: u64_at(b, 24),
        areas: Vec::new(),
    };
    let index = r.index;
    let mut next = u32_at(b, 12);
    // The capabilities were not sent (too little room asked): the caller asks again.
    if r.argsz as usize > b.len() {
        return Ok(r);
    }
    let mut seen = 0;
    while next != 0 {
        seen += 1;
        let at = next as usize;
        if seen > MAX_CAPS || at < REGION_INFO_SIZE {
            return Err(Error::CapLoop { index });
        }
        let outside = || Error::CapOutside {
            index,
            offset: next,
            len: b.len(),
        };
        let cap = b.get(at..).filter(|c| c.len() >= 8).ok_or_else(outside)?;
        let id = u16_at(cap, 0);
        let following = u32_at(cap, 4);
        if id == VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16 {
            r.areas.extend(sparse_areas(index, r.size, cap)?);
        }
        if following != 0 && following <= next {
            return Err(Error::CapLoop { index });
        }
        next = following;
    }
    Ok(r)
}

/// The areas of one sparse mmap capability (`cap` starts at its header).
fn sparse_areas(index: u32, region: u64, cap: &[u8]) -> Result<Vec<(u64, u64)>, Error> {
    need("sparse mmap capability", cap, 16)?;
    let count = u32_at(cap, 8);
    let bytes = (count as usize).checked_mul(16);
    if count as usize > MAX_AREAS || bytes.is_none_or(|n| cap.len() < 16 + n) {
        return Err(Error::AreaCount { index, count });
    }
    (0..count as usize)
        .map(|i| {
            let (offset, size) = (u64_at(cap, 16 + 16 * i), u64_at(cap, 24 + 16 * i));
            match offset.checked_add(size) {
                Some(end) if end <= region && size > 0 => Ok((offset, size)),
                _ => Err(Error::AreaOutside {
                    index,
                    offset,
                    size,
                    region,
                }),
            }
        })
        .collect()
}

pub fn irq_info(index: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0..4].copy_from_slice(&16u32.to_le_bytes());
    b[8..12].copy_from_slice(&index.to_le_bytes());
    b
}

/// (flags, count) of an interrupt index.
pub fn parse_irq_info(b: &[u8]) -> Result<(u32, u32), Error> {
    need("GET_IRQ_INFO reply", b, 16)?;
    Ok((u32_at(b, 4), u32_at(b, 12)))
}

pub fn set_irqs(flags: u32, index: u32, start: u32, count: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    for v in [20, flags, index, start, count] {
        b.extend_from_slice(&u32::to_le_bytes(v));
    }
    b
}

/// REGION_READ and REGION_WRITE start alike: offset, region, count; a write's data follows.
pub fn region_access(region: u32, offset: u64, count: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&region.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// The data of a REGION_READ reply, which must be exactly `count` bytes.
pub fn region_read_data(b: &[u8], count: usize) -> Result<&[u8], Error> {
    need("REGION_READ reply", b, 16 + count)?;
    Ok(&b[16..16 + count])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region_reply(size: u64, caps: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; REGION_INFO_SIZE];
        let argsz = (REGION_INFO_SIZE + caps.len()) as u32;
        b[0..4].copy_from_slice(&argsz.to_le_bytes());
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        if !caps.is_empty() {
            b[12..16].copy_from_slice(&(REGION_INFO_SIZE as u32).to_le_bytes());
        }
        b[16..24].copy_from_slice(&size.to_le_bytes());
        b.extend_from_slice(caps);
        b
    }

    fn sparse_cap(next: u32, count: u32, areas: &[(u64, u64)]) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16).to_le_bytes());
        c.extend_from_slice(&1u16.to_le_bytes());
        c.extend_from_slice(&next.to_le_bytes());
        c.extend_from_slice(&count.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        for (o, s) in areas {
            c.extend_from_slice(&o.to_le_bytes());
            c.extend_from_slice(&s.to_le_bytes());
        }
        c
    }

    #[test]
    fn header_round_trip_and_reply_checks() {
        let h = Header {
            id: 7,
            command: Command::RegionRead as u16,
            size: 40,
            flags: FLAG_REPLY,
            error: 0,
        };
        assert_eq!(Header::decode(&h.encode()), h);
        assert_eq!(h.check_reply(Command::RegionRead, 7), Ok(24));
        assert!(matches!(
            h.check_reply(Command::RegionRead, 8),
            Err(Error::Mismatch { .. })
        ));
        assert!(matches!(
            h.check_reply(Command::RegionWrite, 7),
            Err(Error::Mismatch { .. })
        ));
        let request = Header { flags: 0, ..h };
        assert_eq!(
            request.check_reply(Command::RegionRead, 7),
            Err(Error::NotAReply(0))
        );
        for size in [15, MAX_MESSAGE + 1] {
            let bad = Header { size, ..h };
            assert_eq!(
                bad.check_reply(Command::RegionRead, 7),
                Err(Error::Size(size))
            );
        }
    }

    #[test]
    fn requests_carry_their_size() {
        let m = request(Command::DmaMap, 3, &dma_map(3, 0x10, 0x2000, 0x1000));
        let mut h = [0u8; HEADER_SIZE];
        h.copy_from_slice(&m[..HEADER_SIZE]);
        let h = Header::decode(&h);
        assert_eq!((h.id, h.command, h.size), (3, 2, 48));
        assert_eq!(u32_at(&m, 16), 32, "argsz");
        assert_eq!(u32_at(&m, 20), 3, "READ | WRITE");
        assert_eq!(request(Command::DeviceReset, 1, &[]).len(), HEADER_SIZE);
        assert_eq!(set_irqs(0x24, 2, 0, 16).len(), 20);
        assert_eq!(region_access(0, 0x10, 4, &[1, 2, 3, 4]).len(), 20);
    }

    #[test]
    fn version_is_nul_terminated_json_and_the_reply_names_max_fds() {
        let v = version();
        assert_eq!(*v.last().unwrap(), 0);
        let mut reply = vec![0, 0, 0, 0];
        reply.extend_from_slice(br#"{"capabilities":{"max_msg_fds":16}}"#);
        reply.push(0);
        assert_eq!(parse_version(&reply), Ok(16));
        let mut reply = vec![0, 0, 1, 0];
        reply.extend_from_slice(b"{}\0");
        assert_eq!(parse_version(&reply), Ok(1), "protocol default");
        assert_eq!(parse_version(&[0, 0, 0, 0, b'x', 0]), Err(Error::Json));
        assert!(matches!(parse_version(&[0]), Err(Error::Short { .. })));
    }

    #[test]
    fn region_info_with_sparse_areas() {
        let r = parse_region_info(&region_reply(
            0x4000,
            &sparse_cap(0, 2, &[(0x1000, 0x1000), (0x3000, 0x1000)]),
        ))
        .unwrap();
        assert_eq!(r.size, 0x4000);
        assert_eq!(r.areas, [(0x1000, 0x1000), (0x3000, 0x1000)]);
        let plain = parse_region_info(&region_reply(0x100, &[])).unwrap();
        assert!(plain.areas.is_empty());
    }

    #[test]
    fn malformed_capabilities_are_refused() {
        // More areas than the reply holds.
        let e = parse_region_info(&region_reply(0x4000, &sparse_cap(0, 3, &[(0, 0x1000)])));
        assert!(matches!(e, Err(Error::AreaCount { count: 3, .. })), "{e:?}");
        let e = parse_region_info(&region_reply(
            0x4000,
            &sparse_cap(0, u32::MAX, &[(0, 0x1000)]),
        ));
        assert!(matches!(e, Err(Error::AreaCount { .. })), "{e:?}");
        // An area past the region's end, or wrapping.
        for area in [(0x3000, 0x2000), (u64::MAX, 2), (0, 0)] {
            let e = parse_region_info(&region_reply(0x4000, &sparse_cap(0, 1, &[area])));
            assert!(matches!(e, Err(Error::AreaOutside { .. })), "{area:?}");
        }
        // A list that points at itself.
        let self_loop = sparse_cap(REGION_INFO_SIZE as u32, 1, &[(0, 0x1000)]);
        assert!(matches!(
            parse_region_info(&region_reply(0x4000, &self_loop)),
            Err(Error::CapLoop { .. })
        ));
        // A pointer past the end of the reply.
        let mut b = region_reply(0x4000, &sparse_cap(0, 1, &[(0, 0x1000)]));
        b[12..16].copy_from_slice(&0x400u32.to_le_bytes());
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            parse_region_info(&b),
            Err(Error::CapOutside { .. })
        ));
        assert!(matches!(
            parse_region_info(&[0; 8]),
            Err(Error::Short { .. })
        ));
    }

    #[test]
    fn a_reply_without_room_for_its_capabilities_asks_for_more() {
        let mut b = region_reply(0x4000, &sparse_cap(0, 1, &[(0x1000, 0x1000)]));
        b.truncate(REGION_INFO_SIZE);
        let r = parse_region_info(&b).unwrap();
        assert!(r.argsz as usize > REGION_INFO_SIZE);
        assert!(r.areas.is_empty());
    }

    #[test]
    fn small_replies_are_errors_not_panics() {
        assert!(parse_device_info(&[0; 15]).is_err());
        assert!(parse_irq_info(&[0; 3]).is_err());
        assert!(region_read_data(&[0; 19], 4).is_err());
        let mut r = region_access(0, 0, 4, &[9, 8, 7, 6]);
        assert_eq!(region_read_data(&r, 4).unwrap(), [9, 8, 7, 6]);
        r.push(1);
        assert_eq!(region_read_data(&r, 4).unwrap(), [9, 8, 7, 6]);
    }
}
