//! A named network namespace (`ip netns add`), removed when its guard is dropped.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{check_name, ip, Error};

/// A network namespace this process created; `ip netns del` when dropped. The kernel keeps the
/// namespace alive while a thread or an open fd (a TAP queue, a socket) still uses it, so a
/// late drop never pulls it from under a running user.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates namespace `name` with its loopback up and IPv6 off (no router or neighbour
    /// solicitations on the links of a run).
    pub fn create(name: &str) -> Result<NetNs, Error> {
        check_name(name)?;
        ip(&["netns", "add", name])?;
        let ns = NetNs { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.run_in(|| {
            // Best effort: a kernel without IPv6 has no such file, and nothing to silence.
            for knob in ["default", "all"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
            }
        })?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, which `setns` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves the calling thread into this namespace for good: sockets, TAP devices and child
    /// processes it creates from now on live there. Only for threads made for the purpose.
    pub fn enter(&self) -> Result<(), Error> {
        enter_path(&self.name, &self.path())
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns. Threads and
    /// processes `f` starts inherit the namespace (a VMM's vCPU threads, a daemon child).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(s, || -> Result<T, Error> {
                    self.enter()?;
                    Ok(f())
                })
                .map_err(Error::Thread)?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Moves the calling thread into the namespace bound at `path` (named `name` in errors).
pub(super) fn enter_path(name: &str, path: &Path) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::OpenNs(name.into(), e))?;
    // SAFETY: setns takes an fd we own and a flag; it changes only this thread's network
    // namespace, which every thread may do on its own.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::EnterNs(name.into(), std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            log::warn!("removing network namespace {}: {e}", self.name);
        }
    }
}
