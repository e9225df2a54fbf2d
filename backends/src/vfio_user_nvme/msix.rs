//! MSI-X for the vfio-user function: the capability, BAR4 (table and PBA), and one eventfd per
//! vector, set by the client with SET_IRQS.
//!
//! As with kernel VFIO, the client (the VMM) owns the MSI-X programming: it emulates the table
//! and masking and routes each vector's eventfd (an irqfd). BAR4 here is plain storage so a
//! client that forwards table accesses reads back what it wrote; the server signals a vector's
//! eventfd whenever the controller raises it. The bench guest polls and sets no vectors.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK,
};

pub const BAR_INDEX: u32 = 4;
pub const BAR_SIZE: u64 = 0x2000;
pub const PBA_OFFSET: u64 = 0x1000;
const ENTRY_SIZE: usize = 16;
const CAP_ID: u8 = 0x11;
const VECTOR_CTRL_MASKED: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SET_IRQS flags {0:#x}: only DATA_NONE and DATA_EVENTFD triggers are supported")]
    Unsupported(u32),
    #[error("vectors {start}..{start}+{count} are beyond the {vectors} MSI-X vectors")]
    Range {
        start: u32,
        count: u32,
        vectors: u16,
    },
    #[error("{count} vectors but {fds} eventfds")]
    FdCount { count: u32, fds: usize },
}

/// The MSI-X capability body and its writable bits (Enable and Function Mask).
pub fn capability(vectors: u16) -> ([u8; 12], [u8; 12]) {
    let mut body = [0u8; 12];
    body[0] = CAP_ID;
    body[2..4].copy_from_slice(&(vectors.max(1) - 1).to_le_bytes());
    body[4..8].copy_from_slice(&BAR_INDEX.to_le_bytes());
    body[8..12].copy_from_slice(&(PBA_OFFSET as u32 | BAR_INDEX).to_le_bytes());
    let mut writable = [0u8; 12];
    writable[3] = 0xc0;
    (body, writable)
}

/// BAR4: the MSI-X table (every vector masked after reset) and the PBA.
pub struct MsixBar {
    bytes: Vec<u8>,
}

impl MsixBar {
    pub fn new(vectors: u16) -> Self {
        let mut bytes = vec![0u8; BAR_SIZE as usize];
        for entry in bytes
            .chunks_exact_mut(ENTRY_SIZE)
            .take(usize::from(vectors))
        {
            entry[12] = VECTOR_CTRL_MASKED;
        }
        MsixBar { bytes }
    }

    /// `false` if the access is outside the BAR.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> bool {
        match self.range(offset, data.len()) {
            Some(r) => {
                data.copy_from_slice(&self.bytes[r]);
                true
            }
            None => false,
        }
    }

    /// Table writes are kept; the PBA is read-only.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(r) = self.range(offset, data.len()) else {
            return false;
        };
        if offset < PBA_OFFSET {
            let end = r.end.min(PBA_OFFSET as usize);
            let n = end - r.start;
            self.bytes[r.start..end].copy_from_slice(&data[..n]);
        }
        true
    }

    fn range(&self, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.len()).then_some(start..end)
    }
}

/// One optional eventfd per vector; the controller's interrupt hook signals them.
pub struct Vectors {
    fds: Mutex<Vec<Option<File>>>,
}

impl Vectors {
    pub fn new(vectors: u16) -> Self {
        Vectors {
            fds: Mutex::new((0..vectors).map(|_| None).collect()),
        }
    }

    fn count(fds: &[Option<File>]) -> u16 {
        fds.len() as u16
    }

    /// Signals `vector`'s eventfd, if it has one.
    pub fn trigger(&self, vector: u16) {
        let mut fds = lock(&self.fds);
        if let Some(Some(fd)) = fds.get_mut(usize::from(vector)) {
            // An eventfd write only fails when the counter would overflow: the interrupt is
            // pending anyway.
            let _ = fd.write(&1u64.to_ne_bytes());
        }
    }

    /// Applies a SET_IRQS for the MSI-X index: DATA_EVENTFD sets `count` vectors from
    /// `start`; DATA_NONE with count 0 releases every vector, with count > 0 fires them.
    pub fn set(&self, flags: u32, start: u32, count: u32, fds: Vec<File>) -> Result<(), Error> {
        if flags & VFIO_IRQ_SET_ACTION_TYPE_MASK != VFIO_IRQ_SET_ACTION_TRIGGER {
            return Err(Error::Unsupported(flags));
        }
        let mut table = lock(&self.fds);
        let vectors = Self::count(&table);
        let data = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        if data == VFIO_IRQ_SET_DATA_NONE && count == 0 {
            table.iter_mut().for_each(|fd| *fd = None);
            return Ok(());
        }
        let range = start
            .checked_add(count)
            .filter(|&end| end <= u32::from(vectors))
            .map(|end| start as usize..end as usize)
            .ok_or(Error::Range {
                start,
                count,
                vectors,
            })?;
        match data {
            VFIO_IRQ_SET_DATA_EVENTFD if fds.len() == range.len() => {
                for (slot, fd) in table[range].iter_mut().zip(fds) {
                    *slot = Some(fd);
                }
                Ok(())
            }
            VFIO_IRQ_SET_DATA_EVENTFD => Err(Error::FdCount {
                count,
                fds: fds.len(),
            }),
            VFIO_IRQ_SET_DATA_NONE => {
                drop(table);
                for v in range {
                    self.trigger(v as u16);
                }
                Ok(())
            }
            _ => Err(Error::Unsupported(flags)),
        }
    }

    pub fn clear(&self) {
        lock(&self.fds).iter_mut().for_each(|fd| *fd = None);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd};

    use vfio_bindings::bindings::vfio::VFIO_IRQ_SET_ACTION_MASK;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    fn eventfd() -> (EventFd, File) {
        let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        // SAFETY: dup returns a fresh fd (checked) that the File then owns.
        let dup = unsafe { libc::dup(e.as_raw_fd()) };
        assert!(dup >= 0);
        // SAFETY: as above.
        (e, unsafe { File::from_raw_fd(dup) })
    }

    const SET_EVENTFD: u32 = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;

    #[test]
    fn vectors_signal_their_eventfd() {
        let v = Vectors::new(4);
        let (e, f) = eventfd();
        v.set(SET_EVENTFD, 2, 1, vec![f]).unwrap();
        v.trigger(1);
        assert!(e.read().is_err(), "vector 1 has no eventfd");
        v.trigger(2);
        v.trigger(2);
        assert_eq!(e.read().unwrap(), 2);
        v.set(
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
            2,
            1,
            vec![],
        )
        .unwrap();
        assert_eq!(e.read().unwrap(), 1, "DATA_NONE with a count fires");
        v.set(
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            0,
            vec![],
        )
        .unwrap();
        v.trigger(2);
        assert!(e.read().is_err(), "released");
        v.trigger(1000);
    }

    #[test]
    fn bad_set_irqs_are_refused() {
        let v = Vectors::new(4);
        let (_e, f) = eventfd();
        assert!(matches!(
            v.set(SET_EVENTFD, 3, 2, vec![f]),
            Err(Error::Range { .. })
        ));
        assert!(matches!(
            v.set(SET_EVENTFD, u32::MAX, 2, vec![]),
            Err(Error::Range { .. })
        ));
        assert!(matches!(
            v.set(SET_EVENTFD, 0, 2, vec![]),
            Err(Error::FdCount { count: 2, fds: 0 })
        ));
        let mask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;
        assert!(matches!(
            v.set(mask, 0, 1, vec![]),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn table_starts_masked_and_pba_is_read_only() {
        let mut bar = MsixBar::new(2);
        let mut b = [0u8; 4];
        assert!(bar.read(12, &mut b));
        assert_eq!(u32::from_le_bytes(b), 1);
        assert!(bar.read(16 + 12, &mut b));
        assert_eq!(u32::from_le_bytes(b), 1);
        assert!(bar.read(32 + 12, &mut b));
        assert_eq!(u32::from_le_bytes(b), 0, "beyond the table");
        assert!(bar.write(0, &[0xaa; 4]));
        assert!(bar.read(0, &mut b));
        assert_eq!(b, [0xaa; 4]);
        assert!(bar.write(PBA_OFFSET, &[0xff; 8]));
        assert!(bar.read(PBA_OFFSET, &mut b));
        assert_eq!(b, [0; 4]);
        assert!(!bar.read(BAR_SIZE - 2, &mut b));
        assert!(!bar.write(u64::MAX, &[0]));
    }
}
