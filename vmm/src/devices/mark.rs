//! The mark port: the guest brackets each measured loop with a begin and an end write, and
//! this device adds the device exits taken in between, so "exits per I/O" leaves out
//! controller set-up and the guest's logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use iopath_mailbox::io::{MARK_BEGIN, MARK_END};

use crate::bus::BusDevice;

/// Exits counted inside marked spans, per disk; shared with the caller.
#[derive(Clone, Default)]
pub struct MarkedExits(Arc<Mutex<Vec<u64>>>);

impl MarkedExits {
    pub fn get(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

pub struct MarkPort {
    disks: Vec<Arc<AtomicU64>>,
    /// Each disk's counter at the last begin mark; `None` outside a span.
    open: Option<Vec<u64>>,
    marked: MarkedExits,
}

impl MarkPort {
    pub fn new(disks: Vec<Arc<AtomicU64>>) -> (MarkPort, MarkedExits) {
        let marked = MarkedExits(Arc::new(Mutex::new(vec![0; disks.len()])));
        let port = MarkPort {
            disks,
            open: None,
            marked: marked.clone(),
        };
        (port, marked)
    }

    fn snapshot(&self) -> Vec<u64> {
        self.disks
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl BusDevice for MarkPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        match u32::from_le_bytes(v) {
            MARK_BEGIN => self.open = Some(self.snapshot()),
            // An end without a begin (or a second end) is ignored: a guest cannot make the
            // count go wrong, only leave it at zero.
            MARK_END => {
                if let Some(begin) = self.open.take() {
                    let now = self.snapshot();
                    let mut marked = self.marked.0.lock().unwrap_or_else(PoisonError::into_inner);
                    for ((m, b), n) in marked.iter_mut().zip(begin).zip(now) {
                        *m += n.saturating_sub(b);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &mut MarkPort, v: u32) {
        p.write(0, &v.to_le_bytes());
    }

    #[test]
    fn counts_only_inside_marked_spans() {
        let c = Arc::new(AtomicU64::new(0));
        let (mut p, marked) = MarkPort::new(vec![c.clone()]);
        c.store(30, Ordering::Relaxed); // set-up
        write(&mut p, MARK_BEGIN);
        c.store(130, Ordering::Relaxed);
        write(&mut p, MARK_END);
        c.store(140, Ordering::Relaxed); // logging between passes
        write(&mut p, MARK_BEGIN);
        c.store(150, Ordering::Relaxed);
        write(&mut p, MARK_END);
        assert_eq!(marked.get(), [110]);
    }

    #[test]
    fn stray_and_unknown_marks_change_nothing() {
        let c = Arc::new(AtomicU64::new(5));
        let (mut p, marked) = MarkPort::new(vec![c.clone()]);
        write(&mut p, MARK_END);
        write(&mut p, 77);
        p.write(0, &[]);
        write(&mut p, MARK_BEGIN);
        c.store(9, Ordering::Relaxed);
        write(&mut p, MARK_END);
        write(&mut p, MARK_END);
        assert_eq!(marked.get(), [4]);
    }
}
