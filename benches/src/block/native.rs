//! The native path: the block workload on the host, through the same engine the device models
//! use (one io_uring per queue), with no VM. It is the ceiling every other path is measured
//! against.

use std::sync::Arc;
use std::time::Instant;

use backends::engine::{BackendSpec, BlockOp, BlockRequest, Completion};
use iommu::{Access, AddressSpace, DmaRegion, Perm};
use iopath_mailbox::histogram::Histogram;
use iopath_mailbox::offsets::Offsets;
use iopath_mailbox::{pattern, Workload};

use super::sample::{Counts, Sample};
use super::work::BlockWork;
use crate::cpu;

const PAGE: usize = 4096;

#[derive(Clone, Debug)]
pub struct NativeJob {
    pub backend: BackendSpec,
    pub work: BlockWork,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening backend {0}")]
    Open(String, #[source] backends::engine::uring::Error),
    #[error("the native runner does not run the {0} workload")]
    Workload(&'static str),
    #[error("{0}")]
    Params(String),
    #[error("mapping the I/O buffers")]
    Buffers(#[source] iommu::Error),
    #[error("engine: {0}")]
    Engine(#[source] backends::engine::SubmitErrorKind),
}

/// Page-aligned I/O buffers, one per queue slot, seen through an address space so requests
/// carry checked segments exactly as a device model's do.
struct Buffers {
    space: AddressSpace,
    stride: u64,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

impl Buffers {
    fn new(slots: u16, len: u32) -> Result<Buffers, Error> {
        let stride = (len as usize).next_multiple_of(PAGE);
        let mut pages = vec![Page([0; PAGE]); stride / PAGE * usize::from(slots)];
        let host = pages.as_mut_ptr().cast::<u8>();
        let bytes = (pages.len() * PAGE) as u64;
        let mut space = AddressSpace::new();
        // SAFETY: the pages belong to the region's owner (moving the Vec into the Arc does not
        // move its heap buffer), so the range stays valid while the region lives.
        let region = unsafe { DmaRegion::new(0, bytes, host, Perm::RW, Arc::new(pages)) };
        space.map(region).map_err(Error::Buffers)?;
        Ok(Buffers {
            space,
            stride: stride as u64,
            len: len as usize,
        })
    }

    fn request(&self, slot: u16, op: BlockOp, offset: u64) -> Result<BlockRequest, Error> {
        // The engine reads the buffer for a write and fills it for a read.
        let access = if op == BlockOp::Write {
            Access::Read
        } else {
            Access::Write
        };
        let seg = self
            .space
            .translate(u64::from(slot) * self.stride, self.len, access)
            .map_err(Error::Buffers)?;
        Ok(BlockRequest {
            op,
            offset,
            len: self.len as u64,
            segments: vec![seg],
            tag: u64::from(slot),
        })
    }

    fn fill(&self, slot: u16, seed: u64) -> Result<(), Error> {
        let mut data = vec![0u8; self.len];
        pattern::fill(seed, u64::from(slot) * self.len as u64, &mut data);
        self.space
            .write(u64::from(slot) * self.stride, &data)
            .map_err(Error::Buffers)
    }
}

pub fn run(job: &NativeJob) -> Result<Sample, Error> {
    if job.work.queue_depth == 0 || job.work.block_size == 0 {
        return Err(Error::Params(format!(
            "queue depth {} and block size {} must be positive",
            job.work.queue_depth, job.work.block_size
        )));
    }
    // Declared before the engine so it is dropped after it: requests point into it.
    let bufs = Buffers::new(job.work.queue_depth, job.work.block_size)?;
    let mut engine = job
        .backend
        .open(u32::from(job.work.queue_depth))
        .map_err(|e| Error::Open(job.backend.to_string(), e))?;
    let bs = u64::from(job.work.block_size);
    let device = engine.capacity();
    let region = match job.work.region_bytes {
        0 => device - device % bs,
        r => r,
    };
    if !bs.is_multiple_of(u64::from(engine.block_size())) {
        return Err(Error::Params(format!(
            "block size {bs} is not a multiple of the device's {}-byte blocks",
            engine.block_size()
        )));
    }
    if region == 0 || !region.is_multiple_of(bs) || region > device {
        return Err(Error::Params(format!(
            "region of {region} bytes must be a non-zero multiple of {bs} within the device's {device} bytes"
        )));
    }
    let (op, mut offsets) = match job.work.workload {
        Workload::RandRead => (BlockOp::Read, Offsets::random(region, bs, job.work.seed)),
        Workload::RandWrite => (BlockOp::Write, Offsets::random(region, bs, job.work.seed)),
        Workload::Read => (BlockOp::Read, Offsets::sequential(region, bs)),
        Workload::Write => (BlockOp::Write, Offsets::sequential(region, bs)),
        Workload::Verify => return Err(Error::Workload(Workload::Verify.name())),
    };
    if op == BlockOp::Write {
        for slot in 0..job.work.queue_depth {
            bufs.fill(slot, job.work.seed)?;
        }
    }

    let limit = if job.work.ops == 0 {
        u64::MAX
    } else {
        job.work.ops
    };
    let mut started = vec![None::<Instant>; usize::from(job.work.queue_depth)];
    let mut free: Vec<u16> = (0..job.work.queue_depth).rev().collect();
    let mut done: Vec<Completion> = Vec::with_capacity(usize::from(job.work.queue_depth));
    let mut latency = Histogram::new();
    let mut counts = Counts::default();
    let mut submitted = 0u64;

    let cpu0 = cpu::process_time();
    let t0 = Instant::now();
    let deadline = (!job.work.duration.is_zero()).then(|| t0 + job.work.duration);
    let mut last_completion = t0;
    loop {
        let now = Instant::now();
        let submitting = submitted < limit && deadline.is_none_or(|d| now < d);
        let mut pushed = false;
        while submitting && submitted < limit {
            let Some(slot) = free.pop() else { break };
            let request = bufs.request(slot, op, offsets.next_offset())?;
            // SAFETY: the segment points into `bufs`, which is declared before `engine` and so
            // dropped after it; the engine waits for every request in flight when dropped.
            if let Err(e) = unsafe { engine.push(request) } {
                free.push(slot);
                if e.reason == backends::engine::SubmitErrorKind::Full {
                    break;
                }
                return Err(Error::Engine(e.reason));
            }
            started[usize::from(slot)] = Some(Instant::now());
            submitted += 1;
            pushed = true;
        }
        if pushed {
            engine.submit().map_err(Error::Engine)?;
        }
        if engine.in_flight() == 0 {
            if !submitting || submitted >= limit {
                break;
            }
            continue;
        }
        if engine.reap(&mut done) == 0 {
            engine.wait(1).map_err(Error::Engine)?;
            engine.reap(&mut done);
        }
        let now = Instant::now();
        for c in done.drain(..) {
            let slot = c.tag as u16;
            let Some(t) = started.get_mut(usize::from(slot)).and_then(Option::take) else {
                continue;
            };
            latency.record(now.duration_since(t).as_nanos() as u64);
            counts.ops += 1;
            match c.result {
                Ok(n) => counts.bytes += n,
                Err(_) => counts.errors += 1,
            }
            free.push(slot);
            last_completion = now;
        }
    }
    counts.elapsed_s = last_completion.duration_since(t0).as_secs_f64();
    let cpu_s = (cpu::process_time() - cpu0).as_secs_f64();
    drop(engine);
    Ok(Sample::new(counts, &latency, 1000.0, None, cpu_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(backend: BackendSpec, workload: Workload, qd: u16, ops: u64) -> NativeJob {
        NativeJob {
            backend,
            work: BlockWork {
                workload,
                block_size: 4096,
                queue_depth: qd,
                ops,
                duration: Duration::ZERO,
                region_bytes: 0,
                seed: 11,
            },
        }
    }

    fn file(
        dir: &tempfile::TempDir,
        fill: u8,
        read_only: bool,
    ) -> (std::path::PathBuf, BackendSpec) {
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![fill; 1 << 20]).unwrap();
        let spec = BackendSpec::File {
            path: path.clone(),
            direct: false,
            read_only,
        };
        (path, spec)
    }

    #[test]
    fn runs_exactly_the_requested_ops_at_depth() {
        let s = run(&job(
            BackendSpec::Null { size: 1 << 20 },
            Workload::RandRead,
            8,
            1000,
        ))
        .unwrap();
        assert_eq!((s.ops, s.errors, s.bytes), (1000, 0, 1000 * 4096));
        assert!(s.iops() > 0.0 && s.p50_us >= 0.0);
        assert_eq!(s.device_exits, None);
    }

    #[test]
    fn random_writes_land_at_the_generator_offsets_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spec) = file(&dir, 0, false);
        let s = run(&job(spec, Workload::RandWrite, 1, 20)).unwrap();
        assert_eq!((s.ops, s.errors), (20, 0));
        let data = std::fs::read(&path).unwrap();
        let mut offsets = Offsets::random(1 << 20, 4096, 11);
        let mut expect = vec![0u8; 4096];
        pattern::fill(11, 0, &mut expect);
        for _ in 0..20 {
            let at = offsets.next_offset() as usize;
            assert_eq!(data[at..at + 4096], expect[..], "block at {at:#x}");
        }
    }

    #[test]
    fn duration_bounds_the_run() {
        let mut j = job(BackendSpec::Null { size: 1 << 20 }, Workload::Read, 4, 0);
        j.work.duration = Duration::from_millis(50);
        let t = Instant::now();
        let s = run(&j).unwrap();
        assert!(s.ops > 0);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn writes_to_a_read_only_file_fail_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spec) = file(&dir, 0x77, true);
        let s = run(&job(spec, Workload::Write, 2, 10)).unwrap();
        assert_eq!((s.ops, s.errors, s.bytes), (10, 10, 0));
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0x77));
    }

    #[test]
    fn bad_parameters_are_errors() {
        let null = BackendSpec::Null { size: 1 << 20 };
        assert!(matches!(
            run(&job(null.clone(), Workload::Verify, 1, 1)),
            Err(Error::Workload("verify"))
        ));
        assert!(matches!(
            run(&job(null.clone(), Workload::Read, 0, 1)),
            Err(Error::Params(_))
        ));
        let mut j = job(null.clone(), Workload::Read, 1, 1);
        j.work.block_size = 1000;
        assert!(matches!(run(&j), Err(Error::Params(_))));
        let mut j = job(null, Workload::Read, 1, 1);
        j.work.region_bytes = 2 << 20;
        assert!(matches!(run(&j), Err(Error::Params(_))));
        let missing = BackendSpec::File {
            path: "/nonexistent/disk".into(),
            direct: false,
            read_only: false,
        };
        assert!(matches!(
            run(&job(missing, Workload::Read, 1, 1)),
            Err(Error::Open(..))
        ));
    }
}
