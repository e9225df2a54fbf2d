//! Chains between their hand-off to the engine and their used-ring entry. The engine tag of
//! every request of a chain is the chain's slot.

use std::sync::Arc;

use iommu::{AddressSpace, DmaSlice};

use super::request::S_OK;

/// One chain the engine is working on.
pub struct Chain {
    /// Descriptor index the used-ring entry names.
    pub head: u16,
    pub status: DmaSlice,
    /// Bytes the device writes into guest buffers if the chain succeeds.
    pub written: u32,
    /// Engine requests not completed yet.
    pub remaining: u32,
    /// The first failure, or `S_OK`.
    pub code: u8,
    /// Write-through: make the data durable before completing.
    pub flush_after: bool,
    /// The mappings the chain's buffers point into: a new memory table must not unmap them
    /// while the kernel may still write there.
    _space: Arc<AddressSpace>,
}

impl Chain {
    pub fn new(head: u16, status: DmaSlice, space: Arc<AddressSpace>) -> Self {
        Chain {
            head,
            status,
            written: 0,
            remaining: 0,
            code: S_OK,
            flush_after: false,
            _space: space,
        }
    }
}

/// A slab of chains keyed by slot.
#[derive(Default)]
pub struct InFlight {
    slots: Vec<Option<Chain>>,
    free: Vec<usize>,
    len: usize,
}

impl InFlight {
    pub fn insert(&mut self, chain: Chain) -> u64 {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            self.slots[slot] = Some(chain);
            return slot as u64;
        }
        self.slots.push(Some(chain));
        (self.slots.len() - 1) as u64
    }

    pub fn get_mut(&mut self, tag: u64) -> Option<&mut Chain> {
        self.slots.get_mut(usize::try_from(tag).ok()?)?.as_mut()
    }

    pub fn remove(&mut self, tag: u64) -> Option<Chain> {
        let slot = usize::try_from(tag).ok()?;
        let chain = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.len -= 1;
        Some(chain)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Mem;
    use super::*;

    #[test]
    fn slots_are_reused() {
        let m = Mem::new();
        let space = Arc::new(m.space());
        let status = space.translate(0, 1, iommu::Access::Write).unwrap();
        let mut f = InFlight::default();
        let a = f.insert(Chain::new(1, status, space.clone()));
        let b = f.insert(Chain::new(2, status, space.clone()));
        assert_ne!(a, b);
        assert_eq!(f.len(), 2);
        assert_eq!(Arc::strong_count(&space), 3, "chains hold the space");
        assert_eq!(f.remove(b).unwrap().head, 2);
        assert!(f.remove(b).is_none());
        assert_eq!(Arc::strong_count(&space), 2);
        let c = f.insert(Chain::new(3, status, space.clone()));
        assert_eq!(c, b);
        assert_eq!(f.get_mut(a).unwrap().head, 1);
        assert!(f.get_mut(99).is_none());
        assert!(f.get_mut(u64::MAX).is_none());
        f.remove(a);
        f.remove(c);
        assert!(f.is_empty());
    }
}
