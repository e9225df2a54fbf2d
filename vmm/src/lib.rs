//! The slim iopath VMM: a KVM VM, its vCPU loop, buses and device models, and the loaders that
//! get the bench guest and Linux running.

pub mod bench_vm;
pub mod boot;
pub mod bus;
pub mod check_host;
pub mod devices;
pub mod disk;
pub mod guest_image;
pub mod linux_vm;
pub mod memory;
pub mod net;
pub mod pci;
pub mod units;
pub mod vcpu;
pub mod vfio;
pub mod virtio;
pub mod vm;

/// One line: an error and each of its causes, as binaries print it. A cause whose text its
/// parent already printed (some crates repeat their source in their message) is skipped.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Locks a device or device-side state. A lock poisoned by a panic on another thread is still
/// taken: the state is that device's own problem, and the VMM must keep serving the others.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("loading failed")]
        Load(#[source] Middle),
    }

    #[derive(Debug, thiserror::Error)]
    enum Middle {
        #[error("bad image: {0}")]
        Image(#[source] std::io::Error),
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let e = Outer::Load(Middle::Image(std::io::Error::other("no magic")));
        assert_eq!(
            super::error_chain(&e),
            "loading failed: bad image: no magic"
        );
    }
}
