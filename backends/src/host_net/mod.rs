//! The host side of network tests and benchmarks: network namespaces, veth pairs and TAP
//! links inside them, and a far end (an `AF_PACKET` reflector or sink) that runs inside a
//! namespace so the frames of a run never meet the host's own stack.
//!
//! Everything here needs `CAP_NET_ADMIN` (root) and iproute2's `ip`; [`available`] says
//! whether this machine has both, so a test can skip with one line. Links and namespaces are
//! guards: dropping one removes what it created, also when a test fails half-way.

mod far_end;
mod link;
mod netns;
mod packet;

use std::io;
use std::process::Command;

pub use self::far_end::{FarCounts, FarEnd, FarMode};
pub use self::link::{Link, LinkKind};
pub use self::netns::NetNs;
pub use self::packet::PacketSocket;

/// iproute2's `ip`.
pub const IP: &str = "ip";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespaces need root (CAP_NET_ADMIN)")]
    NotRoot,
    #[error("iproute2's `ip` is not installed (apt install iproute2)")]
    NoIp(#[source] io::Error),
    #[error("running `ip {0}`")]
    IpSpawn(String, #[source] io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    IpFailed { args: String, stderr: String },
    #[error("interface name {0:?} is not 1 to 15 bytes without NUL or '/'")]
    BadName(String),
    #[error("cannot open network namespace {0}")]
    OpenNs(String, #[source] io::Error),
    #[error("cannot enter network namespace {0}")]
    EnterNs(String, #[source] io::Error),
    #[error("no interface {0:?}")]
    NoInterface(String),
    #[error("AF_PACKET socket on {0:?}")]
    Packet(String, #[source] io::Error),
    #[error("starting the far-end thread")]
    Thread(#[source] io::Error),
    #[error("the far-end thread ended before it was ready")]
    ThreadGone,
}

/// Whether namespaces and links can be made here: root and a working `ip`.
pub fn available() -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    Command::new(IP)
        .arg("-V")
        .output()
        .map(drop)
        .map_err(Error::NoIp)
}

/// Runs `ip ARGS`, returning its stdout; a non-zero exit is an error carrying its stderr.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    let joined = args.join(" ");
    let out = Command::new(IP)
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NoIp(e),
            _ => Error::IpSpawn(joined.clone(), e),
        })?;
    if !out.status.success() {
        return Err(Error::IpFailed {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks an interface name against the kernel's rules (IFNAMSIZ is 16 with the NUL).
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', '\0']) || name.contains(' ') {
        return Err(Error::BadName(name.into()));
    }
    Ok(())
}

/// A name unique to this process and call, `PREFIX<pid>x<n>`; the prefix is cut so the whole
/// fits an interface name (15 bytes).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let unique = format!("{}x{n:x}", std::process::id());
    let keep = 15usize.saturating_sub(unique.len());
    let prefix: String = prefix.chars().take(keep).collect();
    format!("{prefix}{unique}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_unique_names_fit() {
        assert!(check_name("tap0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("0123456789abcdef").is_err());
        assert!(check_name("a/b").is_err());
        let (a, b) = (unique_name("iopathtap"), unique_name("iopathtap"));
        assert_ne!(a, b);
        assert!(check_name(&a).is_ok(), "{a}");
        assert!(a.starts_with("iop"), "{a}");
        let long = unique_name("a-prefix-longer-than-any-name");
        assert!(check_name(&long).is_ok(), "{long}");
        assert!(long.contains(&format!("{}x", std::process::id())), "{long}");
    }
}
