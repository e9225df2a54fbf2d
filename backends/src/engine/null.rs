//! The null engine: every valid request completes at once and no data moves (reads leave the
//! buffer untouched). It measures the I/O path without the storage behind it.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use super::{
    BlockEngine, BlockOp, BlockRequest, Completion, CompletionError, SubmitError, SubmitErrorKind,
};

/// The null device's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NullConfig {
    /// Device size in bytes.
    pub capacity: u64,
    /// Logical block size (512 or 4096).
    pub block_size: u32,
    pub read_only: bool,
    pub queue_depth: usize,
}

/// See the module documentation. Completions are ready as soon as a request is pushed.
pub struct NullEngine {
    config: NullConfig,
    ready: VecDeque<Completion>,
    /// Pushed since the last `submit`.
    unsubmitted: usize,
}

impl NullEngine {
    pub fn new(config: NullConfig) -> Self {
        NullEngine {
            config,
            ready: VecDeque::with_capacity(config.queue_depth),
            unsubmitted: 0,
        }
    }

    fn validate(&self, request: &BlockRequest) -> Result<u64, CompletionError> {
        let writes = matches!(
            request.op,
            BlockOp::Write | BlockOp::WriteZeroes | BlockOp::Discard
        );
        if writes && self.config.read_only {
            return Err(CompletionError::ReadOnly);
        }
        let len = request.byte_len();
        match request.offset.checked_add(len) {
            _ if request.op == BlockOp::Flush => Ok(0),
            Some(end) if end <= self.config.capacity => Ok(len),
            _ => Err(CompletionError::OutOfRange),
        }
    }
}

impl BlockEngine for NullEngine {
    fn capacity(&self) -> u64 {
        self.config.capacity
    }

    fn block_size(&self) -> u32 {
        self.config.block_size
    }

    fn read_only(&self) -> bool {
        self.config.read_only
    }

    fn queue_depth(&self) -> usize {
        self.config.queue_depth
    }

    /// Never touches the segments.
    unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError> {
        if self.ready.len() >= self.config.queue_depth {
            return Err(SubmitError {
                request,
                reason: SubmitErrorKind::Full,
            });
        }
        let result = self.validate(&request);
        self.ready.push_back(Completion {
            tag: request.tag,
            result,
        });
        self.unsubmitted += 1;
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, SubmitErrorKind> {
        Ok(std::mem::take(&mut self.unsubmitted))
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        n
    }

    fn wait(&mut self, _min: usize) -> Result<(), SubmitErrorKind> {
        Ok(())
    }

    fn completion_fd(&self) -> Option<RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testutil::{ranged, rw, GuestMem};

    fn engine(read_only: bool, queue_depth: usize) -> NullEngine {
        NullEngine::new(NullConfig {
            capacity: 1 << 20,
            block_size: 512,
            read_only,
            queue_depth,
        })
    }

    fn push(e: &mut NullEngine, r: BlockRequest) {
        // SAFETY: the null engine never dereferences segments.
        unsafe { e.push(r) }.unwrap();
    }

    #[test]
    fn valid_requests_complete_without_touching_memory() {
        let mem = GuestMem::new(2);
        mem.write(0, &[0xab; 8192]);
        let mut e = engine(false, 8);
        assert_eq!(e.completion_fd(), None);
        push(&mut e, rw(BlockOp::Read, 0, vec![mem.slice(0, 4096)], 1));
        push(
            &mut e,
            rw(BlockOp::Write, 4096, vec![mem.slice(4096, 4096)], 2),
        );
        push(
            &mut e,
            rw(
                BlockOp::Read,
                (1 << 20) - 1024,
                vec![mem.slice(0, 512), mem.slice(512, 512)],
                3,
            ),
        );
        push(&mut e, ranged(BlockOp::WriteZeroes, 0, 1 << 20, 4));
        push(&mut e, ranged(BlockOp::Discard, 512, 512, 5));
        push(&mut e, ranged(BlockOp::Flush, 0, 0, 6));
        assert_eq!(e.in_flight(), 6);
        assert_eq!(e.submit(), Ok(6));
        assert_eq!(e.submit(), Ok(0));
        e.wait(6).unwrap();
        let mut out = Vec::new();
        assert_eq!(e.reap(&mut out), 6);
        let got: Vec<_> = out.iter().map(|c| (c.tag, c.result)).collect();
        assert_eq!(
            got,
            [
                (1, Ok(4096)),
                (2, Ok(4096)),
                (3, Ok(1024)),
                (4, Ok(1 << 20)),
                (5, Ok(512)),
                (6, Ok(0))
            ]
        );
        assert_eq!(e.in_flight(), 0);
        assert_eq!(mem.read(0, 8192), vec![0xab; 8192]);
    }

    #[test]
    fn out_of_range_and_read_only_are_rejected() {
        let mem = GuestMem::new(1);
        let mut e = engine(true, 8);
        push(
            &mut e,
            rw(BlockOp::Read, 1 << 20, vec![mem.slice(0, 512)], 1),
        );
        push(
            &mut e,
            rw(BlockOp::Read, u64::MAX - 1, vec![mem.slice(0, 4)], 2),
        );
        push(&mut e, rw(BlockOp::Write, 0, vec![mem.slice(0, 512)], 3));
        push(&mut e, ranged(BlockOp::WriteZeroes, 0, 512, 4));
        push(&mut e, ranged(BlockOp::Flush, 0, 0, 5));
        push(&mut e, rw(BlockOp::Read, 0, vec![mem.slice(0, 512)], 6));
        let mut out = Vec::new();
        e.reap(&mut out);
        let got: Vec<_> = out.iter().map(|c| (c.tag, c.result)).collect();
        assert_eq!(
            got,
            [
                (1, Err(CompletionError::OutOfRange)),
                (2, Err(CompletionError::OutOfRange)),
                (3, Err(CompletionError::ReadOnly)),
                (4, Err(CompletionError::ReadOnly)),
                (5, Ok(0)),
                (6, Ok(512))
            ]
        );
    }

    #[test]
    fn a_full_queue_hands_the_request_back() {
        let mut e = engine(false, 2);
        push(&mut e, ranged(BlockOp::Flush, 0, 0, 1));
        push(&mut e, ranged(BlockOp::Flush, 0, 0, 2));
        // SAFETY: no segments.
        let err = unsafe { e.push(ranged(BlockOp::Discard, 0, 512, 3)) }.unwrap_err();
        assert_eq!(err.reason, SubmitErrorKind::Full);
        assert_eq!((err.request.tag, err.request.op), (3, BlockOp::Discard));
        let mut out = Vec::new();
        assert_eq!(e.reap(&mut out), 2);
        push(&mut e, err.request);
        assert_eq!(e.reap(&mut out), 1);
        assert_eq!(out[2].tag, 3);
    }
}
