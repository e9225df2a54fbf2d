//! Runs the matrix: every cell on every path, paths interleaved within each repetition so drift
//! on the host hits them alike. Each run gets a fresh far side (a namespace for `netns`).

use std::time::Duration;

use iopath_mailbox::net::NetWorkload;

use super::far::FarSide;
use super::guest_vm::{self, GuestNic, GuestVmJob};
use super::native::{self, NativeJob, NativeLink};
use super::summary::{compare_with_native, summarize};
use super::{testpmd, Error, Far, NetOptions, NetPath, NetReport, NetSample, NetWork, Scenario};
use crate::block::Progress;
use crate::host::HostInfo;

/// One measurement point.
struct Point {
    path: NetPath,
    workload: NetWorkload,
    frame_bytes: u32,
    far: Far,
    depth: u16,
}

impl Point {
    fn describe(&self) -> String {
        format!(
            "{} {} B, far end {}, depth {}",
            self.workload.name(),
            self.frame_bytes,
            self.far,
            self.depth
        )
    }
}

/// The far-end label of a path's rows: the peers are their own far end.
fn far_label(path: NetPath, far: Far) -> &'static str {
    match path {
        NetPath::VirtioTestpmd => "testpmd",
        NetPath::TestpmdFrontend => "sink",
        _ => far.name(),
    }
}

/// Whether `path` runs in this cell: the peers run once per depth (with the first far end),
/// and the testpmd frontend only sends.
fn runs(path: NetPath, workload: NetWorkload, far: Far, opts: &NetOptions) -> bool {
    match path {
        NetPath::VirtioTestpmd => opts.fars.first() == Some(&far),
        NetPath::TestpmdFrontend => opts.fars.first() == Some(&far) && workload == NetWorkload::Tx,
        _ => true,
    }
}

/// Runs the matrix of `opts`; `progress` hears about every measured run.
pub fn run(opts: &NetOptions, mut progress: impl FnMut(Progress)) -> Result<NetReport, Error> {
    if opts.paths.is_empty()
        || opts.workloads.is_empty()
        || opts.frame_sizes.is_empty()
        || opts.depths.is_empty()
        || opts.fars.is_empty()
        || opts.repeat == 0
    {
        return Err(Error::Options(
            "need at least one path, workload, frame size, depth, far end and repetition",
        ));
    }
    let mut cells = 0;
    for &w in &opts.workloads {
        for &far in &opts.fars {
            cells += opts
                .paths
                .iter()
                .filter(|&&p| runs(p, w, far, opts))
                .count();
        }
    }
    let total = cells * opts.frame_sizes.len() * opts.depths.len() * opts.repeat as usize;
    let mut done = 0;
    let mut scenarios = Vec::new();
    for &workload in &opts.workloads {
        for &frame_bytes in &opts.frame_sizes {
            let mut rows = Vec::new();
            for &far in &opts.fars {
                for &depth in &opts.depths {
                    let paths: Vec<NetPath> = opts
                        .paths
                        .iter()
                        .copied()
                        .filter(|&p| runs(p, workload, far, opts))
                        .collect();
                    let mut samples: Vec<Vec<NetSample>> = vec![Vec::new(); paths.len()];
                    for rep in 1..=opts.repeat {
                        for (i, &path) in paths.iter().enumerate() {
                            let point = Point {
                                path,
                                workload,
                                frame_bytes,
                                far,
                                depth,
                            };
                            if !opts.warmup.is_zero() {
                                run_one(opts, &point, opts.warmup)?;
                            }
                            let s = run_one(opts, &point, opts.runtime)?;
                            done += 1;
                            let line = format!(
                                "{path} {} {frame_bytes} B {} depth {depth} run {rep}/{}: {:.0} pps, p99 {:.1} us, lost {}",
                                workload.name(),
                                far_label(path, far),
                                opts.repeat,
                                s.pps(),
                                s.sample.p99_us,
                                s.lost,
                            );
                            progress(Progress {
                                done,
                                total,
                                line: &line,
                            });
                            samples[i].push(s);
                        }
                    }
                    let first = rows.len();
                    for (&path, samples) in paths.iter().zip(samples) {
                        rows.push(summarize(path, far_label(path, far), depth, samples));
                    }
                    compare_with_native(&mut rows[first..]);
                }
            }
            scenarios.push(Scenario {
                workload: workload.name().into(),
                frame_bytes,
                rows,
            });
        }
    }
    Ok(NetReport {
        host: HostInfo::probe(),
        runtime_s: opts.runtime.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        repeat: opts.repeat,
        vhost_poll_us: opts.vhost_poll_us,
        scenarios,
    })
}

fn run_one(opts: &NetOptions, p: &Point, duration: Duration) -> Result<NetSample, Error> {
    let work = NetWork {
        workload: p.workload,
        frame_bytes: p.frame_bytes,
        depth: p.depth,
        ops: 0,
        duration,
        timeout: opts.timeout,
        seed: opts.seed,
    };
    let far = |f| FarSide::new(f).map_err(|e| Error::Far(f, e));
    let guest_vm = |nic, far: &FarSide| {
        guest_vm::run(
            &GuestVmJob {
                nic,
                work: work.clone(),
                memory: opts.memory,
            },
            far,
        )
        .map_err(|e| Error::GuestVm(p.path, p.describe(), e))
    };
    let side = match p.path {
        NetPath::TestpmdFrontend => {
            return testpmd::frontend(
                opts.vhost_user_net_bin.as_deref(),
                opts.vhost_poll_us,
                &work,
            )
            .map_err(|e| Error::Testpmd(p.describe(), e));
        }
        // testpmd swaps the MACs itself.
        NetPath::VirtioTestpmd => far(Far::Reflect)?,
        _ => far(p.far)?,
    };
    let mut sample = match p.path {
        NetPath::Emulated => guest_vm(GuestNic::E1000, &side),
        NetPath::Virtio => guest_vm(
            GuestNic::VhostUser {
                bin: opts.vhost_user_net_bin.clone(),
                poll_us: opts.vhost_poll_us,
            },
            &side,
        ),
        NetPath::VirtioTestpmd => guest_vm(GuestNic::Testpmd, &side),
        NetPath::TestpmdFrontend => Err(Error::Options("the testpmd frontend has no far side")),
        NetPath::Native => {
            let link = side
                .tap()
                .map_or(NativeLink::Reflect, |t| NativeLink::Tap(t.into()));
            side.run_in(|| native::run(&NativeJob { link, work }))
                .map_err(|e| Error::Far(p.far, e))?
                .map_err(|e| Error::Native(p.describe(), e))
        }
    }?;
    sample.far_received = side.counts().map(|c| c.received);
    Ok(sample)
}
