//! Asynchronous Event Requests: the host leaves some outstanding; the controller completes one
//! when it has an event to report (here: doorbell misuse).

use std::collections::VecDeque;

use super::spec::Status;

/// Outstanding requests allowed, 0-based (Identify Controller AERL): 4.
pub const AERL: u8 = 3;

/// Error Information log page identifier, named by error events.
pub const ERROR_LOG: u8 = 0x01;

/// Asynchronous Event Information for event type "Error status".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorEvent {
    /// A doorbell for a queue that does not exist.
    InvalidDoorbellRegister = 0x00,
    /// A doorbell value that is out of range or moves past the tail.
    InvalidDoorbellValue = 0x01,
}

/// Completion DW0 of an error event: type 0, the information, and the log page to read.
fn error_dw0(event: ErrorEvent) -> u32 {
    ((event as u32) << 8) | (u32::from(ERROR_LOG) << 16)
}

#[derive(Debug, Default)]
pub struct AsyncEvents {
    /// Command ids of outstanding requests (admin queue).
    held: Vec<u16>,
    /// Events waiting for a request.
    queued: VecDeque<u32>,
    /// An error event was reported; more are masked until the host reads the error log.
    error_masked: bool,
}

impl AsyncEvents {
    /// A new request: `Ok(Some(dw0))` completes it at once with a waiting event, `Ok(None)`
    /// holds it.
    pub fn request(&mut self, cid: u16) -> Result<Option<u32>, Status> {
        if let Some(dw0) = self.queued.pop_front() {
            return Ok(Some(dw0));
        }
        if self.held.len() > usize::from(AERL) {
            return Err(Status::AER_LIMIT_EXCEEDED);
        }
        self.held.push(cid);
        Ok(None)
    }

    /// Reports an error event: returns a held request to complete (its cid and DW0), if any.
    pub fn report(&mut self, event: ErrorEvent) -> Option<(u16, u32)> {
        if self.error_masked {
            return None;
        }
        self.error_masked = true;
        let dw0 = error_dw0(event);
        match self.held.pop() {
            Some(cid) => Some((cid, dw0)),
            None => {
                self.queued.push_back(dw0);
                None
            }
        }
    }

    /// The host read the error log with RAE = 0.
    pub fn unmask_errors(&mut self) {
        self.error_masked = false;
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_held_up_to_the_limit() {
        let mut a = AsyncEvents::default();
        for cid in 0..=u16::from(AERL) {
            assert_eq!(a.request(cid), Ok(None));
        }
        assert_eq!(a.request(9), Err(Status::AER_LIMIT_EXCEEDED));
        assert_eq!(a.held(), 4);
    }

    #[test]
    fn errors_complete_a_request_then_mask_until_the_log_is_read() {
        let mut a = AsyncEvents::default();
        a.request(5).unwrap();
        assert_eq!(
            a.report(ErrorEvent::InvalidDoorbellValue),
            Some((5, 0x0001_0100))
        );
        assert_eq!(a.report(ErrorEvent::InvalidDoorbellRegister), None);
        a.unmask_errors();
        // No request outstanding: the event waits for the next one.
        assert_eq!(a.report(ErrorEvent::InvalidDoorbellRegister), None);
        assert_eq!(a.request(6), Ok(Some(0x0001_0000)));
        assert_eq!(a.held(), 0);
    }
}
