//! I/O commands handed to the engine, keyed by slot; engine tags name a slot and a part (one
//! command can become several requests).

use crate::engine::BlockOp;

use super::spec::Status;

/// One I/O command between fetch and completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub sqid: u16,
    pub cqid: u16,
    pub cid: u16,
    /// What the requests do (for status mapping and statistics).
    pub op: BlockOp,
    /// Requests not completed yet.
    pub remaining: u32,
    /// The first error, or success.
    pub status: Status,
    /// Issue a flush before completing (FUA, or volatile write cache disabled).
    pub flush_after: bool,
    /// Bytes transferred, for statistics.
    pub bytes: u64,
}

/// A slab of in-flight commands.
#[derive(Debug, Default)]
pub struct InFlight {
    slots: Vec<Option<Command>>,
    free: Vec<u32>,
    len: usize,
}

/// The engine tag of part `part` of the command in `slot`.
pub fn tag(slot: u32, part: u16) -> u64 {
    (u64::from(slot) << 16) | u64::from(part)
}

/// The slot a tag names.
pub fn slot_of(tag: u64) -> u32 {
    (tag >> 16) as u32
}

impl InFlight {
    pub fn insert(&mut self, cmd: Command) -> u32 {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = Some(cmd);
                return slot;
            }
        }
        self.slots.push(Some(cmd));
        (self.slots.len() - 1) as u32
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Command> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    pub fn get(&self, slot: u32) -> Option<&Command> {
        self.slots.get(slot as usize)?.as_ref()
    }

    pub fn remove(&mut self, slot: u32) -> Option<Command> {
        let cmd = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        self.len -= 1;
        Some(cmd)
    }

    pub fn any_for_sq(&self, sqid: u16) -> bool {
        self.slots.iter().flatten().any(|c| c.sqid == sqid)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn clear(&mut self) {
        *self = InFlight::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(sqid: u16, cid: u16) -> Command {
        Command {
            sqid,
            cqid: sqid,
            cid,
            op: BlockOp::Read,
            remaining: 1,
            status: Status::SUCCESS,
            flush_after: false,
            bytes: 0,
        }
    }

    #[test]
    fn slots_are_reused_and_tags_round_trip() {
        let mut f = InFlight::default();
        let a = f.insert(cmd(1, 10));
        let b = f.insert(cmd(2, 11));
        assert_ne!(a, b);
        assert_eq!(f.len(), 2);
        assert!(f.any_for_sq(2));
        assert_eq!(f.remove(b).unwrap().cid, 11);
        assert!(f.remove(b).is_none());
        assert!(!f.any_for_sq(2));
        let c = f.insert(cmd(3, 12));
        assert_eq!(c, b);
        assert_eq!(slot_of(tag(c, 255)), c);
        assert_eq!(slot_of(tag(u32::MAX, 7)), u32::MAX);
        assert!(f.get_mut(99).is_none());
        assert_eq!(f.get(a).unwrap().cid, 10);
        f.clear();
        assert_eq!(f.len(), 0);
        assert!(f.get(a).is_none());
    }
}
