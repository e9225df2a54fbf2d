//! `--net` values: what carries a NIC's frames and how the guest reaches it.
//!
//! `tap=NAME[,iface=e1000][,mac=MAC]` (a host TAP device), `reflect[,iface=e1000][,mac=MAC]`
//! (every frame the guest sends comes back with its MACs swapped: latency without a peer), or
//! `socket=PATH[,iface=vhost-user][,queues=N][,queue_size=N][,mac=MAC]` for a vhost-user-net
//! backend that serves the NIC itself (the guest sees a virtio-net device).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How the guest reaches a NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetIface {
    /// The emulated Intel 82540EM: every register access exits to the VMM.
    E1000,
    /// virtio-net over the virtio-pci transport, served by a vhost-user backend.
    VhostUser,
}

/// What carries a NIC's frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    /// A host TAP device, opened (or created) by name.
    Tap(String),
    /// The VMM turns every frame around.
    Reflect,
    /// A vhost-user-net backend process, reached through its socket.
    VhostUser {
        socket: PathBuf,
        /// Queue pairs (1 unless the backend offers VIRTIO_NET_F_MQ).
        queue_pairs: u16,
        queue_size: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub backend: NetBackend,
    pub iface: NetIface,
    /// The guest's MAC; `None`: the VMM picks one (or a vhost-user backend's own).
    pub mac: Option<[u8; 6]>,
}

/// Queue size offered when the configuration names none.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// The MAC an emulated NIC gets unless told otherwise (QEMU's locally administered prefix).
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--net needs tap=NAME, reflect or socket=PATH")]
    NoBackend,
    #[error("--net takes one of tap=, reflect and socket=")]
    TwoBackends,
    #[error(
        "unknown --net key {0:?} (expected tap, reflect, socket, queues, queue_size, mac, iface)"
    )]
    UnknownKey(String),
    #[error("--net iface={0:?}: expected e1000 or vhost-user")]
    BadIface(String),
    #[error("--net mac={0:?}: expected six hex bytes separated by ':'")]
    BadMac(String),
    #[error("--net {key}={value:?}: expected a number from 1 to 65535")]
    BadNumber { key: String, value: String },
    #[error("--net tap= needs a name of 1 to 15 bytes, not {0:?}")]
    BadTapName(String),
    #[error("--net iface=vhost-user needs socket=PATH (the backend serves the NIC)")]
    VhostUserNeedsSocket,
    #[error("--net socket= is a vhost-user backend: it takes iface=vhost-user, not {0}")]
    SocketNeedsVhostUser(NetIface),
    #[error("--net queues and queue_size apply to socket= NICs")]
    QueueOption,
}

/// Parses `52:54:00:12:34:56`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
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

impl FromStr for NetConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut backend: Option<NetBackend> = None;
        let mut set_backend = |b: NetBackend| match backend.replace(b) {
            Some(_) => Err(Error::TwoBackends),
            None => Ok(()),
        };
        let (mut queues, mut queue_size, mut iface, mut mac) = (None, None, None, None);
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                // IFNAMSIZ is 16 with the NUL.
                "tap" if value.is_empty() || value.len() > 15 || value.contains('/') => {
                    return Err(Error::BadTapName(value.into()))
                }
                "tap" => set_backend(NetBackend::Tap(value.into()))?,
                "reflect" => set_backend(NetBackend::Reflect)?,
                "socket" => set_backend(NetBackend::VhostUser {
                    socket: PathBuf::from(value),
                    queue_pairs: 1,
                    queue_size: DEFAULT_QUEUE_SIZE,
                })?,
                "queues" => queues = Some(number(key, value)?),
                "queue_size" => queue_size = Some(number(key, value)?),
                "mac" => mac = Some(parse_mac(value).ok_or(Error::BadMac(value.into()))?),
                "iface" => {
                    iface = Some(match value {
                        "e1000" => NetIface::E1000,
                        "vhost-user" => NetIface::VhostUser,
                        other => return Err(Error::BadIface(other.into())),
                    })
                }
                other => return Err(Error::UnknownKey(other.into())),
            }
        }
        let backend = match backend.ok_or(Error::NoBackend)? {
            NetBackend::VhostUser { socket, .. } => {
                match iface.unwrap_or(NetIface::VhostUser) {
                    NetIface::VhostUser => {}
                    other => return Err(Error::SocketNeedsVhostUser(other)),
                }
                NetBackend::VhostUser {
                    socket,
                    queue_pairs: queues.unwrap_or(1),
                    queue_size: queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
                }
            }
            _ if iface == Some(NetIface::VhostUser) => return Err(Error::VhostUserNeedsSocket),
            _ if queues.is_some() || queue_size.is_some() => return Err(Error::QueueOption),
            other => other,
        };
        let iface = match backend {
            NetBackend::VhostUser { .. } => NetIface::VhostUser,
            _ => NetIface::E1000,
        };
        Ok(NetConfig {
            backend,
            iface,
            mac,
        })
    }
}

impl fmt::Display for NetIface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetIface::E1000 => "e1000",
            NetIface::VhostUser => "vhost-user",
        })
    }
}

impl fmt::Display for NetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetBackend::Tap(name) => write!(f, "tap={name}"),
            NetBackend::Reflect => f.write_str("reflect"),
            NetBackend::VhostUser { socket, .. } => write!(f, "socket={}", socket.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConfig, Error> {
        s.parse()
    }

    #[test]
    fn each_backend_gets_its_interface() {
        let tap = parse("tap=tap0,mac=52:54:00:00:00:01").unwrap();
        assert_eq!(tap.backend, NetBackend::Tap("tap0".into()));
        assert_eq!(tap.iface, NetIface::E1000);
        assert_eq!(tap.mac, Some([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(parse("reflect").unwrap().iface, NetIface::E1000);
        let vu = parse("socket=/run/n.sock,queues=2").unwrap();
        assert_eq!(vu.iface, NetIface::VhostUser);
        assert_eq!(
            vu.backend,
            NetBackend::VhostUser {
                socket: "/run/n.sock".into(),
                queue_pairs: 2,
                queue_size: DEFAULT_QUEUE_SIZE
            }
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert_eq!(parse(""), Err(Error::NoBackend));
        assert_eq!(parse("tap=a,reflect"), Err(Error::TwoBackends));
        assert_eq!(parse("tap="), Err(Error::BadTapName("".into())));
        assert_eq!(
            parse("tap=0123456789abcdef"),
            Err(Error::BadTapName("0123456789abcdef".into()))
        );
        assert_eq!(parse("reflect,mac=1:2"), Err(Error::BadMac("1:2".into())));
        assert_eq!(
            parse("reflect,mac=52:54:00:00:00:01:02"),
            Err(Error::BadMac("52:54:00:00:00:01:02".into()))
        );
        assert_eq!(
            parse("tap=t,iface=vhost-user"),
            Err(Error::VhostUserNeedsSocket)
        );
        assert_eq!(
            parse("socket=s,iface=e1000"),
            Err(Error::SocketNeedsVhostUser(NetIface::E1000))
        );
        assert_eq!(parse("reflect,queues=2"), Err(Error::QueueOption));
        assert!(matches!(
            parse("reflect,speed=10"),
            Err(Error::UnknownKey(_))
        ));
        assert!(matches!(
            parse("socket=s,queues=0"),
            Err(Error::BadNumber { .. })
        ));
    }
}
