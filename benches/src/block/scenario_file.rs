//! A scenario matrix from a TOML file (`iopath-bench block --scenario FILE`). Every key is
//! optional; what is missing keeps its default, and flags given on the command line win.
//!
//! ```toml
//! paths = ["emulated", "native"]
//! peers = ["fio"]
//! workloads = ["randread", "randwrite"]
//! block_sizes = ["4k", "64k"]
//! queue_depths = [1, 32]
//! backends = ["null", "file:/var/tmp/disk.img"]
//! runtime = "3s"
//! warmup = "1s"
//! repeat = 3
//! region = "1G"
//! memory = "256M"
//! seed = 7
//! ```

use std::path::{Path, PathBuf};

use backends::engine::BackendSpec;
use serde::Deserialize;
use vmm::units::{parse_duration, parse_size};

use super::{parse_workload, BlockOptions, IoPath};

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub paths: Option<Vec<String>>,
    pub peers: Option<Vec<String>>,
    pub workloads: Option<Vec<String>>,
    pub block_sizes: Option<Vec<String>>,
    pub queue_depths: Option<Vec<u16>>,
    pub backends: Option<Vec<String>>,
    pub runtime: Option<String>,
    pub warmup: Option<String>,
    pub repeat: Option<u32>,
    pub region: Option<String>,
    pub memory: Option<String>,
    pub seed: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read scenario file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("scenario file {0}")]
    Parse(PathBuf, #[source] toml::de::Error),
    #[error("scenario file {file}: {key}: {why}")]
    Value {
        file: PathBuf,
        key: &'static str,
        why: String,
    },
}

impl ScenarioFile {
    pub fn read(path: &Path) -> Result<ScenarioFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| Error::Parse(path.to_path_buf(), e))
    }

    /// Writes what the file sets into `opts`; returns the peers it names.
    pub fn apply(&self, file: &Path, opts: &mut BlockOptions) -> Result<Vec<String>, Error> {
        let bad = |key: &'static str| {
            move |why: String| Error::Value {
                file: file.to_path_buf(),
                key,
                why,
            }
        };
        if let Some(v) = &self.paths {
            opts.paths = v
                .iter()
                .map(|s| s.parse::<IoPath>())
                .collect::<Result<_, _>>()
                .map_err(bad("paths"))?;
        }
        if let Some(v) = &self.workloads {
            opts.workloads = v
                .iter()
                .map(|s| parse_workload(s))
                .collect::<Result<_, _>>()
                .map_err(bad("workloads"))?;
        }
        if let Some(v) = &self.block_sizes {
            opts.block_sizes = v
                .iter()
                .map(|s| {
                    let n = parse_size(s).map_err(|e| e.to_string())?;
                    u32::try_from(n).map_err(|_| format!("{s} does not fit in 32 bits"))
                })
                .collect::<Result<_, _>>()
                .map_err(bad("block_sizes"))?;
        }
        if let Some(v) = &self.queue_depths {
            opts.queue_depths = v.clone();
        }
        if let Some(v) = &self.backends {
            opts.backends = v
                .iter()
                .map(|s| s.parse::<BackendSpec>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()
                .map_err(bad("backends"))?;
        }
        if let Some(v) = &self.runtime {
            opts.runtime = parse_duration(v).map_err(|e| bad("runtime")(e.to_string()))?;
        }
        if let Some(v) = &self.warmup {
            opts.warmup = parse_duration(v).map_err(|e| bad("warmup")(e.to_string()))?;
        }
        if let Some(v) = self.repeat {
            opts.repeat = v;
        }
        if let Some(v) = &self.region {
            opts.region_bytes = parse_size(v).map_err(|e| bad("region")(e.to_string()))?;
        }
        if let Some(v) = &self.memory {
            opts.memory = parse_size(v).map_err(|e| bad("memory")(e.to_string()))?;
        }
        if let Some(v) = self.seed {
            opts.seed = v;
        }
        Ok(self.peers.clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iopath_mailbox::Workload;
    use std::time::Duration;

    fn apply(text: &str) -> Result<(BlockOptions, Vec<String>), Error> {
        let f: ScenarioFile = toml::from_str(text).map_err(|e| Error::Parse("t.toml".into(), e))?;
        let mut opts = BlockOptions::default();
        let peers = f.apply(Path::new("t.toml"), &mut opts)?;
        Ok((opts, peers))
    }

    #[test]
    fn every_key_reaches_the_options() {
        let (o, peers) = apply(
            r#"
            paths = ["native"]
            peers = ["fio"]
            workloads = ["randwrite", "read"]
            block_sizes = ["4k", "128k"]
            queue_depths = [2, 8]
            backends = ["null:64M", "file,direct:/x"]
            runtime = "2s"
            warmup = "500ms"
            repeat = 5
            region = "32M"
            memory = "512M"
            seed = 9
            "#,
        )
        .unwrap();
        assert_eq!(o.paths, [IoPath::Native]);
        assert_eq!(peers, ["fio"]);
        assert_eq!(o.workloads, [Workload::RandWrite, Workload::Read]);
        assert_eq!(o.block_sizes, [4096, 131072]);
        assert_eq!(o.queue_depths, [2, 8]);
        assert_eq!(o.backends.len(), 2);
        assert_eq!(
            (o.runtime, o.warmup),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        assert_eq!(
            (o.repeat, o.region_bytes, o.memory, o.seed),
            (5, 32 << 20, 512 << 20, 9)
        );
    }

    #[test]
    fn missing_keys_keep_defaults() {
        let (o, peers) = apply("repeat = 1").unwrap();
        assert_eq!(o.repeat, 1);
        assert_eq!(o.queue_depths, BlockOptions::default().queue_depths);
        assert!(peers.is_empty());
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = apply(r#"workloads = ["sideways"]"#).unwrap_err();
        assert!(e.to_string().contains("workloads"), "{e}");
        let e = apply(r#"block_sizes = ["8G"]"#).unwrap_err();
        assert!(e.to_string().contains("block_sizes"), "{e}");
        assert!(matches!(apply("colour = 3"), Err(Error::Parse(..))));
        assert!(matches!(apply("repeat = \"x\""), Err(Error::Parse(..))));
    }
}
