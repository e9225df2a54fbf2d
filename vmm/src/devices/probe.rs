//! A device that does nothing: the target of the exit microbenchmarks, so a measured exit costs
//! only the round trip to the VMM and back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bus::BusDevice;

#[derive(Default)]
pub struct ExitProbe {
    accesses: Arc<AtomicU64>,
}

impl ExitProbe {
    pub fn new() -> ExitProbe {
        ExitProbe::default()
    }

    /// Accesses seen, readable while the guest runs.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.accesses.clone()
    }
}

impl BusDevice for ExitProbe {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accesses_and_reads_zero() {
        let mut p = ExitProbe::new();
        let c = p.counter();
        let mut d = [0xffu8; 4];
        p.read(0, &mut d);
        p.write(0, &[1]);
        assert_eq!(d, [0; 4]);
        assert_eq!(c.load(Ordering::Relaxed), 2);
    }
}
