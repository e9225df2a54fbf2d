//! The `net` subcommand's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use iopath_mailbox::net::NetWorkload;
use vmm::units::parse_duration;

use super::{parse_frame, parse_workload, testpmd, Far, NetOptions, NetPath};
use crate::matrix_args::{MatrixArgs, Timing};

#[derive(Args, Debug, Default)]
pub struct NetArgs {
    /// Paths to compare, comma separated: emulated, virtio, native [default: all three].
    #[arg(long, value_delimiter = ',')]
    pub paths: Option<Vec<NetPath>>,
    /// Peers beside our paths: testpmd (DPDK testpmd as the guest's vhost-user-net backend,
    /// and with no VM as a virtio-user frontend of our daemon). Skipped if not installed.
    #[arg(long, value_delimiter = ',', value_parser = ["testpmd"])]
    pub peer: Vec<String>,
    /// Workloads, comma separated: tx (frames per second), rr (round trips) [default: both].
    #[arg(long, value_delimiter = ',', value_parser = parse_workload)]
    pub workload: Option<Vec<NetWorkload>>,
    /// Frame sizes in bytes without FCS, 60..=1514, comma separated [default: 64,1514].
    #[arg(long, value_delimiter = ',', value_parser = parse_frame)]
    pub frame: Option<Vec<u32>>,
    /// Frames in flight (rr) or per notification (tx), comma separated [default: 1,32].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=256))]
    pub depth: Option<Vec<u16>>,
    /// What turns frames around, comma separated: reflect (each path's own process), netns (a
    /// reflector in a network namespace behind a TAP device; needs root and iproute2)
    /// [default: reflect].
    #[arg(long, value_delimiter = ',')]
    pub far: Option<Vec<Far>>,
    /// Round trip: a frame not back after this long is lost [default: 100ms].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Run this vhost-user-net daemon for the virtio path instead of ours (it gets our daemon's
    /// flags: --socket PATH, --tap NAME or --reflect or --sink, --poll-us N).
    #[arg(long)]
    pub vhost_user_net_bin: Option<PathBuf>,
    /// Our vhost-user-net daemon polls its rings this many microseconds after work before
    /// sleeping (0: never) [default: 50].
    #[arg(long)]
    pub vhost_poll_us: Option<u64>,
    #[command(flatten)]
    pub run: MatrixArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--far netns cannot run here")]
    Netns(#[source] backends::host_net::Error),
    #[error("--vhost-user-net-bin {0}: no such file")]
    NoDaemon(PathBuf),
}

/// The options to run, and peers that were asked for but cannot run here (with why).
pub struct Resolved {
    pub options: NetOptions,
    pub skipped_peers: Vec<String>,
}

impl NetArgs {
    pub fn resolve(&self) -> Result<Resolved, Error> {
        let mut o = NetOptions::default();
        if let Some(v) = &self.paths {
            o.paths = v.clone();
        }
        if let Some(v) = &self.workload {
            o.workloads = v.clone();
        }
        if let Some(v) = &self.frame {
            o.frame_sizes = v.clone();
        }
        if let Some(v) = &self.depth {
            o.depths = v.clone();
        }
        if let Some(v) = &self.far {
            o.fars = v.clone();
        }
        self.run.apply(Timing {
            runtime: &mut o.runtime,
            warmup: &mut o.warmup,
            repeat: &mut o.repeat,
            memory: &mut o.memory,
        });
        if let Some(v) = self.timeout {
            o.timeout = v;
        }
        if let Some(v) = self.vhost_poll_us {
            o.vhost_poll_us = v;
        }
        if let Some(bin) = &self.vhost_user_net_bin {
            if !bin.is_file() {
                return Err(Error::NoDaemon(bin.clone()));
            }
            o.vhost_user_net_bin = Some(bin.clone());
        }
        if o.fars.contains(&Far::Netns) {
            backends::host_net::available().map_err(Error::Netns)?;
        }
        let mut skipped_peers = Vec::new();
        for peer in &self.peer {
            match peer.as_str() {
                "testpmd" if testpmd::find().is_none() => skipped_peers.push(format!(
                    "testpmd: {} is not installed (apt install dpdk-dev)",
                    testpmd::TESTPMD
                )),
                "testpmd" => {
                    insert_before_native(&mut o.paths, NetPath::VirtioTestpmd);
                    insert_before_native(&mut o.paths, NetPath::TestpmdFrontend);
                }
                other => skipped_peers.push(format!("{other}: unknown peer (expected testpmd)")),
            }
        }
        Ok(Resolved {
            options: o,
            skipped_peers,
        })
    }
}

/// Adds a peer's path beside ours, before native (the reference stays last).
fn insert_before_native(paths: &mut Vec<NetPath>, p: NetPath) {
    if !paths.contains(&p) {
        let at = paths.iter().position(|x| *x == NetPath::Native);
        paths.insert(at.unwrap_or(paths.len()), p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_defaults() {
        let args = NetArgs {
            paths: Some(vec![NetPath::Native]),
            frame: Some(vec![60]),
            depth: Some(vec![4]),
            run: MatrixArgs {
                repeat: Some(1),
                ..MatrixArgs::default()
            },
            ..NetArgs::default()
        };
        let o = args.resolve().unwrap().options;
        assert_eq!(o.paths, [NetPath::Native]);
        assert_eq!((o.frame_sizes, o.depths, o.repeat), (vec![60], vec![4], 1));
        assert_eq!(o.fars, [Far::Reflect], "default far end");
        assert_eq!(o.workloads, NetWorkload::ALL);
    }

    #[test]
    fn peers_go_before_native_or_are_skipped_with_a_reason() {
        let args = NetArgs {
            peer: vec!["testpmd".into()],
            ..NetArgs::default()
        };
        let r = args.resolve().unwrap();
        if testpmd::find().is_none() {
            assert!(r.skipped_peers[0].contains("apt install dpdk-dev"));
            assert_eq!(r.options.paths, NetOptions::default().paths);
        } else {
            assert_eq!(r.options.paths.last(), Some(&NetPath::Native));
            assert!(r.options.paths.contains(&NetPath::VirtioTestpmd));
        }
        let missing = NetArgs {
            vhost_user_net_bin: Some("/nonexistent/daemon".into()),
            ..NetArgs::default()
        };
        assert!(matches!(missing.resolve(), Err(Error::NoDaemon(_))));
    }
}
