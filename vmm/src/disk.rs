//! `--disk` values: what backs a disk and how the guest reaches it.
//!
//! `path=FILE[,direct=on][,readonly=on][,iface=nvme]` or `null[=SIZE][,iface=nvme]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use backends::engine::BackendSpec;

use crate::units::parse_size;

/// How the guest reaches a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskIface {
    /// The emulated NVMe controller: every register access exits to the VMM.
    Nvme,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub backend: BackendSpec,
    pub iface: DiskIface,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--disk needs path=FILE or null[=SIZE]")]
    NoBackend,
    #[error("--disk has both path= and null")]
    TwoBackends,
    #[error("unknown --disk key {0:?} (expected path, null, direct, readonly, iface)")]
    UnknownKey(String),
    #[error("--disk {key}={value:?}: expected on or off")]
    BadSwitch { key: String, value: String },
    #[error("--disk iface={0:?}: expected nvme")]
    BadIface(String),
    #[error("--disk direct and readonly apply to path= disks, not null")]
    NullOption,
    #[error("--disk null size")]
    Size(#[source] crate::units::Error),
}

/// Default size of a `null` disk.
pub const DEFAULT_NULL_SIZE: u64 = 1 << 30;

fn switch(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "on" | "true" | "1" | "" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(Error::BadSwitch {
            key: key.into(),
            value: value.into(),
        }),
    }
}

impl FromStr for DiskConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (mut path, mut null, mut direct, mut read_only, mut iface) =
            (None, None, false, false, DiskIface::Nvme);
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                "path" => path = Some(PathBuf::from(value)),
                "null" => {
                    null = Some(if value.is_empty() {
                        DEFAULT_NULL_SIZE
                    } else {
                        parse_size(value).map_err(Error::Size)?
                    })
                }
                "direct" => direct = switch(key, value)?,
                "readonly" => read_only = switch(key, value)?,
                "iface" => {
                    iface = match value {
                        "nvme" => DiskIface::Nvme,
                        other => return Err(Error::BadIface(other.into())),
                    }
                }
                other => return Err(Error::UnknownKey(other.into())),
            }
        }
        let backend = match (path, null) {
            (Some(path), None) => BackendSpec::File {
                path,
                direct,
                read_only,
            },
            (None, Some(_)) if direct || read_only => return Err(Error::NullOption),
            (None, Some(size)) => BackendSpec::Null { size },
            (None, None) => return Err(Error::NoBackend),
            (Some(_), Some(_)) => return Err(Error::TwoBackends),
        };
        Ok(DiskConfig { backend, iface })
    }
}

impl fmt::Display for DiskIface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskIface::Nvme => "nvme",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_null_disks() {
        let d: DiskConfig = "path=/tmp/x.img,direct=on,iface=nvme".parse().unwrap();
        assert_eq!(
            d.backend,
            BackendSpec::File {
                path: "/tmp/x.img".into(),
                direct: true,
                read_only: false
            }
        );
        assert_eq!(d.iface, DiskIface::Nvme);
        let d: DiskConfig = "null=64M".parse().unwrap();
        assert_eq!(d.backend, BackendSpec::Null { size: 64 << 20 });
        let d: DiskConfig = "null".parse().unwrap();
        assert_eq!(
            d.backend,
            BackendSpec::Null {
                size: DEFAULT_NULL_SIZE
            }
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!("iface=nvme".parse::<DiskConfig>(), Err(Error::NoBackend));
        assert_eq!("path=a,null".parse::<DiskConfig>(), Err(Error::TwoBackends));
        assert_eq!(
            "path=a,color=red".parse::<DiskConfig>(),
            Err(Error::UnknownKey("color".into()))
        );
        assert_eq!(
            "path=a,iface=scsi".parse::<DiskConfig>(),
            Err(Error::BadIface("scsi".into()))
        );
        assert!(matches!(
            "path=a,direct=maybe".parse::<DiskConfig>(),
            Err(Error::BadSwitch { .. })
        ));
        assert!(matches!(
            "null=lots".parse::<DiskConfig>(),
            Err(Error::Size(_))
        ));
        assert_eq!(
            "null,readonly".parse::<DiskConfig>(),
            Err(Error::NullOption)
        );
    }
}
