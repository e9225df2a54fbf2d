//! The io_uring engine over a regular file or a block device.
//!
//! One ring per engine, one engine per queue thread: nothing here takes a lock. Every request
//! owns a slot of a fixed slab (indexed by the SQE's `user_data`) until its completion is
//! reaped; the slot keeps the request's iovec array alive while the kernel may read it.
//! Requests that fail validation never reach the kernel: their completions wait in a ready
//! queue and come out of the next [`BlockEngine::reap`].

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;

use io_uring::{opcode, squeue, types, IoUring};

use super::{
    BlockEngine, BlockOp, BlockRequest, Completion, CompletionError, SubmitError, SubmitErrorKind,
};

/// `_IOR(0x12, 114, u64)`: the size of a block device in bytes (not exported by `libc`; the
/// generic ioctl encoding, as on x86-64 and aarch64).
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272_u32 as libc::Ioctl;

/// io_uring accepts at most this many SQ entries.
const MAX_QUEUE_DEPTH: u32 = 32768;

const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

/// How to open a [`UringEngine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// A regular file or a block device.
    pub path: PathBuf,
    /// Open read-only and reject writes, write-zeroes and discards.
    pub read_only: bool,
    /// Bypass the page cache (`O_DIRECT`): offsets, lengths and buffers must be block-aligned.
    pub direct: bool,
    /// Requests in flight at once (1..=32768).
    pub queue_depth: u32,
}

impl UringConfig {
    /// Read-write, buffered, queue depth 128.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UringConfig {
            path: path.into(),
            read_only: false,
            direct: false,
            queue_depth: 128,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue depth {0} is not in 1..={MAX_QUEUE_DEPTH}")]
    QueueDepth(u32),
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot stat the backing file")]
    Stat(#[source] io::Error),
    #[error("{} is neither a regular file nor a block device", .0.display())]
    NotFileOrBlockDevice(PathBuf),
    #[error("cannot read the block device size")]
    DeviceSize(#[source] io::Error),
    #[error("cannot read the block device's logical block size")]
    BlockSize(#[source] io::Error),
    #[error("logical block size {0} is not a power of two")]
    BadBlockSize(u32),
    #[error("cannot set up the io_uring")]
    Setup(#[source] io::Error),
    #[error("cannot register the backing file with the io_uring")]
    RegisterFile(#[source] io::Error),
    #[error("cannot create the completion eventfd")]
    EventFd(#[source] io::Error),
    #[error("cannot register the completion eventfd")]
    RegisterEventFd(#[source] io::Error),
}

/// An iovec array the kernel reads while the request is in flight.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the iovecs are plain addresses into memory the engine's caller vouched for (the
// `push` contract); moving them to another thread together with the engine changes nothing
// about their validity.
unsafe impl Send for IoVecs {}

/// A request the kernel owns.
struct InFlight {
    tag: u64,
    op: BlockOp,
    offset: u64,
    /// Bytes the request covers.
    want: u64,
    /// The fallocate mode, for write-zeroes' fallback.
    mode: i32,
}

/// A slab slot. `iovecs` keeps its capacity across requests and is only touched while the
/// slot is free.
struct Slot {
    request: Option<InFlight>,
    iovecs: IoVecs,
}

/// io_uring over a file or block device; see the module documentation.
pub struct UringEngine {
    ring: IoUring,
    /// Registered as fixed file 0; kept open for the engine's life.
    _file: File,
    eventfd: OwnedFd,
    capacity: u64,
    block_size: u32,
    read_only: bool,
    direct: bool,
    block_device: bool,
    queue_depth: usize,
    slots: Vec<Slot>,
    free: Vec<usize>,
    ready: VecDeque<Completion>,
    /// Slots whose write-zeroes must be resubmitted as a hole punch.
    retry: Vec<usize>,
    /// Cleared once the file system answered `EOPNOTSUPP` to `FALLOC_FL_ZERO_RANGE`.
    zero_range: bool,
}

/// Opens the backing file as `config` says (read-only or read-write, O_DIRECT or not).
pub fn open_file(config: &UringConfig) -> Result<File, Error> {
    let mut options = OpenOptions::new();
    options.read(true).write(!config.read_only);
    if config.direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(&config.path).map_err(|source| Error::Open {
        path: config.path.clone(),
        source,
    })
}

impl UringEngine {
    pub fn new(config: &UringConfig) -> Result<Self, Error> {
        Self::from_file(open_file(config)?, config)
    }

    /// An engine over `file`, opened as [`open_file`] does: a daemon that gives up its
    /// privileges after opening the file makes its per-connection engines from duplicates.
    pub fn from_file(file: File, config: &UringConfig) -> Result<Self, Error> {
        let depth = config.queue_depth;
        if depth == 0 || depth > MAX_QUEUE_DEPTH {
            return Err(Error::QueueDepth(depth));
        }
        let file_type = file.metadata().map_err(Error::Stat)?.file_type();
        let (capacity, block_size, block_device) = if file_type.is_block_device() {
            let (capacity, block_size) = block_device_geometry(&file)?;
            (capacity, block_size, true)
        } else if file_type.is_file() {
            let capacity = file.metadata().map_err(Error::Stat)?.len();
            let block_size = if config.direct {
                dio_alignment(&file).max(512)
            } else {
                512
            };
            (capacity, block_size, false)
        } else {
            return Err(Error::NotFileOrBlockDevice(config.path.clone()));
        };
        if !block_size.is_power_of_two() {
            return Err(Error::BadBlockSize(block_size));
        }

        let ring = IoUring::new(depth).map_err(Error::Setup)?;
        ring.submitter()
            .register_files(&[file.as_raw_fd()])
            .map_err(Error::RegisterFile)?;
        // SAFETY: plain FFI call; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::EventFd(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh eventfd that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(Error::RegisterEventFd)?;

        let queue_depth = depth as usize;
        let slots = (0..queue_depth)
            .map(|_| Slot {
                request: None,
                iovecs: IoVecs(Vec::new()),
            })
            .collect();
        Ok(UringEngine {
            ring,
            _file: file,
            eventfd,
            capacity,
            block_size,
            read_only: config.read_only,
            direct: config.direct,
            block_device,
            queue_depth,
            slots,
            free: (0..queue_depth).rev().collect(),
            ready: VecDeque::with_capacity(queue_depth),
            retry: Vec::new(),
            zero_range: true,
        })
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Requests the kernel owns (pushed, not yet moved to the ready queue).
    fn busy(&self) -> usize {
        self.queue_depth - self.free.len()
    }

    fn validate(&self, request: &BlockRequest) -> Result<(), CompletionError> {
        let writes = matches!(
            request.op,
            BlockOp::Write | BlockOp::WriteZeroes | BlockOp::Discard
        );
        if writes && self.read_only {
            return Err(CompletionError::ReadOnly);
        }
        if request.op == BlockOp::Flush {
            return Ok(());
        }
        let len = request.byte_len();
        match request.offset.checked_add(len) {
            Some(end) if end <= self.capacity => {}
            _ => return Err(CompletionError::OutOfRange),
        }
        // Block sizes are powers of two (checked at open).
        let mask = u64::from(self.block_size) - 1;
        let unaligned = match request.op {
            BlockOp::Read | BlockOp::Write if self.direct => {
                request.offset & mask != 0
                    || request
                        .segments
                        .iter()
                        .any(|s| (s.as_ptr() as u64 | s.len() as u64) & mask != 0)
            }
            // The block layer rejects unaligned fallocate on a device.
            BlockOp::WriteZeroes | BlockOp::Discard if self.direct || self.block_device => {
                (request.offset | len) & mask != 0
            }
            _ => false,
        };
        if unaligned {
            return Err(CompletionError::Unaligned(self.block_size));
        }
        Ok(())
    }

    /// Moves every CQE into the ready queue, resubmitting write-zeroes that need the fallback.
    fn drain_cq(&mut self) {
        for cqe in self.ring.completion() {
            let idx = cqe.user_data() as usize;
            let Some(request) = self.slots.get_mut(idx).and_then(|s| s.request.as_mut()) else {
                log::error!("io_uring completion for unknown slot {idx}");
                continue;
            };
            let res = cqe.result();
            if res == -libc::EOPNOTSUPP
                && request.op == BlockOp::WriteZeroes
                && request.mode == ZERO_RANGE
            {
                log::debug!("FALLOC_FL_ZERO_RANGE not supported: punching holes instead");
                self.zero_range = false;
                request.mode = PUNCH_HOLE;
                self.retry.push(idx);
                continue;
            }
            let result = if res < 0 {
                Err(CompletionError::Io(-res))
            } else {
                let done = res as u64;
                match request.op {
                    BlockOp::Read | BlockOp::Write if done != request.want => {
                        Err(CompletionError::Short {
                            done,
                            want: request.want,
                        })
                    }
                    _ => Ok(request.want),
                }
            };
            let tag = request.tag;
            self.slots[idx].request = None;
            self.free.push(idx);
            self.ready.push_back(Completion { tag, result });
        }
        if !self.retry.is_empty() {
            self.resubmit_retries();
        }
    }

    fn resubmit_retries(&mut self) {
        while let Some(idx) = self.retry.pop() {
            let Some(request) = &self.slots[idx].request else {
                continue;
            };
            let entry = opcode::Fallocate::new(types::Fixed(0), request.want)
                .offset(request.offset)
                .mode(request.mode)
                .build()
                .user_data(idx as u64);
            // SAFETY: fallocate references no memory.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                // Cannot happen (at most `queue_depth` requests are in flight), but never lose
                // a request.
                let tag = request.tag;
                self.slots[idx].request = None;
                self.free.push(idx);
                self.ready.push_back(Completion {
                    tag,
                    result: Err(CompletionError::Io(libc::EOPNOTSUPP)),
                });
            }
        }
        // A failed submit leaves the entries queued for the next submit or wait.
        if let Err(e) = self.ring.submit() {
            log::debug!("resubmitting write-zeroes as hole punch: {e}");
        }
    }

    /// Builds the SQE for a validated, non-empty request in slot `idx`.
    fn build_entry(&mut self, idx: usize, request: &BlockRequest) -> squeue::Entry {
        let fd = types::Fixed(0);
        let entry = match request.op {
            BlockOp::Read | BlockOp::Write => match request.segments.as_slice() {
                [s] if u32::try_from(s.len()).is_ok() => {
                    if request.op == BlockOp::Read {
                        opcode::Read::new(fd, s.as_ptr(), s.len() as u32)
                            .offset(request.offset)
                            .build()
                    } else {
                        opcode::Write::new(fd, s.as_ptr(), s.len() as u32)
                            .offset(request.offset)
                            .build()
                    }
                }
                segments => {
                    let iovecs = &mut self.slots[idx].iovecs.0;
                    iovecs.clear();
                    iovecs.extend(segments.iter().map(|s| libc::iovec {
                        iov_base: s.as_ptr().cast(),
                        iov_len: s.len(),
                    }));
                    // Too many segments: the kernel answers EINVAL.
                    let n = u32::try_from(iovecs.len()).unwrap_or(u32::MAX);
                    if request.op == BlockOp::Read {
                        opcode::Readv::new(fd, iovecs.as_ptr(), n)
                            .offset(request.offset)
                            .build()
                    } else {
                        opcode::Writev::new(fd, iovecs.as_ptr(), n)
                            .offset(request.offset)
                            .build()
                    }
                }
            },
            BlockOp::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            BlockOp::WriteZeroes | BlockOp::Discard => opcode::Fallocate::new(fd, request.len)
                .offset(request.offset)
                .mode(self.fallocate_mode(request.op))
                .build(),
        };
        entry.user_data(idx as u64)
    }

    fn fallocate_mode(&self, op: BlockOp) -> i32 {
        if op == BlockOp::WriteZeroes && self.zero_range {
            ZERO_RANGE
        } else {
            PUNCH_HOLE
        }
    }
}

impl BlockEngine for UringEngine {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError> {
        if self.in_flight() >= self.queue_depth {
            return Err(SubmitError {
                request,
                reason: SubmitErrorKind::Full,
            });
        }
        if let Err(e) = self.validate(&request) {
            self.ready.push_back(Completion {
                tag: request.tag,
                result: Err(e),
            });
            return Ok(());
        }
        if request.op != BlockOp::Flush && request.byte_len() == 0 {
            self.ready.push_back(Completion {
                tag: request.tag,
                result: Ok(0),
            });
            return Ok(());
        }
        let Some(idx) = self.free.pop() else {
            return Err(SubmitError {
                request,
                reason: SubmitErrorKind::Full,
            });
        };
        let entry = self.build_entry(idx, &request);
        // SAFETY: the caller guarantees the segments stay valid until the completion is reaped
        // or the engine is dropped (and `Drop` waits for the kernel); the iovec array lives in
        // slot `idx`, which is not reused or modified before this request's CQE is consumed.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.free.push(idx);
            return Err(SubmitError {
                request,
                reason: SubmitErrorKind::Full,
            });
        }
        self.slots[idx].request = Some(InFlight {
            tag: request.tag,
            op: request.op,
            offset: request.offset,
            want: request.byte_len(),
            mode: self.fallocate_mode(request.op),
        });
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, SubmitErrorKind> {
        if self.ring.submission().is_empty() {
            return Ok(0);
        }
        loop {
            match self.ring.submit() {
                Ok(n) => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(SubmitErrorKind::Io(e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        self.drain_cq();
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        n
    }

    fn wait(&mut self, min: usize) -> Result<(), SubmitErrorKind> {
        loop {
            self.drain_cq();
            let busy = self.busy();
            if self.ready.len() >= min || busy == 0 {
                return Ok(());
            }
            let want = (min - self.ready.len()).min(busy);
            match self.ring.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(SubmitErrorKind::Io(e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
    }

    /// Signalled for every completion; the caller reads (drains) it before reaping.
    fn completion_fd(&self) -> Option<RawFd> {
        Some(self.eventfd.as_raw_fd())
    }

    fn in_flight(&self) -> usize {
        self.busy() + self.ready.len()
    }
}

impl Drop for UringEngine {
    /// Waits for every request the kernel owns: the caller may free the segments' memory as
    /// soon as the engine is gone.
    fn drop(&mut self) {
        loop {
            self.drain_cq();
            let busy = self.busy();
            if busy == 0 {
                return;
            }
            match self.ring.submit_and_wait(busy) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    // Returning would let the kernel write into memory the caller is about to
                    // free.
                    log::error!("cannot wait for {busy} in-flight io_uring requests: {e}");
                    std::process::abort();
                }
            }
        }
    }
}

/// Capacity and logical block size of a block device.
fn block_device_geometry(file: &File) -> Result<(u64, u32), Error> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to `size`.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) } < 0 {
        return Err(Error::DeviceSize(io::Error::last_os_error()));
    }
    let mut block_size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to `block_size`.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut block_size as *mut _) } < 0 {
        return Err(Error::BlockSize(io::Error::last_os_error()));
    }
    Ok((size, block_size as u32))
}

/// The file system's `O_DIRECT` offset alignment (statx `STATX_DIOALIGN`), or 0 if unknown.
fn dio_alignment(file: &File) -> u32 {
    // SAFETY: `statx` is plain old data; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd, a NUL-terminated empty path with AT_EMPTY_PATH, and a pointer to a
    // `statx` the call may fill.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 {
        stx.stx_dio_offset_align
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use tempfile::NamedTempFile;

    use super::*;
    use crate::engine::testutil::{pattern, ranged, run, rw, GuestMem};

    /// A temporary file of `len` bytes holding `pattern(seed, len)`.
    fn file_with(len: usize, seed: u8) -> NamedTempFile {
        let f = NamedTempFile::new().unwrap();
        std::fs::write(f.path(), pattern(seed, len)).unwrap();
        f
    }

    fn open(path: &Path, tweak: impl FnOnce(&mut UringConfig)) -> UringEngine {
        let mut config = UringConfig::new(path);
        tweak(&mut config);
        UringEngine::new(&config).unwrap()
    }

    /// Runs one request; `mem` outlives it.
    fn run_on(e: &mut UringEngine, r: BlockRequest) -> Result<u64, CompletionError> {
        // SAFETY: every caller's segments come from a `GuestMem` that outlives this call, which
        // returns only after the completion is reaped.
        unsafe { run(e, r) }.result
    }

    #[test]
    fn open_reports_geometry() {
        let f = file_with(12345, 0);
        let e = open(f.path(), |c| c.queue_depth = 5);
        assert_eq!(e.capacity(), 12345);
        assert_eq!(e.block_size(), 512);
        assert_eq!(e.queue_depth(), 5);
        assert!(!e.read_only() && !e.is_block_device() && !e.is_direct());
        assert!(e.completion_fd().is_some());
        assert_eq!(e.in_flight(), 0);

        for depth in [0, MAX_QUEUE_DEPTH + 1] {
            let err = UringEngine::new(&UringConfig {
                queue_depth: depth,
                ..UringConfig::new(f.path())
            })
            .err()
            .unwrap();
            assert!(matches!(err, Error::QueueDepth(d) if d == depth), "{err:?}");
        }
        let err = UringEngine::new(&UringConfig::new("/dev/null"))
            .err()
            .unwrap();
        assert!(matches!(err, Error::NotFileOrBlockDevice(_)), "{err:?}");
    }

    #[test]
    fn writes_and_reads_round_trip_single_and_multi_segment() {
        let f = file_with(256 << 10, 0);
        let mut e = open(f.path(), |_| {});
        let mem = GuestMem::new(16);
        let mut expected = pattern(0, 256 << 10);

        // (device offset, segment lengths): block-aligned and not, one segment and several.
        let layouts: [(u64, &[usize]); 5] = [
            (0, &[4096]),
            (8192, &[512, 4096, 1024]),
            (100_003, &[777]),
            (150_000, &[1, 3000, 100, 4095]),
            ((256 << 10) - 8192, &[4096, 4096]),
        ];
        for (i, &(offset, lens)) in layouts.iter().enumerate() {
            let total: usize = lens.iter().sum();
            let data = pattern(i as u8 + 100, total);
            mem.write(0, &data);
            let mut segs = Vec::new();
            let mut iova = 0;
            for &len in lens {
                segs.push(mem.slice(iova, len));
                iova += len as u64;
            }
            let r = run_on(&mut e, rw(BlockOp::Write, offset, segs, i as u64));
            assert_eq!(r, Ok(total as u64));
            expected[offset as usize..offset as usize + total].copy_from_slice(&data);

            // Read back into a different place, scattered the other way round.
            let base = 32 << 10;
            mem.write(base, &vec![0; total]);
            let mut segs = Vec::new();
            let mut iova = base;
            for &len in lens.iter().rev() {
                segs.push(mem.slice(iova, len));
                iova += len as u64;
            }
            let r = run_on(&mut e, rw(BlockOp::Read, offset, segs, 50 + i as u64));
            assert_eq!(r, Ok(total as u64));
            assert_eq!(mem.read(base, total), data, "layout {i}");
        }
        assert_eq!(run_on(&mut e, ranged(BlockOp::Flush, 0, 0, 99)), Ok(0));
        assert_eq!(std::fs::read(f.path()).unwrap(), expected);
    }

    #[test]
    fn write_zeroes_and_discard_read_back_zeroes() {
        let len = 64 << 10;
        let f = file_with(len, 7);
        let mut e = open(f.path(), |_| {});
        check_zeroing(&mut e, f.path(), len);
    }

    /// On tmpfs `FALLOC_FL_ZERO_RANGE` fails with EOPNOTSUPP and the engine punches holes.
    #[test]
    fn write_zeroes_falls_back_to_punching_holes() {
        let dir = Path::new("/dev/shm");
        if !dir.is_dir() {
            println!("skipped: no /dev/shm");
            return;
        }
        let len = 64 << 10;
        let f = NamedTempFile::new_in(dir).unwrap();
        std::fs::write(f.path(), pattern(7, len)).unwrap();
        let mut e = open(f.path(), |_| {});
        check_zeroing(&mut e, f.path(), len);
    }

    fn check_zeroing(e: &mut UringEngine, path: &Path, len: usize) {
        let mut expected = pattern(7, len);
        for (i, (op, offset, n)) in [
            (BlockOp::WriteZeroes, 4096, 8192),
            (BlockOp::Discard, 20480, 4096),
            (BlockOp::WriteZeroes, 30000, 100),
            (BlockOp::Discard, 40960, 12288),
            (BlockOp::WriteZeroes, 60000, 5536),
        ]
        .into_iter()
        .enumerate()
        {
            let r = run_on(e, ranged(op, offset, n, i as u64));
            assert_eq!(r, Ok(n), "{op:?} {offset}+{n}");
            expected[offset as usize..(offset + n) as usize].fill(0);
        }
        assert_eq!(run_on(e, ranged(BlockOp::Flush, 0, 0, 9)), Ok(0));
        let mem = GuestMem::new(16);
        let r = run_on(e, rw(BlockOp::Read, 0, vec![mem.slice(0, len)], 10));
        assert_eq!(r, Ok(len as u64));
        assert_eq!(mem.read(0, len), expected);
        assert_eq!(std::fs::read(path).unwrap(), expected);
    }

    #[test]
    fn out_of_range_is_rejected_without_io() {
        let f = file_with(8192, 1);
        let mut e = open(f.path(), |_| {});
        let mem = GuestMem::new(1);
        let cases = [
            rw(BlockOp::Read, 8192, vec![mem.slice(0, 512)], 1),
            rw(
                BlockOp::Write,
                7680,
                vec![mem.slice(0, 512), mem.slice(512, 1)],
                2,
            ),
            ranged(BlockOp::WriteZeroes, 0, 8193, 3),
            ranged(BlockOp::Discard, u64::MAX - 10, 20, 4),
            rw(BlockOp::Read, u64::MAX, vec![mem.slice(0, 1)], 5),
        ];
        for r in cases {
            assert_eq!(run_on(&mut e, r), Err(CompletionError::OutOfRange));
        }
        let last = rw(BlockOp::Read, 7680, vec![mem.slice(0, 512)], 6);
        assert_eq!(run_on(&mut e, last), Ok(512));
        assert_eq!(std::fs::read(f.path()).unwrap(), pattern(1, 8192));
    }

    #[test]
    fn read_only_rejects_writes_and_leaves_the_file_alone() {
        let f = file_with(16384, 2);
        let mut e = open(f.path(), |c| c.read_only = true);
        assert!(e.read_only());
        let mem = GuestMem::new(1);
        mem.write(0, &[0xee; 4096]);
        let cases = [
            rw(BlockOp::Write, 0, vec![mem.slice(0, 4096)], 1),
            rw(
                BlockOp::Write,
                4096,
                vec![mem.slice(0, 512), mem.slice(512, 512)],
                2,
            ),
            ranged(BlockOp::WriteZeroes, 0, 4096, 3),
            ranged(BlockOp::Discard, 8192, 4096, 4),
        ];
        for r in cases {
            assert_eq!(run_on(&mut e, r), Err(CompletionError::ReadOnly));
        }
        assert_eq!(run_on(&mut e, ranged(BlockOp::Flush, 0, 0, 5)), Ok(0));
        let r = run_on(&mut e, rw(BlockOp::Read, 4096, vec![mem.slice(0, 4096)], 6));
        assert_eq!(r, Ok(4096));
        assert_eq!(mem.read(0, 4096), pattern(2, 16384)[4096..8192]);
        assert_eq!(std::fs::read(f.path()).unwrap(), pattern(2, 16384));
    }

    #[test]
    fn a_read_past_end_of_file_is_short() {
        let f = file_with(8192, 3);
        let mut e = open(f.path(), |_| {});
        // The file shrinks under the engine, which still believes it holds 8 KiB.
        f.as_file().set_len(4096).unwrap();
        let mem = GuestMem::new(2);
        let r = run_on(&mut e, rw(BlockOp::Read, 0, vec![mem.slice(0, 8192)], 1));
        assert_eq!(
            r,
            Err(CompletionError::Short {
                done: 4096,
                want: 8192
            })
        );
        assert_eq!(mem.read(0, 4096), pattern(3, 4096));
        let segs = vec![mem.slice(0, 1024), mem.slice(1024, 1024)];
        let r = run_on(&mut e, rw(BlockOp::Read, 6144, segs, 2));
        assert_eq!(
            r,
            Err(CompletionError::Short {
                done: 0,
                want: 2048
            })
        );
    }

    #[test]
    fn direct_io_rejects_unaligned_requests() {
        let f = file_with(64 << 10, 4);
        let config = UringConfig {
            direct: true,
            ..UringConfig::new(f.path())
        };
        let mut e = match UringEngine::new(&config) {
            Err(Error::Open { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                println!(
                    "skipped: O_DIRECT not supported on {:?}",
                    std::env::temp_dir()
                );
                return;
            }
            r => r.unwrap(),
        };
        assert!(e.is_direct());
        let bs = e.block_size();
        assert!(bs >= 512 && bs.is_power_of_two(), "block size {bs}");
        if bs > 4096 {
            println!("skipped: {bs}-byte O_DIRECT alignment exceeds the test's page alignment");
            return;
        }
        let b = bs as usize;
        let bs64 = u64::from(bs);
        let mem = GuestMem::new(8);
        let cases = [
            rw(BlockOp::Read, 1, vec![mem.slice(0, b)], 1),
            rw(BlockOp::Write, bs64, vec![mem.slice(0, b - 1)], 2),
            rw(
                BlockOp::Read,
                0,
                vec![mem.slice(0, b), mem.slice(4096, b / 2)],
                3,
            ),
            rw(BlockOp::Write, 0, vec![mem.slice(8, b)], 4),
            ranged(BlockOp::WriteZeroes, bs64 / 2, bs64, 5),
            ranged(BlockOp::Discard, 0, bs64 + 1, 6),
        ];
        for r in cases {
            let tag = r.tag;
            assert_eq!(
                run_on(&mut e, r),
                Err(CompletionError::Unaligned(bs)),
                "{tag}"
            );
        }
        assert_eq!(std::fs::read(f.path()).unwrap(), pattern(4, 64 << 10));

        // Aligned requests go through.
        let data = pattern(40, 2 * b);
        mem.write(0, &data);
        let segs = vec![mem.slice(0, b), mem.slice(4096, b)];
        mem.write(4096, &data[b..]);
        let r = run_on(&mut e, rw(BlockOp::Write, 3 * bs64, segs, 7));
        assert_eq!(r, Ok(2 * bs64));
        let r = run_on(
            &mut e,
            rw(BlockOp::Read, 3 * bs64, vec![mem.slice(8192, 2 * b)], 8),
        );
        assert_eq!(r, Ok(2 * bs64));
        assert_eq!(mem.read(8192, 2 * b), data);
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(on_disk[3 * b..5 * b], data);
        let r = run_on(&mut e, ranged(BlockOp::WriteZeroes, 0, bs64, 9));
        assert_eq!(r, Ok(bs64));
        assert_eq!(std::fs::read(f.path()).unwrap()[..b], vec![0; b]);
    }

    #[test]
    fn a_full_queue_hands_the_request_back() {
        let f = file_with(1 << 20, 5);
        let mut e = open(f.path(), |c| c.queue_depth = 4);
        let mem = GuestMem::new(4);
        // SAFETY: `mem` outlives `e` (declared earlier, dropped later).
        unsafe {
            for i in 0..3 {
                let seg = mem.slice(i * 4096, 4096);
                e.push(rw(BlockOp::Read, i * 4096, vec![seg], i)).unwrap();
            }
            // A rejected request holds its place until reaped, too.
            e.push(ranged(BlockOp::Discard, 1 << 20, 512, 3)).unwrap();
        }
        assert_eq!(e.in_flight(), 4);
        let segs = vec![mem.slice(0, 512), mem.slice(1024, 512)];
        // SAFETY: as above.
        let err = unsafe { e.push(rw(BlockOp::Write, 8192, segs.clone(), 4)) }.unwrap_err();
        assert_eq!(err.reason, SubmitErrorKind::Full);
        let back = err.request;
        assert_eq!((back.op, back.offset, back.tag), (BlockOp::Write, 8192, 4));
        assert_eq!(back.segments, segs);

        assert_eq!(e.submit(), Ok(3));
        e.wait(4).unwrap();
        let mut out = Vec::new();
        assert_eq!(e.reap(&mut out), 4);
        assert_eq!(e.in_flight(), 0);
        // SAFETY: as above.
        unsafe { e.push(back) }.unwrap();
        e.wait(1).unwrap();
        assert_eq!(e.reap(&mut out), 1);
        assert_eq!(
            out[4],
            Completion {
                tag: 4,
                result: Ok(1024)
            }
        );
    }

    /// Waits for `n` completions by sleeping on the completion eventfd, as a queue thread does.
    fn reap_via_eventfd(e: &mut UringEngine, n: usize) -> Vec<Completion> {
        let fd = e.completion_fd().unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, 10_000) };
            assert_eq!(rc, 1, "no completion signalled in 10 s");
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into `count`.
            let rc = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
            assert_eq!(rc, 8);
            assert!(count > 0);
            e.reap(&mut out);
        }
        assert_eq!(out.len(), n);
        out
    }

    #[test]
    fn many_concurrent_requests_complete_with_their_tags() {
        const N: u64 = 32;
        let f = file_with((N * 8192) as usize, 6);
        let mut e = open(f.path(), |c| c.queue_depth = N as u32);
        let mem = GuestMem::new(2 * N as usize);
        let mut expected = pattern(6, (N * 8192) as usize);
        for i in 0..N {
            let data = pattern(i as u8, 4096);
            mem.write(i * 4096, &data);
            let off = (i * 8192) as usize;
            expected[off..off + 4096].copy_from_slice(&data);
            let segs = if i % 2 == 0 {
                vec![mem.slice(i * 4096, 4096)]
            } else {
                vec![mem.slice(i * 4096, 1000), mem.slice(i * 4096 + 1000, 3096)]
            };
            // SAFETY: `mem` outlives `e`.
            unsafe { e.push(rw(BlockOp::Write, i * 8192, segs, 1000 + i)) }.unwrap();
        }
        assert_eq!(e.in_flight(), N as usize);
        assert_eq!(e.submit(), Ok(N as usize));
        let done = reap_via_eventfd(&mut e, N as usize);
        let tags: BTreeSet<u64> = done.iter().map(|c| c.tag).collect();
        assert_eq!(tags, (1000..1000 + N).collect());
        assert!(done.iter().all(|c| c.result == Ok(4096)), "{done:?}");
        assert_eq!(std::fs::read(f.path()).unwrap(), expected);

        // Read back every 8 KiB stride (written half + untouched half) at once.
        for i in 0..N {
            let seg = mem.slice(i * 8192, 8192);
            // SAFETY: as above.
            unsafe { e.push(rw(BlockOp::Read, i * 8192, vec![seg], 2000 + i)) }.unwrap();
        }
        e.wait(N as usize).unwrap();
        let mut done = Vec::new();
        assert_eq!(e.reap(&mut done), N as usize);
        let tags: BTreeSet<u64> = done.iter().map(|c| c.tag).collect();
        assert_eq!(tags, (2000..2000 + N).collect());
        assert!(done.iter().all(|c| c.result == Ok(8192)), "{done:?}");
        assert_eq!(mem.read(0, (N * 8192) as usize), expected);
    }

    #[test]
    fn drop_waits_for_requests_in_flight() {
        const N: u64 = 32;
        const LEN: usize = 256 << 10;
        let total = N as usize * LEN;
        let f = file_with(total, 8);
        f.as_file().sync_all().unwrap();
        let mem = GuestMem::new(total / 4096);
        // O_DIRECT reads complete asynchronously (buffered ones mostly finish inside the
        // submit call), so a drop that does not wait would be caught.
        let config = UringConfig {
            direct: true,
            queue_depth: N as u32,
            ..UringConfig::new(f.path())
        };
        let mut e = match UringEngine::new(&config) {
            Err(Error::Open { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                open(f.path(), |c| c.queue_depth = N as u32)
            }
            r => r.unwrap(),
        };
        for i in 0..N {
            let off = i * LEN as u64;
            let segs = vec![
                mem.slice(off, LEN / 2),
                mem.slice(off + LEN as u64 / 2, LEN / 2),
            ];
            // SAFETY: `mem` outlives `e`, which is dropped below.
            unsafe { e.push(rw(BlockOp::Read, off, segs, i)) }.unwrap();
            // Half reach the kernel now; drop must submit the rest.
            if i == N / 2 {
                assert_eq!(e.submit(), Ok(N as usize / 2 + 1));
            }
        }
        assert_eq!(e.in_flight(), N as usize);
        drop(e);
        assert!(
            mem.read(0, total) == pattern(8, total),
            "reads not finished at drop"
        );
    }
}
