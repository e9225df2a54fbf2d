//! KVM memory slots added and removed while the VM runs, for BAR pieces mapped into the guest.
//! The numbers come from one allocator per VM that starts after guest RAM's slots, so they
//! never collide with RAM (see `Vm::memory_slots`).

use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no free KVM memory slot (slots {first}..{limit} are taken)")]
    Exhausted { first: u32, limit: u32 },
    #[error("KVM_SET_USER_MEMORY_REGION for {gpa:#x}+{len:#x} (slot {slot}) failed")]
    Add {
        slot: u32,
        gpa: u64,
        len: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("removing KVM memory slot {slot} failed")]
    Remove {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM memory slot {0} is not one of ours")]
    Unknown(u32),
}

/// Maps host memory into the guest at run time (KVM user memory slots on a real VM, a recorder
/// in tests).
pub trait MemorySlots: Send + Sync {
    /// Maps `host..host + len` at guest physical `gpa`; returns the slot.
    ///
    /// # Safety
    /// `host..host + len` must stay mapped in this process until [`MemorySlots::remove`] of
    /// the returned slot: the guest reads and writes it directly.
    unsafe fn add(&self, gpa: u64, len: u64, host: *mut u8) -> Result<u32, Error>;
    fn remove(&self, slot: u32) -> Result<(), Error>;
}

/// Slot numbers `first..limit`, handed out lowest first.
#[derive(Debug)]
pub struct SlotAllocator {
    first: u32,
    limit: u32,
    used: BTreeSet<u32>,
}

impl SlotAllocator {
    pub fn new(first: u32, limit: u32) -> SlotAllocator {
        SlotAllocator {
            first,
            limit,
            used: BTreeSet::new(),
        }
    }

    pub fn alloc(&mut self) -> Result<u32, Error> {
        let slot = (self.first..self.limit)
            .find(|s| !self.used.contains(s))
            .ok_or(Error::Exhausted {
                first: self.first,
                limit: self.limit,
            })?;
        self.used.insert(slot);
        Ok(slot)
    }

    pub fn free(&mut self, slot: u32) -> Result<(), Error> {
        match self.used.remove(&slot) {
            true => Ok(()),
            false => Err(Error::Unknown(slot)),
        }
    }
}

#[cfg(test)]
pub mod testing {
    use std::sync::Mutex;

    use super::*;

    /// Records the slots mapped now: (slot, gpa, len, host).
    pub struct RecordingSlots {
        alloc: Mutex<SlotAllocator>,
        pub live: Mutex<Vec<(u32, u64, u64, usize)>>,
        /// Guest addresses that fail to map (as KVM refuses a slot over RAM).
        pub refuse: Mutex<Vec<u64>>,
    }

    impl Default for RecordingSlots {
        fn default() -> Self {
            Self::new()
        }
    }

    impl RecordingSlots {
        pub fn new() -> RecordingSlots {
            RecordingSlots {
                alloc: Mutex::new(SlotAllocator::new(2, 10)),
                live: Mutex::new(Vec::new()),
                refuse: Mutex::new(Vec::new()),
            }
        }

        /// (gpa, len) of every live slot, sorted.
        pub fn mapped(&self) -> Vec<(u64, u64)> {
            let mut v: Vec<(u64, u64)> = self
                .live
                .lock()
                .unwrap()
                .iter()
                .map(|&(_, g, l, _)| (g, l))
                .collect();
            v.sort_unstable();
            v
        }
    }

    impl MemorySlots for RecordingSlots {
        unsafe fn add(&self, gpa: u64, len: u64, host: *mut u8) -> Result<u32, Error> {
            if self.refuse.lock().unwrap().contains(&gpa) {
                return Err(Error::Add {
                    slot: 0,
                    gpa,
                    len,
                    source: kvm_ioctls::Error::new(libc::EEXIST),
                });
            }
            let slot = self.alloc.lock().unwrap().alloc()?;
            self.live
                .lock()
                .unwrap()
                .push((slot, gpa, len, host as usize));
            Ok(slot)
        }

        fn remove(&self, slot: u32) -> Result<(), Error> {
            self.alloc.lock().unwrap().free(slot)?;
            self.live.lock().unwrap().retain(|&(s, ..)| s != slot);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_after_ram_and_are_reused() {
        let mut a = SlotAllocator::new(2, 5);
        assert_eq!(a.alloc().unwrap(), 2);
        assert_eq!(a.alloc().unwrap(), 3);
        assert_eq!(a.alloc().unwrap(), 4);
        assert!(matches!(
            a.alloc(),
            Err(Error::Exhausted { first: 2, limit: 5 })
        ));
        a.free(3).unwrap();
        assert_eq!(a.alloc().unwrap(), 3);
        assert!(matches!(a.free(0), Err(Error::Unknown(0))), "RAM's slot");
        assert!(matches!(a.free(9), Err(Error::Unknown(9))));
    }
}
