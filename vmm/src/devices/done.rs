//! The port the bench guest writes when it is finished.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::bus::BusDevice;

/// Shared between the done port (vCPU thread) and whoever waits for the guest.
#[derive(Default)]
pub struct DoneSignal {
    status: Mutex<Option<u32>>,
    cond: Condvar,
}

impl DoneSignal {
    pub fn new() -> Arc<DoneSignal> {
        Arc::new(DoneSignal::default())
    }

    pub fn signal(&self, status: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(status);
            self.cond.notify_all();
        }
    }

    /// The status the guest wrote, if it has.
    pub fn get(&self) -> Option<u32> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the guest; `None` on time-out.
    pub fn wait(&self, timeout: Duration) -> Option<u32> {
        let guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |s| s.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

pub struct DonePort {
    signal: Arc<DoneSignal>,
}

impl DonePort {
    pub fn new(signal: Arc<DoneSignal>) -> DonePort {
        DonePort { signal }
    }
}

impl BusDevice for DonePort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        self.signal.signal(u32::from_le_bytes(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_wins_and_wakes_the_waiter() {
        let s = DoneSignal::new();
        let mut port = DonePort::new(s.clone());
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait(Duration::from_secs(10)))
        };
        port.write(0, &2u32.to_le_bytes());
        port.write(0, &3u32.to_le_bytes());
        assert_eq!(waiter.join().unwrap(), Some(2));
        assert_eq!(s.get(), Some(2));
    }

    #[test]
    fn wait_times_out_without_a_write() {
        let s = DoneSignal::new();
        assert_eq!(s.wait(Duration::from_millis(10)), None);
    }
}
