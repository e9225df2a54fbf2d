//! The net job: checks its parameters, opens the requested device and runs the workload through
//! a [`device::NetQueue`], so every driver shares one measured loop.

pub mod device;
mod pass;

use iopath_mailbox::net::{self, NetDevice, NetJob, NetResults, NetWorkload};
use iopath_mailbox::{error, Job};

use self::device::{NetConfig, NetQueue};
use crate::e1000::E1000;
use crate::pci::{self, Match};
use crate::scratch::Scratch;
use crate::virtio::VirtioNet;
use crate::{clock, log};

/// Frames in flight (round trip) or per notification (tx): bounds the guest's bookkeeping.
pub const MAX_DEPTH: usize = 256;
/// A round-trip frame not back after this long is lost, unless the job says otherwise.
const DEFAULT_TIMEOUT_MS: u64 = 100;

/// The job's parameters, checked.
pub struct Params {
    pub device: NetDevice,
    pub workload: NetWorkload,
    pub frame_bytes: u32,
    pub depth: u16,
    pub ops: u64,
    pub duration_ms: u64,
    pub dst: [u8; 6],
    pub timeout_ms: u64,
    pub tsc_khz: u64,
    pub seed: u64,
}

pub fn run(job: &Job) -> Result<NetResults, u32> {
    let p = params(job)?;
    let cfg = NetConfig {
        tx_frames: p.depth,
        max_frame: p.frame_bytes,
        tsc_khz: p.tsc_khz,
    };
    let mut scratch = Scratch::all();
    match p.device {
        NetDevice::E1000 => {
            let dev = pci::find(Match::E1000).ok_or(error::NO_DEVICE)?;
            let mut nic = E1000::open(&dev, &mut scratch, &cfg)?;
            run_on(&mut nic, &p, "e1000")
        }
        NetDevice::VirtioNet => {
            let dev = pci::find(Match::VIRTIO_NET).ok_or(error::NO_DEVICE)?;
            let mut nic = VirtioNet::open(&dev, &mut scratch, &cfg)?;
            run_on(&mut nic, &p, "virtio-net")
        }
    }
}

fn params(job: &Job) -> Result<Params, u32> {
    let n: &NetJob = &job.net;
    let Some(device) = NetDevice::from_raw(n.device) else {
        log!("net: unknown device {}", n.device);
        return Err(error::BAD_PARAMETER);
    };
    let Some(workload) = NetWorkload::from_raw(n.workload) else {
        log!("net: unknown workload {}", n.workload);
        return Err(error::BAD_PARAMETER);
    };
    if job.tsc_khz == 0 {
        log!("net: tsc_khz is 0; the guest cannot bound its waits");
        return Err(error::BAD_PARAMETER);
    }
    if !(net::MIN_FRAME..=net::MAX_FRAME).contains(&n.frame_bytes) {
        log!(
            "net: frame_bytes {} not in {}..={}",
            n.frame_bytes,
            net::MIN_FRAME,
            net::MAX_FRAME
        );
        return Err(error::BAD_PARAMETER);
    }
    let depth = match u16::try_from(n.depth) {
        Ok(d) if d != 0 && usize::from(d) <= MAX_DEPTH => d,
        _ => {
            log!("net: depth {} not in 1..={}", n.depth, MAX_DEPTH);
            return Err(error::BAD_PARAMETER);
        }
    };
    if n.ops == 0 && n.duration_ms == 0 {
        log!("net: {} needs ops or duration_ms", workload.name());
        return Err(error::BAD_PARAMETER);
    }
    Ok(Params {
        device,
        workload,
        frame_bytes: n.frame_bytes,
        depth,
        ops: n.ops,
        duration_ms: n.duration_ms,
        dst: match n.dst_mac {
            0 => net::BROADCAST,
            mac => net::mac_from_u64(mac),
        },
        timeout_ms: match n.timeout_ms {
            0 => DEFAULT_TIMEOUT_MS,
            ms => ms,
        },
        tsc_khz: job.tsc_khz,
        seed: job.seed,
    })
}

/// Runs the workload on an opened device.
pub fn run_on<Q: NetQueue>(q: &mut Q, p: &Params, name: &str) -> Result<NetResults, u32> {
    let mut res = NetResults {
        mac: net::mac_to_u64(q.mac()),
        ..NetResults::default()
    };
    match p.workload {
        NetWorkload::Tx => pass::tx(q, p, &mut res),
        NetWorkload::RoundTrip => pass::round_trip(q, p, &mut res),
    }
    summary(name, p, &res);
    if res.bad > 0 || res.lost > 0 {
        q.log_state();
    }
    Ok(res)
}

fn summary(name: &str, p: &Params, res: &NetResults) {
    let us = clock::ticks_to_us(res.elapsed_ticks, p.tsc_khz);
    log!(
        "net: {} {} {} bytes depth {}: {} sent, {} back, {} bad, {} lost, {} foreign in {} us ({} frames/s)",
        name,
        p.workload.name(),
        p.frame_bytes,
        p.depth,
        res.sent,
        res.received,
        res.bad,
        res.lost,
        res.foreign,
        us,
        res.sent
            .saturating_mul(1_000_000)
            .checked_div(us)
            .unwrap_or(0)
    );
}
