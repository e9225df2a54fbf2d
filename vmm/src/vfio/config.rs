//! `--device` values: a PCI function to pass through.
//!
//! `vfio=BDF` (`0000:03:00.0`, or `03:00.0` on domain 0) or `vfio=/sys/bus/pci/devices/...`
//! for kernel VFIO; `vfio-user=SOCKET` for a vfio-user server.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::kernel;

const SYSFS_PCI: &str = "/sys/bus/pci/devices";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceConfig {
    /// A host PCI device bound to vfio-pci, by its sysfs directory.
    Vfio { sysfs: PathBuf },
    /// A device served by a vfio-user server listening on `socket`.
    VfioUser { socket: PathBuf },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--device needs vfio=BDF (or a sysfs path) or vfio-user=SOCKET, not {0:?}")]
    Kind(String),
    #[error("--device {0}= needs a value")]
    Empty(&'static str),
    #[error("--device vfio={0:?}: expected a PCI address like 0000:03:00.0 or a sysfs path")]
    Address(String),
}

impl FromStr for DeviceConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, value) = s.split_once('=').ok_or_else(|| Error::Kind(s.into()))?;
        match kind {
            "vfio" if value.is_empty() => Err(Error::Empty("vfio")),
            "vfio" => Ok(DeviceConfig::Vfio {
                sysfs: sysfs_path(value)?,
            }),
            "vfio-user" if value.is_empty() => Err(Error::Empty("vfio-user")),
            "vfio-user" => Ok(DeviceConfig::VfioUser {
                socket: value.into(),
            }),
            _ => Err(Error::Kind(s.into())),
        }
    }
}

impl fmt::Display for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceConfig::Vfio { sysfs } => write!(f, "vfio={}", sysfs.display()),
            DeviceConfig::VfioUser { socket } => write!(f, "vfio-user={}", socket.display()),
        }
    }
}

impl DeviceConfig {
    /// Checks what can be checked before a VM exists (kernel VFIO on this host, the device
    /// and its group), so a hopeless run fails at once with the reason.
    pub fn preflight(&self) -> Result<(), kernel::Error> {
        match self {
            DeviceConfig::Vfio { sysfs } => kernel::preflight(sysfs),
            // Connecting says all there is to say.
            DeviceConfig::VfioUser { .. } => Ok(()),
        }
    }
}

/// A path is taken as given; a PCI address becomes its sysfs directory.
fn sysfs_path(value: &str) -> Result<PathBuf, Error> {
    if value.starts_with('/') || value.starts_with('.') {
        return Ok(value.into());
    }
    let bad = || Error::Address(value.into());
    let full = match value.matches(':').count() {
        1 => format!("0000:{value}"),
        2 => value.to_string(),
        _ => return Err(bad()),
    };
    let (domain, rest) = full.split_once(':').ok_or_else(bad)?;
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
    let hex = |s: &str, width: usize, max: u32| {
        s.len() == width && u32::from_str_radix(s, 16).is_ok_and(|v| v <= max)
    };
    if !(hex(domain, 4, 0xffff) && hex(bus, 2, 0xff) && hex(dev, 2, 0x1f) && hex(func, 1, 7)) {
        return Err(bad());
    }
    Ok(PathBuf::from(SYSFS_PCI).join(full.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DeviceConfig, Error> {
        s.parse()
    }

    #[test]
    fn pci_addresses_become_sysfs_paths() {
        assert_eq!(
            parse("vfio=0000:03:00.0"),
            Ok(DeviceConfig::Vfio {
                sysfs: "/sys/bus/pci/devices/0000:03:00.0".into()
            })
        );
        assert_eq!(
            parse("vfio=3B:1f.7"),
            Ok(DeviceConfig::Vfio {
                sysfs: "/sys/bus/pci/devices/0000:3b:1f.7".into()
            })
        );
        assert_eq!(
            parse("vfio=/nonexistent"),
            Ok(DeviceConfig::Vfio {
                sysfs: "/nonexistent".into()
            })
        );
        for bad in [
            "vfio=03:00",
            "vfio=0000:03:20.0",
            "vfio=03:00.8",
            "vfio=x:y:z.0",
        ] {
            assert!(matches!(parse(bad), Err(Error::Address(_))), "{bad}");
        }
    }

    #[test]
    fn vfio_user_takes_a_socket() {
        let d = parse("vfio-user=/run/nvme.sock").unwrap();
        assert_eq!(
            d,
            DeviceConfig::VfioUser {
                socket: "/run/nvme.sock".into()
            }
        );
        assert_eq!(d.to_string(), "vfio-user=/run/nvme.sock");
        assert!(d.preflight().is_ok());
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        assert_eq!(parse("vfio="), Err(Error::Empty("vfio")));
        assert_eq!(parse("vfio-user="), Err(Error::Empty("vfio-user")));
        assert_eq!(parse("nvme=1"), Err(Error::Kind("nvme=1".into())));
        assert_eq!(parse("vfio"), Err(Error::Kind("vfio".into())));
        assert!(Error::Kind("x".into())
            .to_string()
            .contains("vfio-user=SOCKET"));
    }
}
