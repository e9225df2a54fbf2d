//! A test double: an in-memory block device that really copies data.
//!
//! For device-model tests (NVMe, virtio-blk): requests are checked like the real engines
//! (out of range, read-only), queued by `push` and executed in order by `submit`. A
//! [`MemHandle`] (cloneable, shareable) stays with the test after the engine has moved into the
//! model: it reads and writes the backing bytes, lists the operations executed, and injects
//! errors. It takes a lock per submit: do not benchmark it.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    BlockEngine, BlockOp, BlockRequest, Completion, CompletionError, SubmitError, SubmitErrorKind,
};

/// One executed (or error-injected) request, as recorded by [`MemHandle::ops`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOp {
    pub op: BlockOp,
    pub offset: u64,
    /// Bytes covered ([`BlockRequest::byte_len`]).
    pub len: u64,
    pub tag: u64,
}

struct State {
    data: Vec<u8>,
    ops: Vec<MemOp>,
    fail: VecDeque<CompletionError>,
}

/// The test's view of a [`MemEngine`]'s storage.
#[derive(Clone)]
pub struct MemHandle(Arc<Mutex<State>>);

impl MemHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies `len` bytes at `offset` out of the device. Panics if out of range.
    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let off = offset as usize;
        self.lock().data[off..off + len].to_vec()
    }

    /// Overwrites the device at `offset`. Panics if out of range.
    pub fn write(&self, offset: u64, data: &[u8]) {
        let off = offset as usize;
        self.lock().data[off..off + data.len()].copy_from_slice(data);
    }

    /// Requests executed so far, in execution order (rejected requests are not listed).
    pub fn ops(&self) -> Vec<MemOp> {
        self.lock().ops.clone()
    }

    /// The next executed request fails with `error` instead of touching the data (it is still
    /// listed in [`MemHandle::ops`]). Calls queue up: one error per request.
    pub fn fail_next(&self, error: CompletionError) {
        self.lock().fail.push_back(error);
    }
}

/// See the module documentation.
pub struct MemEngine {
    state: MemHandle,
    capacity: u64,
    block_size: u32,
    read_only: bool,
    queue_depth: usize,
    queued: VecDeque<BlockRequest>,
    ready: VecDeque<Completion>,
}

impl MemEngine {
    /// A zeroed device of `capacity` bytes, 512-byte blocks, read-write, queue depth 64.
    pub fn new(capacity: usize) -> Self {
        Self::with_data(vec![0; capacity])
    }

    /// A device holding `data`.
    pub fn with_data(data: Vec<u8>) -> Self {
        MemEngine {
            capacity: data.len() as u64,
            state: MemHandle(Arc::new(Mutex::new(State {
                data,
                ops: Vec::new(),
                fail: VecDeque::new(),
            }))),
            block_size: 512,
            read_only: false,
            queue_depth: 64,
            queued: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Reports `block_size` (no alignment is enforced).
    pub fn with_block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    pub fn with_queue_depth(mut self, queue_depth: usize) -> Self {
        self.queue_depth = queue_depth;
        self
    }

    /// Rejects writes, write-zeroes and discards with [`CompletionError::ReadOnly`].
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn handle(&self) -> MemHandle {
        self.state.clone()
    }

    fn validate(&self, request: &BlockRequest) -> Result<(), CompletionError> {
        let writes = matches!(
            request.op,
            BlockOp::Write | BlockOp::WriteZeroes | BlockOp::Discard
        );
        if writes && self.read_only {
            return Err(CompletionError::ReadOnly);
        }
        match request.offset.checked_add(request.byte_len()) {
            _ if request.op == BlockOp::Flush => Ok(()),
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(CompletionError::OutOfRange),
        }
    }
}

/// Executes one validated request against `state`.
///
/// # Safety
/// The request's segments must be valid for reads and writes.
unsafe fn execute(state: &mut State, request: &BlockRequest) -> Result<u64, CompletionError> {
    let len = request.byte_len();
    state.ops.push(MemOp {
        op: request.op,
        offset: request.offset,
        len,
        tag: request.tag,
    });
    if let Some(e) = state.fail.pop_front() {
        return Err(e);
    }
    let mut off = request.offset as usize;
    match request.op {
        BlockOp::Read => {
            for s in &request.segments {
                let src = &state.data[off..off + s.len()];
                // SAFETY: the segment is valid (this function's contract) and cannot overlap
                // the engine's own Vec.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), s.as_ptr(), s.len()) };
                off += s.len();
            }
        }
        BlockOp::Write => {
            for s in &request.segments {
                let dst = &mut state.data[off..off + s.len()];
                // SAFETY: as for reads.
                unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), dst.as_mut_ptr(), s.len()) };
                off += s.len();
            }
        }
        BlockOp::WriteZeroes | BlockOp::Discard => state.data[off..off + len as usize].fill(0),
        BlockOp::Flush => {}
    }
    Ok(len)
}

impl BlockEngine for MemEngine {
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
        match self.validate(&request) {
            Ok(()) => self.queued.push_back(request),
            Err(e) => self.ready.push_back(Completion {
                tag: request.tag,
                result: Err(e),
            }),
        }
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, SubmitErrorKind> {
        let n = self.queued.len();
        let mut state = self.state.lock();
        for request in self.queued.drain(..) {
            // SAFETY: `push`'s contract keeps the segments valid until the completion is
            // reaped, which happens after this.
            let result = unsafe { execute(&mut state, &request) };
            self.ready.push_back(Completion {
                tag: request.tag,
                result,
            });
        }
        Ok(n)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        n
    }

    /// Executes queued requests (as a real engine would have submitted them by now).
    fn wait(&mut self, _min: usize) -> Result<(), SubmitErrorKind> {
        self.submit().map(drop)
    }

    fn completion_fd(&self) -> Option<RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testutil::{pattern, ranged, run, rw, GuestMem};

    #[test]
    fn data_round_trips_through_segments() {
        let mem = GuestMem::new(4);
        let mut e = MemEngine::new(64 << 10);
        let h = e.handle();
        let data = pattern(3, 3 * 4096);
        mem.write(0, &data);
        let segs = vec![
            mem.slice(0, 4096),
            mem.slice(4096, 1024),
            mem.slice(5120, 7168),
        ];
        // SAFETY: `mem` outlives the call, which reaps the completion.
        let c = unsafe { run(&mut e, rw(BlockOp::Write, 1024, segs, 7)) };
        assert_eq!(c.result, Ok(3 * 4096));
        assert_eq!(h.read(1024, 3 * 4096), data);
        assert_eq!(h.read(0, 1024), vec![0; 1024]);

        h.write(40960, &[9; 100]);
        // SAFETY: as above.
        let c = unsafe { run(&mut e, rw(BlockOp::Read, 40960, vec![mem.slice(0, 512)], 8)) };
        assert_eq!(c.result, Ok(512));
        let mut want = vec![9; 100];
        want.resize(512, 0);
        assert_eq!(mem.read(0, 512), want);

        // SAFETY: no segments.
        let c = unsafe { run(&mut e, ranged(BlockOp::WriteZeroes, 2048, 1024, 9)) };
        assert_eq!(c.result, Ok(1024));
        assert_eq!(h.read(2048, 1024), vec![0; 1024]);
        assert_eq!(h.read(1024, 1024), data[..1024]);
    }

    #[test]
    fn requests_execute_at_submit_and_errors_are_injected() {
        let mem = GuestMem::new(1);
        let mut e = MemEngine::new(8192).with_queue_depth(4);
        let h = e.handle();
        h.fail_next(CompletionError::Io(libc::EIO));
        // SAFETY: `mem` outlives the engine.
        unsafe {
            e.push(rw(BlockOp::Write, 0, vec![mem.slice(0, 512)], 1))
                .unwrap();
            e.push(ranged(BlockOp::Flush, 0, 0, 2)).unwrap();
            e.push(ranged(BlockOp::Discard, 8192, 512, 3)).unwrap();
        }
        assert!(h.ops().is_empty());
        let mut out = Vec::new();
        // The rejected request is ready at once; the others wait for submit.
        assert_eq!(e.reap(&mut out), 1);
        assert_eq!(out[0].result, Err(CompletionError::OutOfRange));
        assert_eq!(e.submit(), Ok(2));
        assert_eq!(e.reap(&mut out), 2);
        assert_eq!(out[1].result, Err(CompletionError::Io(libc::EIO)));
        assert_eq!(out[2].result, Ok(0));
        let ops: Vec<_> = h.ops().iter().map(|o| (o.op, o.tag)).collect();
        assert_eq!(ops, [(BlockOp::Write, 1), (BlockOp::Flush, 2)]);
    }

    #[test]
    fn read_only_rejects_writes() {
        let mem = GuestMem::new(1);
        mem.write(0, &[1; 512]);
        let mut e = MemEngine::with_data(vec![5; 4096]).with_read_only(true);
        assert!(e.read_only());
        // SAFETY: `mem` outlives the call.
        let c = unsafe { run(&mut e, rw(BlockOp::Write, 0, vec![mem.slice(0, 512)], 1)) };
        assert_eq!(c.result, Err(CompletionError::ReadOnly));
        assert_eq!(e.handle().read(0, 4096), vec![5; 4096]);
    }
}
