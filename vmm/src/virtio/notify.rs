//! Queue notifications without exits: each queue's notify address is registered as a KVM
//! ioeventfd whose eventfd is the queue's kick fd, so a driver's notify write wakes the
//! backend from inside KVM. The addresses live in a BAR the guest may move, so the
//! registrations follow the BAR: dropped when decoding stops or the BAR moves, re-made at the
//! new address.

use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating queue {0}'s kick eventfd failed")]
    EventFd(u16, #[source] std::io::Error),
}

/// Registers MMIO ioeventfds (KVM_IOEVENTFD on a real VM, a recorder in tests). Writes of any
/// width to exactly `gpa` signal `evt`.
pub trait IoEventRegistrar: Send + Sync {
    fn register(&self, evt: &EventFd, gpa: u64) -> Result<(), kvm_ioctls::Error>;
    fn unregister(&self, evt: &EventFd, gpa: u64) -> Result<(), kvm_ioctls::Error>;
}

/// The kick eventfds of a device's queues and where each is registered now.
pub struct NotifyEvents {
    kicks: Vec<EventFd>,
    registered: Vec<Option<u64>>,
    registrar: std::sync::Arc<dyn IoEventRegistrar>,
    /// Where the notify region starts in the BAR.
    region: u64,
    /// Bytes between two queues' notify addresses.
    multiplier: u64,
}

impl NotifyEvents {
    pub fn new(
        queues: u16,
        registrar: std::sync::Arc<dyn IoEventRegistrar>,
        region: u64,
        multiplier: u64,
    ) -> Result<NotifyEvents, Error> {
        let kicks = (0..queues)
            .map(|q| EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::EventFd(q, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NotifyEvents {
            registered: vec![None; kicks.len()],
            kicks,
            registrar,
            region,
            multiplier,
        })
    }

    /// Queue `q`'s notify address when the BAR sits at `bar`.
    pub fn address(&self, bar: u64, q: u16) -> u64 {
        bar + self.region + u64::from(q) * self.multiplier
    }

    /// Makes the registrations match a BAR that now decodes at `bar` (`None`: not decoding).
    /// A failed registration is logged and leaves that queue on the trapped path, which
    /// [`NotifyEvents::kick`] serves: slower, still correct.
    pub fn follow(&mut self, bar: Option<u64>) {
        for q in 0..self.kicks.len() {
            let want = bar.map(|b| self.address(b, q as u16));
            if self.registered[q] == want {
                continue;
            }
            if let Some(old) = self.registered[q].take() {
                if let Err(e) = self.registrar.unregister(&self.kicks[q], old) {
                    log::warn!("virtio: unregistering queue {q}'s notify at {old:#x}: {e}");
                }
            }
            if let Some(gpa) = want {
                match self.registrar.register(&self.kicks[q], gpa) {
                    Ok(()) => self.registered[q] = Some(gpa),
                    Err(e) => log::warn!(
                        "virtio: queue {q}'s notify at {gpa:#x} stays trapped: ioeventfd: {e}"
                    ),
                }
            }
        }
    }

    /// A notify write that reached userspace (no ioeventfd at that address): kick by hand.
    pub fn kick(&self, q: u16) {
        if let Some(k) = self.kicks.get(usize::from(q)) {
            if let Err(e) = k.write(1) {
                log::warn!("virtio: kicking queue {q}: {e}");
            }
        }
    }

    /// A second handle on queue `q`'s kick eventfd (the same kernel object).
    pub fn kick_fd(&self, q: u16) -> std::io::Result<EventFd> {
        match self.kicks.get(usize::from(q)) {
            Some(k) => k.try_clone(),
            None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Forgets notifications nobody consumed (after a device reset).
    pub fn drain(&self) {
        for k in &self.kicks {
            // Non-blocking: EAGAIN just means there was nothing to drain.
            let _ = k.read();
        }
    }
}

impl Drop for NotifyEvents {
    fn drop(&mut self) {
        self.follow(None);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records registrations as (register?, fd, gpa); refuses addresses in `refuse`.
    #[derive(Default)]
    pub struct Recorder {
        pub calls: Mutex<Vec<(bool, i32, u64)>>,
        pub refuse: Mutex<Vec<u64>>,
    }

    impl Recorder {
        pub fn take(&self) -> Vec<(bool, i32, u64)> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl IoEventRegistrar for Recorder {
        fn register(&self, evt: &EventFd, gpa: u64) -> Result<(), kvm_ioctls::Error> {
            if self.refuse.lock().unwrap().contains(&gpa) {
                return Err(kvm_ioctls::Error::new(libc::EEXIST));
            }
            self.calls
                .lock()
                .unwrap()
                .push((true, evt.as_raw_fd(), gpa));
            Ok(())
        }
        fn unregister(&self, evt: &EventFd, gpa: u64) -> Result<(), kvm_ioctls::Error> {
            self.calls
                .lock()
                .unwrap()
                .push((false, evt.as_raw_fd(), gpa));
            Ok(())
        }
    }

    #[test]
    fn registrations_follow_the_bar() {
        let rec = Arc::new(Recorder::default());
        let mut n = NotifyEvents::new(2, rec.clone(), 0x3000, 4).unwrap();
        let fds: Vec<i32> = n.kicks.iter().map(|k| k.as_raw_fd()).collect();
        n.follow(None);
        assert!(rec.take().is_empty());
        n.follow(Some(0xc000_0000));
        assert_eq!(
            rec.take(),
            vec![(true, fds[0], 0xc000_3000), (true, fds[1], 0xc000_3004)]
        );
        n.follow(Some(0xc000_0000));
        assert!(rec.take().is_empty(), "no change, no calls");
        n.follow(Some(0xc800_0000));
        assert_eq!(
            rec.take(),
            vec![
                (false, fds[0], 0xc000_3000),
                (true, fds[0], 0xc800_3000),
                (false, fds[1], 0xc000_3004),
                (true, fds[1], 0xc800_3004),
            ]
        );
        drop(n);
        assert_eq!(
            rec.take(),
            vec![(false, fds[0], 0xc800_3000), (false, fds[1], 0xc800_3004)]
        );
    }

    #[test]
    fn a_refused_registration_leaves_the_queue_trapped_and_is_retried() {
        let rec = Arc::new(Recorder::default());
        rec.refuse.lock().unwrap().push(0xc000_3004);
        let mut n = NotifyEvents::new(2, rec.clone(), 0x3000, 4).unwrap();
        n.follow(Some(0xc000_0000));
        assert_eq!(n.registered, vec![Some(0xc000_3000), None]);
        rec.take();
        rec.refuse.lock().unwrap().clear();
        n.follow(Some(0xc000_0000));
        assert_eq!(rec.take().len(), 1, "only the missing one is registered");
        // The trapped path kicks the same eventfd the backend waits on.
        n.kick(1);
        assert_eq!(n.kick_fd(1).unwrap().read().unwrap(), 1);
        n.kick(7);
        assert!(n.kick_fd(7).is_err());
    }
}
