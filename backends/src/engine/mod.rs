//! The block engine every path uses: one instance per queue thread, no shared lock.
//!
//! A request names host memory that was checked by an `iommu` address space (or that the
//! caller owns); the engine keeps it in flight until the completion is reaped. Completions come
//! back out of order, tagged with the caller's `tag`.

use std::os::fd::RawFd;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOp {
    Read,
    Write,
    /// Makes every completed write durable (fdatasync).
    Flush,
    /// Zeroes `len` bytes at `offset` without a data buffer.
    WriteZeroes,
    /// Deallocates `len` bytes at `offset`; reads of them afterwards return zeroes.
    Discard,
}

/// One request. For `Read`/`Write`, `segments` is the scatter list and its total length is the
/// transfer length; for `WriteZeroes`/`Discard`, `len` is the length and `segments` is empty;
/// `Flush` uses neither.
#[derive(Debug)]
pub struct BlockRequest {
    pub op: BlockOp,
    /// Byte offset in the device.
    pub offset: u64,
    pub len: u64,
    pub segments: Vec<iommu::DmaSlice>,
    /// Returned unchanged in the completion.
    pub tag: u64,
}

impl BlockRequest {
    /// Bytes the request covers on the device.
    pub fn byte_len(&self) -> u64 {
        match self.op {
            BlockOp::Read | BlockOp::Write => self.segments.iter().map(|s| s.len() as u64).sum(),
            BlockOp::WriteZeroes | BlockOp::Discard => self.len,
            BlockOp::Flush => 0,
        }
    }
}

/// The outcome of one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<u64, CompletionError>,
}

/// Why a request failed; the device model maps each to its own status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompletionError {
    #[error("access beyond the end of the device")]
    OutOfRange,
    #[error("device is read-only")]
    ReadOnly,
    #[error("operation not supported by this backend")]
    Unsupported,
    #[error("request not aligned to the device's {0}-byte blocks")]
    Unaligned(u32),
    #[error("short transfer: {done} of {want} bytes")]
    Short { done: u64, want: u64 },
    #[error("I/O error (errno {0})")]
    Io(i32),
}

/// Why a request was not accepted; the request comes back so nothing is lost.
#[derive(Debug)]
pub struct SubmitError {
    pub request: BlockRequest,
    pub reason: SubmitErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitErrorKind {
    #[error("submission queue full")]
    Full,
    #[error("submit failed (errno {0})")]
    Io(i32),
}

/// The engine boundary. Implementations: io_uring over a file or block device, `null`, and test
/// doubles.
pub trait BlockEngine: Send {
    /// Device size in bytes.
    fn capacity(&self) -> u64;
    /// Logical block size in bytes (512 or 4096).
    fn block_size(&self) -> u32;
    fn read_only(&self) -> bool;
    /// Requests that may be in flight at once.
    fn queue_depth(&self) -> usize;

    /// Queues a request. It is not guaranteed to reach the kernel until [`BlockEngine::submit`].
    ///
    /// # Safety
    /// Every segment must stay valid (mapped, and not freed) until this request's completion
    /// has been returned by [`BlockEngine::reap`] or the engine has been dropped.
    unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError>;

    /// Hands queued requests to the kernel; returns how many.
    fn submit(&mut self) -> Result<usize, SubmitErrorKind>;

    /// Moves finished requests into `out` without blocking; returns how many.
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize;

    /// Blocks until at least `min` requests are finished (or none are in flight).
    fn wait(&mut self, min: usize) -> Result<(), SubmitErrorKind>;

    /// An eventfd that becomes readable when completions are ready, for threads that sleep in
    /// epoll. `None` if completions are always ready right after `submit` (null).
    fn completion_fd(&self) -> Option<RawFd>;

    /// Requests pushed and not yet reaped.
    fn in_flight(&self) -> usize;
}
