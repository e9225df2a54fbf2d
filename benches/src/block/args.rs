//! The `block` subcommand's flags, and how they combine with a scenario file: the file first,
//! then every flag given on the command line.

use std::path::PathBuf;

use backends::engine::BackendSpec;
use clap::Args;
use iopath_mailbox::Workload;
use vmm::units::parse_size;

use super::scenario_file::{self, ScenarioFile};
use super::vhost_backend::{self, BackendProgram};
use super::{fio, parse_workload, BlockOptions, IoPath};
use crate::matrix_args::{MatrixArgs, Timing};

#[derive(Args, Debug, Default)]
pub struct BlockArgs {
    /// A TOML scenario matrix (see the README); flags below override what it sets.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Paths to compare, comma separated: emulated, virtio, passthrough, native [default: all].
    #[arg(long, value_delimiter = ',')]
    pub paths: Option<Vec<IoPath>>,
    /// Peers beside our paths, comma separated: fio (a second native reference on the host),
    /// qsd (qemu-storage-daemon as the vhost-user-blk backend of the virtio path), qemu (the
    /// same bench guest under QEMU with its nvme and virtio-blk devices). A peer whose binary
    /// is missing is reported and skipped.
    #[arg(long, value_delimiter = ',', value_parser = ["fio", "qsd", "qemu"])]
    pub peer: Vec<String>,
    /// Run this vhost-user-blk daemon for the virtio path instead of ours (it gets our
    /// daemon's flags: --socket PATH and --path FILE [--direct] [--readonly] or --null SIZE).
    #[arg(long)]
    pub vhost_user_blk_bin: Option<PathBuf>,
    /// Our vhost-user-blk daemon polls its ring this many microseconds after work before
    /// sleeping (0: never) [default: 50].
    #[arg(long)]
    pub vhost_poll_us: Option<u64>,
    /// Workloads, comma separated: randread, randwrite, read, write [default: randread].
    #[arg(long, value_delimiter = ',', value_parser = parse_workload)]
    pub workload: Option<Vec<Workload>>,
    /// Bytes per I/O, comma separated [default: 4k].
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub bs: Option<Vec<u64>>,
    /// Queue depths, comma separated [default: 1,32].
    #[arg(long, value_delimiter = ',')]
    pub qd: Option<Vec<u16>>,
    /// `null`, `null:SIZE` or `file[,direct][,ro]:PATH`; repeat for several [default: null and
    /// a temporary file].
    #[arg(long)]
    pub backend: Vec<BackendSpec>,
    /// Bytes of each disk to cover [default: all of it].
    #[arg(long, value_parser = parse_size)]
    pub region: Option<u64>,
    /// Size of the temporary file used without --backend.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub temp_file_size: u64,
    #[command(flatten)]
    pub run: MatrixArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Scenario(#[from] scenario_file::Error),
    #[error("--bs {0} does not fit in 32 bits")]
    BlockSize(u64),
}

/// The options to run, and peers that were asked for but cannot run here (with why).
pub struct Resolved {
    pub options: BlockOptions,
    pub skipped_peers: Vec<String>,
}

impl BlockArgs {
    pub fn resolve(&self) -> Result<Resolved, Error> {
        let mut o = BlockOptions::default();
        let mut peers = Vec::new();
        if let Some(file) = &self.scenario {
            peers = ScenarioFile::read(file)?.apply(file, &mut o)?;
        }
        if let Some(v) = &self.paths {
            o.paths = v.clone();
        }
        peers.extend(self.peer.iter().cloned());
        if let Some(v) = &self.workload {
            o.workloads = v.clone();
        }
        if let Some(v) = &self.bs {
            o.block_sizes = v
                .iter()
                .map(|&b| u32::try_from(b).map_err(|_| Error::BlockSize(b)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = &self.qd {
            o.queue_depths = v.clone();
        }
        if !self.backend.is_empty() {
            o.backends = self.backend.clone();
        }
        self.run.apply(Timing {
            runtime: &mut o.runtime,
            warmup: &mut o.warmup,
            repeat: &mut o.repeat,
            memory: &mut o.memory,
        });
        if let Some(v) = self.region {
            o.region_bytes = v;
        }
        o.temp_file_size = self.temp_file_size;
        if let Some(us) = self.vhost_poll_us {
            o.vhost_poll_us = us;
        }
        if let Some(bin) = &self.vhost_user_blk_bin {
            o.vhost_user_blk_bin = Some(bin.clone());
        }
        let mut skipped_peers = Vec::new();
        for peer in peers {
            match peer.as_str() {
                "fio" if !fio::available() => {
                    skipped_peers.push("fio: not installed (apt install fio)".to_string())
                }
                "fio" if !o.paths.contains(&IoPath::Fio) => o.paths.push(IoPath::Fio),
                "fio" => {}
                "qsd" if !vhost_backend::available(&BackendProgram::Qsd) => skipped_peers.push(
                    "qsd: qemu-storage-daemon is not installed (apt install qemu-utils)".into(),
                ),
                "qsd" if !o.paths.contains(&IoPath::VirtioQsd) => {
                    // Beside our virtio row, before native.
                    let at = o.paths.iter().position(|p| *p == IoPath::Native);
                    o.paths
                        .insert(at.unwrap_or(o.paths.len()), IoPath::VirtioQsd);
                }
                "qsd" => {}
                "qemu" => match crate::peer::qemu::available() {
                    Err(e) => skipped_peers.push(format!(
                        "qemu: {}",
                        e.skip_reason().unwrap_or("cannot run here")
                    )),
                    Ok(_) => {
                        for p in [IoPath::QemuNvme, IoPath::QemuVirtio] {
                            if !o.paths.contains(&p) {
                                let at = o.paths.iter().position(|x| *x == IoPath::Native);
                                o.paths.insert(at.unwrap_or(o.paths.len()), p);
                            }
                        }
                    }
                },
                other => {
                    skipped_peers.push(format!("{other}: unknown peer (expected fio, qsd or qemu)"))
                }
            }
        }
        Ok(Resolved {
            options: o,
            skipped_peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn flags_override_the_scenario_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "repeat = 7\nqueue_depths = [4]\nruntime = \"9s\"\n").unwrap();
        let args = BlockArgs {
            scenario: Some(file),
            qd: Some(vec![16]),
            bs: Some(vec![8192, 65536]),
            temp_file_size: 1 << 20,
            ..BlockArgs::default()
        };
        let o = args.resolve().unwrap().options;
        assert_eq!(o.repeat, 7, "from the file");
        assert_eq!(o.runtime, Duration::from_secs(9), "from the file");
        assert_eq!(o.queue_depths, [16], "the flag wins");
        assert_eq!(o.block_sizes, [8192, 65536]);
        assert_eq!(o.paths, BlockOptions::default().paths, "default");
    }

    #[test]
    fn oversized_block_size_and_missing_file_are_errors() {
        let args = BlockArgs {
            bs: Some(vec![1 << 33]),
            ..BlockArgs::default()
        };
        assert!(matches!(args.resolve(), Err(Error::BlockSize(_))));
        let args = BlockArgs {
            scenario: Some("/nonexistent/s.toml".into()),
            ..BlockArgs::default()
        };
        assert!(args.resolve().is_err());
    }
}
