//! `--disk` values: what backs a disk and how the guest reaches it.
//!
//! `path=FILE[,direct=on][,readonly=on][,iface=nvme]`, `null[=SIZE][,iface=nvme]`, or
//! `socket=PATH[,iface=vhost-user][,queues=N][,queue_size=N]` for a vhost-user-blk backend
//! that serves the disk itself (the guest sees a virtio-blk device).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use backends::engine::BackendSpec;

use crate::units::parse_size;
use crate::virtio::vhost_user_blk::{VhostUserBlkConfig, DEFAULT_QUEUE_SIZE};

/// How the guest reaches a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskIface {
    /// The emulated NVMe controller: every register access exits to the VMM.
    Nvme,
    /// virtio-blk over the virtio-pci transport, served by a vhost-user backend: notifies
    /// are ioeventfds, the VMM stays off the data path.
    VhostUser,
}

/// What serves a disk's I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskBackend {
    /// The VMM's own block engine (for the emulated NVMe controller).
    Engine(BackendSpec),
    /// A vhost-user-blk backend process, reached through its socket.
    VhostUser(VhostUserBlkConfig),
}

impl From<BackendSpec> for DiskBackend {
    fn from(spec: BackendSpec) -> DiskBackend {
        DiskBackend::Engine(spec)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub backend: DiskBackend,
    pub iface: DiskIface,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--disk needs path=FILE, null[=SIZE] or socket=PATH")]
    NoBackend,
    #[error("--disk takes one of path=, null and socket=")]
    TwoBackends,
    #[error(
        "unknown --disk key {0:?} (expected path, null, direct, readonly, socket, queues, \
         queue_size, iface)"
    )]
    UnknownKey(String),
    #[error("--disk {key}={value:?}: expected on or off")]
    BadSwitch { key: String, value: String },
    #[error("--disk iface={0:?}: expected nvme or vhost-user")]
    BadIface(String),
    #[error("--disk direct and readonly apply to path= disks, not null")]
    NullOption,
    #[error("--disk null size")]
    Size(#[source] crate::units::Error),
    #[error("--disk {key}={value:?}: expected a number from 1 to 65535")]
    BadNumber { key: String, value: String },
    #[error("--disk iface=vhost-user needs socket=PATH (the backend serves the disk)")]
    VhostUserNeedsSocket,
    #[error("--disk socket= is a vhost-user backend: it takes iface=vhost-user, not {0}")]
    SocketNeedsVhostUser(DiskIface),
    #[error("--disk queues and queue_size apply to socket= disks")]
    QueueOption,
    #[error("--disk direct and readonly apply to path= disks; a vhost-user backend sets its own")]
    SocketOption,
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

fn number(key: &str, value: &str) -> Result<u16, Error> {
    value
        .parse()
        .ok()
        .filter(|&n| n != 0)
        .ok_or(Error::BadNumber {
            key: key.into(),
            value: value.into(),
        })
}

/// The keys as given, before they are checked against each other.
#[derive(Default)]
struct Keys {
    path: Option<PathBuf>,
    null: Option<u64>,
    socket: Option<PathBuf>,
    direct: bool,
    read_only: bool,
    queues: Option<u16>,
    queue_size: Option<u16>,
    iface: Option<DiskIface>,
}

impl FromStr for DiskConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut k = Keys::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                "path" => k.path = Some(PathBuf::from(value)),
                "null" => {
                    k.null = Some(if value.is_empty() {
                        DEFAULT_NULL_SIZE
                    } else {
                        parse_size(value).map_err(Error::Size)?
                    })
                }
                "socket" => k.socket = Some(PathBuf::from(value)),
                "direct" => k.direct = switch(key, value)?,
                "readonly" => k.read_only = switch(key, value)?,
                "queues" => k.queues = Some(number(key, value)?),
                "queue_size" => k.queue_size = Some(number(key, value)?),
                "iface" => {
                    k.iface = Some(match value {
                        "nvme" => DiskIface::Nvme,
                        "vhost-user" => DiskIface::VhostUser,
                        other => return Err(Error::BadIface(other.into())),
                    })
                }
                other => return Err(Error::UnknownKey(other.into())),
            }
        }
        match (k.path.is_some(), k.null.is_some(), k.socket.is_some()) {
            (false, false, false) => Err(Error::NoBackend),
            (true, false, false) | (false, true, false) => engine_disk(k),
            (false, false, true) => vhost_user_disk(k),
            _ => Err(Error::TwoBackends),
        }
    }
}

fn engine_disk(k: Keys) -> Result<DiskConfig, Error> {
    let iface = match k.iface.unwrap_or(DiskIface::Nvme) {
        DiskIface::VhostUser => return Err(Error::VhostUserNeedsSocket),
        iface => iface,
    };
    if k.queues.is_some() || k.queue_size.is_some() {
        return Err(Error::QueueOption);
    }
    let spec = match (k.path, k.null) {
        (Some(path), _) => BackendSpec::File {
            path,
            direct: k.direct,
            read_only: k.read_only,
        },
        (None, Some(_)) if k.direct || k.read_only => return Err(Error::NullOption),
        (None, Some(size)) => BackendSpec::Null { size },
        (None, None) => return Err(Error::NoBackend),
    };
    Ok(DiskConfig {
        backend: DiskBackend::Engine(spec),
        iface,
    })
}

fn vhost_user_disk(k: Keys) -> Result<DiskConfig, Error> {
    match k.iface.unwrap_or(DiskIface::VhostUser) {
        DiskIface::VhostUser => {}
        other => return Err(Error::SocketNeedsVhostUser(other)),
    }
    if k.direct || k.read_only {
        return Err(Error::SocketOption);
    }
    Ok(DiskConfig {
        backend: DiskBackend::VhostUser(VhostUserBlkConfig {
            socket: k.socket.unwrap_or_default(),
            queues: k.queues.unwrap_or(1),
            queue_size: k.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
        }),
        iface: DiskIface::VhostUser,
    })
}

impl fmt::Display for DiskIface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskIface::Nvme => "nvme",
            DiskIface::VhostUser => "vhost-user",
        })
    }
}

impl fmt::Display for DiskBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskBackend::Engine(spec) => spec.fmt(f),
            DiskBackend::VhostUser(c) => write!(f, "vhost-user socket {}", c.socket.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(d: &DiskConfig) -> &BackendSpec {
        match &d.backend {
            DiskBackend::Engine(spec) => spec,
            other => panic!("not an engine disk: {other:?}"),
        }
    }

    #[test]
    fn parses_file_and_null_disks() {
        let d: DiskConfig = "path=/tmp/x.img,direct=on,iface=nvme".parse().unwrap();
        assert_eq!(
            engine(&d),
            &BackendSpec::File {
                path: "/tmp/x.img".into(),
                direct: true,
                read_only: false
            }
        );
        assert_eq!(d.iface, DiskIface::Nvme);
        let d: DiskConfig = "null=64M".parse().unwrap();
        assert_eq!(engine(&d), &BackendSpec::Null { size: 64 << 20 });
        let d: DiskConfig = "null".parse().unwrap();
        assert_eq!(
            engine(&d),
            &BackendSpec::Null {
                size: DEFAULT_NULL_SIZE
            }
        );
    }

    #[test]
    fn parses_vhost_user_disks() {
        let d: DiskConfig = "socket=/run/blk.sock,iface=vhost-user".parse().unwrap();
        assert_eq!(
            d,
            DiskConfig {
                backend: DiskBackend::VhostUser(VhostUserBlkConfig {
                    socket: "/run/blk.sock".into(),
                    queues: 1,
                    queue_size: DEFAULT_QUEUE_SIZE,
                }),
                iface: DiskIface::VhostUser,
            }
        );
        // iface follows from socket=; queues and queue_size are the backend's limits.
        let d: DiskConfig = "socket=/s,queues=4,queue_size=1024".parse().unwrap();
        assert_eq!(d.iface, DiskIface::VhostUser);
        assert_eq!(
            d.backend,
            DiskBackend::VhostUser(VhostUserBlkConfig {
                socket: "/s".into(),
                queues: 4,
                queue_size: 1024,
            })
        );
        assert_eq!(d.backend.to_string(), "vhost-user socket /s");
        assert_eq!(d.iface.to_string(), "vhost-user");
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

    #[test]
    fn rejects_mixed_vhost_user_values() {
        let e = |s: &str| s.parse::<DiskConfig>().unwrap_err();
        assert_eq!(e("socket=/s,path=/a"), Error::TwoBackends);
        assert_eq!(e("path=/a,iface=vhost-user"), Error::VhostUserNeedsSocket);
        assert_eq!(
            e("socket=/s,iface=nvme"),
            Error::SocketNeedsVhostUser(DiskIface::Nvme)
        );
        assert_eq!(e("path=/a,queues=2"), Error::QueueOption);
        assert_eq!(e("socket=/s,readonly"), Error::SocketOption);
        assert!(matches!(e("socket=/s,queues=0"), Error::BadNumber { .. }));
        assert!(matches!(
            e("socket=/s,queue_size=big"),
            Error::BadNumber { .. }
        ));
        assert_eq!(e("socket=/s,iface=sata"), Error::BadIface("sata".into()));
        assert_eq!(
            e("socket=/s,iface=nvme").to_string(),
            "--disk socket= is a vhost-user backend: it takes iface=vhost-user, not nvme"
        );
    }
}
