//! Turns a walked descriptor chain into a block request, checking everything the driver
//! controls.
//!
//! Layout (any layout, as VIRTIO_F_VERSION_1 requires): the chain is a device-readable byte
//! stream followed by a device-writable one. The readable stream starts with the 16-byte
//! header; the status byte is the last byte of the final descriptor, which must be writable.
//! Everything in between is data. A chain without a usable status byte cannot be answered and
//! is completed with used length 0; any other defect is answered with IOERR or UNSUPP.

use iommu::{Access, AddressSpace, DmaSlice};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};

use super::chain::Desc;
use super::config::{BlkConfig, ID_BYTES, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, SECTOR_SHIFT};
use crate::engine::BlockOp;

pub const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
pub const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
pub const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

const HEADER_LEN: u64 = 16;
const SEGMENT_LEN: u64 = 16;

/// A checked request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The status byte, checked writable.
    pub status: DmaSlice,
    pub op: Op,
}

/// One discard or write-zeroes range, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// `Discard` or `WriteZeroes` (write-zeroes with UNMAP is a discard: both read back zero).
    pub op: BlockOp,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    Read {
        offset: u64,
        segments: Vec<DmaSlice>,
    },
    Write {
        offset: u64,
        segments: Vec<DmaSlice>,
    },
    Flush,
    /// The serial goes into `segments` (at most [`ID_BYTES`] of them are written).
    GetId {
        segments: Vec<DmaSlice>,
    },
    Ranges(Vec<Range>),
}

impl Op {
    /// Bytes the device writes into guest data buffers when the request succeeds (the used
    /// length is this plus the status byte).
    pub fn written(&self) -> u32 {
        let sum = |s: &[DmaSlice]| s.iter().map(|s| s.len() as u64).sum::<u64>();
        let n = match self {
            Op::Read { segments, .. } => sum(segments),
            Op::GetId { segments } => sum(segments).min(ID_BYTES as u64),
            _ => 0,
        };
        // Chains are at most 4 GiB (checked by the walk).
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// A chain that is answered without I/O.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Where the status goes; `None` if the chain has no usable status byte.
    pub status: Option<DmaSlice>,
    pub error: RequestError,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("empty chain")]
    Empty,
    #[error("the last descriptor is not device-writable")]
    StatusNotWritable,
    #[error("the status descriptor is empty")]
    StatusEmpty,
    #[error("status byte at {0:#x} is not in guest memory")]
    StatusUnmapped(u64),
    #[error("device-readable descriptor after a device-writable one")]
    ReadAfterWrite,
    #[error("the header is in a device-writable descriptor")]
    HeaderWritable,
    #[error("header of {0} bytes, need 16")]
    HeaderShort(u64),
    #[error("buffer {addr:#x}+{len:#x} is not in guest memory")]
    Unmapped { addr: u64, len: u64 },
    #[error("request type {0} has data in the wrong direction")]
    WrongDirection(u32),
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(u64),
    #[error("sectors {sector}+{count} are beyond the capacity")]
    OutOfRange { sector: u64, count: u64 },
    #[error("the device is read-only")]
    ReadOnly,
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("{0} bytes of discard/write-zeroes payload are not whole 16-byte segments")]
    BadSegments(u64),
    #[error("{0} segments exceed the limit of {MAX_DISCARD_SEG}")]
    TooManySegments(u64),
    #[error("a segment of {0} sectors exceeds the limit of {MAX_DISCARD_SECTORS}")]
    SegmentTooLarge(u32),
    #[error("segment flags {0:#x} not supported")]
    BadFlags(u32),
}

impl RequestError {
    /// The status byte the driver gets.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::BadFlags(_) => S_UNSUPP,
            _ => S_IOERR,
        }
    }
}

/// A guest byte range.
type Extent = (u64, u64);

/// Checks the chain `descs` against the device `dev`, translating every buffer through `space`.
pub fn parse(descs: &[Desc], space: &AddressSpace, dev: &BlkConfig) -> Result<Request, Rejected> {
    let status = status_byte(descs, space).map_err(|error| Rejected {
        status: None,
        error,
    })?;
    match body(descs, space, dev) {
        Ok(op) => Ok(Request { status, op }),
        Err(error) => Err(Rejected {
            status: Some(status),
            error,
        }),
    }
}

fn status_byte(descs: &[Desc], space: &AddressSpace) -> Result<DmaSlice, RequestError> {
    let last = descs.last().ok_or(RequestError::Empty)?;
    if !last.writable {
        return Err(RequestError::StatusNotWritable);
    }
    if last.len == 0 {
        return Err(RequestError::StatusEmpty);
    }
    let at = last
        .addr
        .checked_add(u64::from(last.len) - 1)
        .ok_or(RequestError::StatusUnmapped(last.addr))?;
    space
        .translate(at, 1, Access::Write)
        .map_err(|_| RequestError::StatusUnmapped(at))
}

fn body(descs: &[Desc], space: &AddressSpace, dev: &BlkConfig) -> Result<Op, RequestError> {
    let split = descs.iter().position(|d| d.writable).unwrap_or(descs.len());
    if descs[split..].iter().any(|d| !d.writable) {
        return Err(RequestError::ReadAfterWrite);
    }
    if split == 0 {
        return Err(RequestError::HeaderWritable);
    }
    // Buffers that wrap the address space are in no memory region.
    if let Some(d) = descs
        .iter()
        .find(|d| d.addr.checked_add(u64::from(d.len)).is_none())
    {
        return Err(RequestError::Unmapped {
            addr: d.addr,
            len: u64::from(d.len),
        });
    }
    let readable: Vec<Extent> = descs[..split]
        .iter()
        .map(|d| (d.addr, u64::from(d.len)))
        .collect();
    // The status byte is not data.
    let mut writable: Vec<Extent> = descs[split..]
        .iter()
        .map(|d| (d.addr, u64::from(d.len)))
        .collect();
    if let Some(last) = writable.last_mut() {
        last.1 -= 1;
    }

    let readable_len = total(&readable);
    if readable_len < HEADER_LEN {
        return Err(RequestError::HeaderShort(readable_len));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    read_bytes(space, &readable, &mut h)?;
    let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let sector = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    let data_out = skip(&readable, HEADER_LEN);
    let (out_len, in_len) = (total(&data_out), total(&writable));

    match kind {
        VIRTIO_BLK_T_IN => {
            if out_len != 0 {
                return Err(RequestError::WrongDirection(kind));
            }
            let offset = check_io(dev, sector, in_len)?;
            Ok(Op::Read {
                offset,
                segments: slices(space, &writable, Access::Write)?,
            })
        }
        VIRTIO_BLK_T_OUT => {
            if in_len != 0 {
                return Err(RequestError::WrongDirection(kind));
            }
            if dev.read_only {
                return Err(RequestError::ReadOnly);
            }
            let offset = check_io(dev, sector, out_len)?;
            Ok(Op::Write {
                offset,
                segments: slices(space, &data_out, Access::Read)?,
            })
        }
        VIRTIO_BLK_T_FLUSH => Ok(Op::Flush),
        VIRTIO_BLK_T_GET_ID => {
            if out_len != 0 {
                return Err(RequestError::WrongDirection(kind));
            }
            Ok(Op::GetId {
                segments: slices(space, &writable, Access::Write)?,
            })
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            if in_len != 0 {
                return Err(RequestError::WrongDirection(kind));
            }
            if dev.read_only {
                return Err(RequestError::ReadOnly);
            }
            ranges(space, dev, kind, &data_out).map(Op::Ranges)
        }
        _ => Err(RequestError::Unsupported(kind)),
    }
}

/// The byte offset of a `len`-byte transfer at `sector`, if it is whole sectors inside the
/// device.
fn check_io(dev: &BlkConfig, sector: u64, len: u64) -> Result<u64, RequestError> {
    if !len.is_multiple_of(1 << SECTOR_SHIFT) {
        return Err(RequestError::Unaligned(len));
    }
    let count = len >> SECTOR_SHIFT;
    match sector.checked_add(count) {
        Some(end) if end <= dev.sectors() => Ok(sector << SECTOR_SHIFT),
        _ => Err(RequestError::OutOfRange { sector, count }),
    }
}

fn ranges(
    space: &AddressSpace,
    dev: &BlkConfig,
    kind: u32,
    payload: &[Extent],
) -> Result<Vec<Range>, RequestError> {
    let len = total(payload);
    if len == 0 || !len.is_multiple_of(SEGMENT_LEN) {
        return Err(RequestError::BadSegments(len));
    }
    let count = len / SEGMENT_LEN;
    if count > u64::from(MAX_DISCARD_SEG) {
        return Err(RequestError::TooManySegments(count));
    }
    let mut raw = vec![0u8; len as usize];
    read_bytes(space, payload, &mut raw)?;
    let known_flags = if kind == VIRTIO_BLK_T_WRITE_ZEROES {
        VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
    } else {
        0
    };
    let mut out = Vec::with_capacity(count as usize);
    for s in raw.chunks_exact(SEGMENT_LEN as usize) {
        let sector = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
        let sectors = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
        let flags = u32::from_le_bytes([s[12], s[13], s[14], s[15]]);
        if flags & !known_flags != 0 {
            return Err(RequestError::BadFlags(flags));
        }
        if sectors > MAX_DISCARD_SECTORS {
            return Err(RequestError::SegmentTooLarge(sectors));
        }
        let offset = check_io(dev, sector, u64::from(sectors) << SECTOR_SHIFT)?;
        let op = if kind == VIRTIO_BLK_T_DISCARD || flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0
        {
            BlockOp::Discard
        } else {
            BlockOp::WriteZeroes
        };
        if sectors != 0 {
            out.push(Range {
                op,
                offset,
                len: u64::from(sectors) << SECTOR_SHIFT,
            });
        }
    }
    Ok(out)
}

fn total(extents: &[Extent]) -> u64 {
    extents.iter().map(|e| e.1).sum()
}

/// `extents` without their first `n` bytes.
fn skip(extents: &[Extent], mut n: u64) -> Vec<Extent> {
    let mut out = Vec::with_capacity(extents.len());
    for &(addr, len) in extents {
        if n >= len {
            n -= len;
            continue;
        }
        out.push((addr + n, len - n));
        n = 0;
    }
    out
}

/// Checked host slices for `extents`. A buffer may span adjacent memory regions (they are
/// separate mappings on the host), so it is cut at region boundaries.
fn slices(
    space: &AddressSpace,
    extents: &[Extent],
    access: Access,
) -> Result<Vec<DmaSlice>, RequestError> {
    let mut out = Vec::with_capacity(extents.len());
    for &(addr, len) in extents.iter().filter(|e| e.1 != 0) {
        translate_split(space, addr, len, access, &mut out)?;
    }
    Ok(out)
}

fn translate_split(
    space: &AddressSpace,
    addr: u64,
    len: u64,
    access: Access,
    out: &mut Vec<DmaSlice>,
) -> Result<(), RequestError> {
    let unmapped = || RequestError::Unmapped { addr, len };
    // The common case: one region holds the whole buffer.
    if let Ok(s) = space.translate(addr, len as usize, access) {
        out.push(s);
        return Ok(());
    }
    let (mut at, mut left) = (addr, len);
    while left > 0 {
        let region = space
            .regions()
            .find(|r| r.iova() <= at && at - r.iova() < r.len())
            .ok_or_else(unmapped)?;
        let chunk = left.min(region.iova() + region.len() - at);
        let s = space
            .translate(at, chunk as usize, access)
            .map_err(|_| unmapped())?;
        out.push(s);
        at += chunk;
        left -= chunk;
    }
    Ok(())
}

/// Copies the first `buf.len()` bytes of `extents` out of guest memory.
fn read_bytes(
    space: &AddressSpace,
    extents: &[Extent],
    buf: &mut [u8],
) -> Result<(), RequestError> {
    let mut done = 0;
    for &(addr, len) in extents {
        if done == buf.len() {
            break;
        }
        let n = (buf.len() - done).min(len as usize);
        let mut pieces = Vec::new();
        translate_split(space, addr, n as u64, Access::Read, &mut pieces)?;
        for p in pieces {
            // SAFETY: `p` was translated for reading and stays mapped while `space` is
            // borrowed; `buf` is ours and has room for `p.len()` more bytes (`n` in total).
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), buf[done..].as_mut_ptr(), p.len()) };
            done += p.len();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{header, range, Mem};
    use super::*;

    const T_IN: u32 = VIRTIO_BLK_T_IN;
    const T_OUT: u32 = VIRTIO_BLK_T_OUT;

    fn dev(read_only: bool) -> BlkConfig {
        BlkConfig {
            capacity: 1 << 20,
            block_size: 512,
            read_only,
            num_queues: 1,
            queue_size: 128,
            serial: "s".into(),
        }
    }

    fn r(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            writable: false,
        }
    }

    fn w(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            writable: true,
        }
    }

    /// Header at 0x100, status at 0x200.
    fn with_header(m: &Mem, kind: u32, sector: u64) {
        m.write(0x100, &header(kind, sector));
    }

    fn parse_ok(m: &Mem, descs: &[Desc], ro: bool) -> Request {
        parse(descs, &m.space(), &dev(ro)).unwrap()
    }

    fn error(m: &Mem, descs: &[Desc], ro: bool) -> (bool, RequestError) {
        let e = parse(descs, &m.space(), &dev(ro)).unwrap_err();
        (e.status.is_some(), e.error)
    }

    fn ptr(m: &Mem, addr: u64) -> usize {
        m.space().translate(addr, 1, Access::Read).unwrap().as_ptr() as usize
    }

    #[test]
    fn read_with_split_buffers() {
        let m = Mem::new();
        with_header(&m, T_IN, 8);
        let req = parse_ok(
            &m,
            &[r(0x100, 16), w(0x1000, 512), w(0x3000, 1024), w(0x200, 1)],
            false,
        );
        assert_eq!(req.status.as_ptr() as usize, ptr(&m, 0x200));
        let Op::Read { offset, segments } = &req.op else {
            panic!("{:?}", req.op)
        };
        assert_eq!(*offset, 4096);
        let got: Vec<_> = segments
            .iter()
            .map(|s| (s.as_ptr() as usize, s.len()))
            .collect();
        assert_eq!(got, vec![(ptr(&m, 0x1000), 512), (ptr(&m, 0x3000), 1024)]);
        assert_eq!(req.op.written(), 1536);
    }

    #[test]
    fn any_layout_header_data_and_status_share_descriptors() {
        let m = Mem::new();
        // Header and data in one readable descriptor; status at the end of a 513-byte
        // writable one is not allowed for a write (writable data), so use a 1-byte status.
        m.write(0x1000, &header(T_OUT, 1));
        let req = parse_ok(&m, &[r(0x1000, 16 + 1024), w(0x200, 1)], false);
        let Op::Write { offset, segments } = &req.op else {
            panic!()
        };
        assert_eq!((*offset, segments.len()), (512, 1));
        assert_eq!(segments[0].as_ptr() as usize, ptr(&m, 0x1010));
        // A read whose status shares the last data descriptor.
        with_header(&m, T_IN, 0);
        let req = parse_ok(&m, &[r(0x100, 16), w(0x2000, 513)], false);
        assert_eq!(req.status.as_ptr() as usize, ptr(&m, 0x2200));
        assert_eq!(req.op.written(), 512);
        // A header split over two descriptors.
        m.write(0x300, &header(T_IN, 3)[..10]);
        m.write(0x400, &header(T_IN, 3)[10..]);
        let req = parse_ok(
            &m,
            &[r(0x300, 10), r(0x400, 6), w(0x2000, 512), w(0x200, 1)],
            false,
        );
        assert!(matches!(req.op, Op::Read { offset: 1536, .. }));
    }

    #[test]
    fn chains_without_a_usable_status_byte_get_no_status() {
        let m = Mem::new();
        with_header(&m, T_IN, 0);
        for (descs, want) in [
            (vec![], RequestError::Empty),
            (vec![r(0x100, 16)], RequestError::StatusNotWritable),
            (vec![r(0x100, 16), w(0x200, 0)], RequestError::StatusEmpty),
            (
                vec![r(0x100, 16), w(0x10000, 1)],
                RequestError::StatusUnmapped(0x10000),
            ),
            (
                vec![r(0x100, 16), w(u64::MAX, 2)],
                RequestError::StatusUnmapped(u64::MAX),
            ),
        ] {
            assert_eq!(error(&m, &descs, false), (false, want));
        }
    }

    #[test]
    fn malformed_chains_get_ioerr() {
        let m = Mem::new();
        with_header(&m, T_IN, 0);
        let cases = [
            (
                vec![w(0x100, 16), w(0x200, 1)],
                RequestError::HeaderWritable,
            ),
            (vec![r(0x100, 8), w(0x200, 1)], RequestError::HeaderShort(8)),
            (
                vec![r(0x100, 16), w(0x1000, 512), r(0x2000, 512), w(0x200, 1)],
                RequestError::ReadAfterWrite,
            ),
            (
                vec![r(0x100, 16), r(0x1000, 512), w(0x200, 1)],
                RequestError::WrongDirection(T_IN),
            ),
            (
                vec![r(0x100, 16), w(0x1000, 100), w(0x200, 1)],
                RequestError::Unaligned(100),
            ),
            (
                vec![r(0x100, 16), w(0xff00, 512), w(0x200, 1)],
                RequestError::Unmapped {
                    addr: 0xff00,
                    len: 512,
                },
            ),
            (
                vec![r(0x20000, 16), w(0x200, 1)],
                RequestError::Unmapped {
                    addr: 0x20000,
                    len: 16,
                },
            ),
        ];
        for (descs, want) in cases {
            assert_eq!(error(&m, &descs, false), (true, want.clone()), "{want}");
            assert_eq!(want.status(), S_IOERR);
        }
    }

    #[test]
    fn writes_need_readable_data_and_a_writable_device() {
        let m = Mem::new();
        with_header(&m, T_OUT, 0);
        assert_eq!(
            error(&m, &[r(0x100, 16), w(0x1000, 512), w(0x200, 1)], false),
            (true, RequestError::WrongDirection(T_OUT))
        );
        let chain = [r(0x100, 16), r(0x1000, 512), w(0x200, 1)];
        assert_eq!(error(&m, &chain, true), (true, RequestError::ReadOnly));
        assert!(matches!(
            parse_ok(&m, &chain, false).op,
            Op::Write { offset: 0, .. }
        ));
    }

    #[test]
    fn transfers_must_stay_inside_the_device() {
        let m = Mem::new();
        // 2048 sectors: the last one is readable, one past it is not.
        with_header(&m, T_IN, 2047);
        let chain = [r(0x100, 16), w(0x1000, 512), w(0x200, 1)];
        assert!(parse(&chain, &m.space(), &dev(false)).is_ok());
        with_header(&m, T_IN, 2048);
        assert_eq!(
            error(&m, &chain, false),
            (
                true,
                RequestError::OutOfRange {
                    sector: 2048,
                    count: 1
                }
            )
        );
        with_header(&m, T_IN, u64::MAX);
        assert!(matches!(
            error(&m, &chain, false),
            (true, RequestError::OutOfRange { .. })
        ));
    }

    #[test]
    fn unknown_types_are_unsupported_and_flush_and_get_id_parse() {
        let m = Mem::new();
        with_header(&m, 99, 0);
        let (has_status, e) = error(&m, &[r(0x100, 16), w(0x200, 1)], false);
        assert_eq!((has_status, e.status()), (true, S_UNSUPP));
        with_header(&m, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            parse_ok(&m, &[r(0x100, 16), w(0x200, 1)], true).op,
            Op::Flush
        );
        with_header(&m, VIRTIO_BLK_T_GET_ID, 0);
        let req = parse_ok(&m, &[r(0x100, 16), w(0x1000, 64), w(0x200, 1)], true);
        assert_eq!(req.op.written(), 20);
        let req = parse_ok(&m, &[r(0x100, 16), w(0x1000, 8), w(0x200, 1)], true);
        assert_eq!(req.op.written(), 8);
    }

    #[test]
    fn discard_and_write_zeroes_ranges() {
        let m = Mem::new();
        let chain = [r(0x100, 16), r(0x1000, 48), w(0x200, 1)];
        with_header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        m.write(0x1000, &range(0, 8, 0));
        m.write(0x1010, &range(8, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP));
        m.write(0x1020, &range(100, 0, 0));
        let Op::Ranges(got) = parse_ok(&m, &chain, false).op else {
            panic!()
        };
        assert_eq!(
            got,
            vec![
                Range {
                    op: BlockOp::WriteZeroes,
                    offset: 0,
                    len: 4096
                },
                Range {
                    op: BlockOp::Discard,
                    offset: 4096,
                    len: 4096
                },
            ]
        );
        assert_eq!(error(&m, &chain, true), (true, RequestError::ReadOnly));

        with_header(&m, VIRTIO_BLK_T_DISCARD, 0);
        let (_, e) = error(&m, &chain, false);
        assert_eq!(
            (e.clone(), e.status()),
            (RequestError::BadFlags(1), S_UNSUPP)
        );
        m.write(0x1010, &range(8, 8, 0x10));
        assert_eq!(
            error(&m, &chain, false),
            (true, RequestError::BadFlags(0x10))
        );
        m.write(0x1010, &range(2047, 2, 0));
        assert!(matches!(
            error(&m, &chain, false),
            (true, RequestError::OutOfRange { sector: 2047, .. })
        ));
        m.write(0x1010, &range(0, MAX_DISCARD_SECTORS + 1, 0));
        assert_eq!(
            error(&m, &chain, false),
            (true, RequestError::SegmentTooLarge(MAX_DISCARD_SECTORS + 1))
        );
        assert_eq!(
            error(&m, &[r(0x100, 16), r(0x1000, 20), w(0x200, 1)], false),
            (true, RequestError::BadSegments(20))
        );
        assert_eq!(
            error(&m, &[r(0x100, 16), w(0x200, 1)], false),
            (true, RequestError::BadSegments(0))
        );
        assert_eq!(
            error(&m, &[r(0x100, 16), r(0x1000, 33 * 16), w(0x200, 1)], false),
            (true, RequestError::TooManySegments(33))
        );
    }

    #[test]
    fn buffers_spanning_adjacent_regions_are_split() {
        let m = Mem::new();
        with_header(&m, T_IN, 0);
        let space = m.space_split(&[0x8000]);
        let req = parse(
            &[r(0x100, 16), w(0x7e00, 1024), w(0x200, 1)],
            &space,
            &dev(false),
        )
        .unwrap();
        let Op::Read { segments, .. } = req.op else {
            panic!()
        };
        let lens: Vec<_> = segments.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![512, 512]);
        assert_eq!(segments[1].as_ptr() as usize, ptr(&m, 0x8000));
    }
}
