//! The block job: checks its parameters, opens the requested device and runs the workload
//! through a [`device::BlockQueue`], so every driver shares one measured loop.

mod buffers;
pub mod device;
mod pass;

use iopath_mailbox::offsets::Offsets;
use iopath_mailbox::{error, pattern, BlockDevice, BlockResults, Job, Workload};

use self::buffers::Buffers;
use self::device::{BlockQueue, Op, QueueConfig};
use self::pass::Pass;
use crate::nvme::Nvme;
use crate::pci::{self, Match};
use crate::scratch::{Scratch, PAGE};
use crate::virtio::VirtioBlk;
use crate::{clock, log};

/// Slots per queue: bounds the bookkeeping arrays the guest keeps on its stack.
pub const MAX_QUEUE_DEPTH: usize = 1024;
/// Logical blocks are at least this big, so offsets and sizes are multiples of it.
const SECTOR: u32 = 512;

/// The job's parameters, checked.
struct Params {
    device: BlockDevice,
    workload: Workload,
    block_size: u32,
    depth: u16,
    ops: u64,
    duration_ms: u64,
    region_bytes: u64,
    tsc_khz: u64,
    seed: u64,
}

pub fn run(job: &Job) -> Result<BlockResults, u32> {
    let p = params(job)?;
    let cfg = QueueConfig {
        depth: p.depth,
        io_bytes: p.block_size,
        tsc_khz: p.tsc_khz,
    };
    let mut scratch = Scratch::all();
    match p.device {
        BlockDevice::Nvme => {
            let dev = pci::find(Match::NVME).ok_or(error::NO_DEVICE)?;
            let mut nvme = Nvme::open(&dev, &mut scratch, &cfg)?;
            run_on(&mut nvme, &mut scratch, &p, "nvme")
        }
        BlockDevice::VirtioBlk => {
            let dev = pci::find(Match::VIRTIO_BLK).ok_or(error::NO_DEVICE)?;
            let mut blk = VirtioBlk::open(&dev, &mut scratch, &cfg)?;
            run_on(&mut blk, &mut scratch, &p, "virtio-blk")
        }
    }
}

fn params(job: &Job) -> Result<Params, u32> {
    let b = &job.block;
    let Some(device) = BlockDevice::from_raw(b.device) else {
        log!("block: unknown device {}", b.device);
        return Err(error::BAD_PARAMETER);
    };
    let Some(workload) = Workload::from_raw(b.workload) else {
        log!("block: unknown workload {}", b.workload);
        return Err(error::BAD_PARAMETER);
    };
    if job.tsc_khz == 0 {
        log!("block: tsc_khz is 0; the guest cannot bound its waits");
        return Err(error::BAD_PARAMETER);
    }
    let depth = match u16::try_from(b.queue_depth) {
        Ok(d) if d != 0 && usize::from(d) <= MAX_QUEUE_DEPTH => d,
        _ => {
            log!(
                "block: queue_depth {} not in 1..={}",
                b.queue_depth,
                MAX_QUEUE_DEPTH
            );
            return Err(error::BAD_PARAMETER);
        }
    };
    if b.block_size == 0 || !b.block_size.is_multiple_of(SECTOR) {
        log!(
            "block: block_size {} is not a positive multiple of {}",
            b.block_size,
            SECTOR
        );
        return Err(error::BAD_PARAMETER);
    }
    if workload != Workload::Verify && b.ops == 0 && b.duration_ms == 0 {
        log!("block: {} needs ops or duration_ms", workload.name());
        return Err(error::BAD_PARAMETER);
    }
    Ok(Params {
        device,
        workload,
        block_size: b.block_size,
        depth,
        ops: b.ops,
        duration_ms: b.duration_ms,
        region_bytes: b.region_bytes,
        tsc_khz: job.tsc_khz,
        seed: job.seed,
    })
}

/// Checks the parameters against the device, then runs the workload.
fn run_on<Q: BlockQueue>(
    q: &mut Q,
    scratch: &mut Scratch,
    p: &Params,
    name: &str,
) -> Result<BlockResults, u32> {
    let geo = q.geometry();
    let bs = u64::from(p.block_size);
    if geo.lba_bytes == 0 || !p.block_size.is_multiple_of(geo.lba_bytes) {
        log!(
            "block: block_size {} is not a multiple of the device's {}-byte blocks",
            p.block_size,
            geo.lba_bytes
        );
        return Err(error::BAD_PARAMETER);
    }
    // The whole device, rounded down to whole I/Os; or what the job asked for, exactly.
    let region = if p.region_bytes == 0 {
        geo.capacity_bytes - geo.capacity_bytes % bs
    } else {
        p.region_bytes
    };
    if region == 0 || region % bs != 0 || region > geo.capacity_bytes {
        log!(
            "block: region of {} bytes must be a non-zero multiple of block_size {} within the device's {} bytes",
            region,
            bs,
            geo.capacity_bytes
        );
        return Err(error::BAD_PARAMETER);
    }
    let Some(bufs) = Buffers::alloc(scratch, p.depth, p.block_size) else {
        log!(
            "block: {} buffers of {} bytes need {} bytes of scratch memory, {} are left",
            p.depth,
            p.block_size,
            Buffers::bytes_needed(p.depth, p.block_size),
            scratch.remaining(PAGE)
        );
        return Err(error::BAD_PARAMETER);
    };

    let mut res = BlockResults {
        device_bytes: geo.capacity_bytes,
        lba_bytes: geo.lba_bytes,
        ..BlockResults::default()
    };
    let pass = |op, offsets, ops, duration_ms, verify| Pass {
        op,
        offsets,
        ops,
        duration_ms,
        verify,
        tsc_khz: p.tsc_khz,
    };
    let (op, offsets) = match p.workload {
        Workload::Verify => {
            // Write the pattern over the whole region, then read all of it back.
            let blocks = region / bs;
            let seq = || Offsets::sequential(region, bs);
            let seed = Some(p.seed);
            pass::run(
                q,
                &bufs,
                p.depth,
                pass(Op::Write, seq(), blocks, 0, seed),
                &mut res,
            )?;
            pass::run(
                q,
                &bufs,
                p.depth,
                pass(Op::Read, seq(), blocks, 0, seed),
                &mut res,
            )?;
            summary(name, p, &res);
            return Ok(res);
        }
        Workload::RandRead => (Op::Read, Offsets::random(region, bs, p.seed)),
        Workload::RandWrite => (Op::Write, Offsets::random(region, bs, p.seed)),
        Workload::Read => (Op::Read, Offsets::sequential(region, bs)),
        Workload::Write => (Op::Write, Offsets::sequential(region, bs)),
    };
    if op == Op::Write {
        // Content does not matter; the pattern just avoids writing zeros a device might
        // special-case.
        for slot in 0..p.depth {
            // SAFETY: no I/O has been submitted yet; each buffer is borrowed once.
            pattern::fill(p.seed, u64::from(slot) * bs, unsafe {
                bufs.bytes_mut(slot)
            });
        }
    }
    pass::run(
        q,
        &bufs,
        p.depth,
        pass(op, offsets, p.ops, p.duration_ms, None),
        &mut res,
    )?;
    summary(name, p, &res);
    if res.errors > 0 {
        q.log_state();
    }
    Ok(res)
}

fn summary(name: &str, p: &Params, res: &BlockResults) {
    let us = clock::ticks_to_us(res.elapsed_ticks, p.tsc_khz);
    log!(
        "block: {} {} bs {} qd {}: {} ops, {} errors, {} bytes in {} us ({} IOPS)",
        name,
        p.workload.name(),
        p.block_size,
        p.depth,
        res.ops,
        res.errors,
        res.bytes,
        us,
        res.ops
            .saturating_mul(1_000_000)
            .checked_div(us)
            .unwrap_or(0)
    );
}
