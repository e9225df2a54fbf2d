//! Set Features / Get Features state (NVMe 1.4 section 5.21).

use super::spec::Status;

/// Feature identifiers.
pub mod fid {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    pub const WRITE_ATOMICITY: u8 = 0x0a;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0f;
}

/// Composite temperature over-threshold default (Kelvin); also Identify WCTEMP.
pub const WARNING_TEMPERATURE: u16 = 343;

/// Get Features SEL = 3: the feature is changeable (not saveable, not namespace specific).
const CAPABILITY_CHANGEABLE: u32 = 1 << 2;

/// Current feature values. Nothing is saveable; a controller reset restores the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    max_io_queues: u16,
    /// I/O submission / completion queues granted (1-based counts).
    pub sq_granted: u16,
    pub cq_granted: u16,
    arbitration: u32,
    power_state: u32,
    over_temperature: u16,
    under_temperature: u16,
    error_recovery: u32,
    pub write_cache: bool,
    interrupt_coalescing: u32,
    write_atomicity: u32,
    async_event_config: u32,
    keep_alive: u32,
}

impl Features {
    pub fn new(max_io_queues: u16) -> Self {
        Features {
            max_io_queues,
            sq_granted: max_io_queues,
            cq_granted: max_io_queues,
            arbitration: 0,
            power_state: 0,
            over_temperature: WARNING_TEMPERATURE,
            under_temperature: 0,
            error_recovery: 0,
            write_cache: true,
            interrupt_coalescing: 0,
            write_atomicity: 0,
            async_event_config: 0,
            keep_alive: 0,
        }
    }

    /// Set Features: returns Completion DW0. `queues_created` is whether any I/O queue has been
    /// created since the last reset (Number of Queues may not change after that).
    pub fn set(&mut self, cdw10: u32, cdw11: u32, queues_created: bool) -> Result<u32, Status> {
        if cdw10 & (1 << 31) != 0 {
            return Err(Status::FEATURE_NOT_SAVEABLE);
        }
        match cdw10 as u8 {
            fid::ARBITRATION => self.arbitration = cdw11,
            fid::POWER_MANAGEMENT => {
                // One power state (NPSS = 0).
                if cdw11 & 0x1f != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                self.power_state = cdw11 & 0xff;
            }
            fid::TEMPERATURE_THRESHOLD => {
                let (value, _, kind) = temperature_fields(cdw11)?;
                match kind {
                    0 => self.over_temperature = value,
                    _ => self.under_temperature = value,
                }
            }
            fid::ERROR_RECOVERY => {
                // DULBE needs deallocated-block error support, which we do not report.
                if cdw11 & (1 << 16) != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                self.error_recovery = cdw11 & 0xffff;
            }
            fid::VOLATILE_WRITE_CACHE => self.write_cache = cdw11 & 1 != 0,
            fid::NUMBER_OF_QUEUES => {
                if queues_created {
                    return Err(Status::COMMAND_SEQUENCE_ERROR);
                }
                let (nsqr, ncqr) = (cdw11 & 0xffff, cdw11 >> 16);
                if nsqr == 0xffff || ncqr == 0xffff {
                    return Err(Status::INVALID_FIELD);
                }
                let max = u32::from(self.max_io_queues);
                self.sq_granted = (nsqr + 1).min(max) as u16;
                self.cq_granted = (ncqr + 1).min(max) as u16;
                return Ok(self.number_of_queues());
            }
            fid::INTERRUPT_COALESCING => self.interrupt_coalescing = cdw11 & 0xffff,
            fid::INTERRUPT_VECTOR_CONFIG => {}
            fid::WRITE_ATOMICITY => self.write_atomicity = cdw11 & 1,
            fid::ASYNC_EVENT_CONFIG => self.async_event_config = cdw11,
            fid::KEEP_ALIVE_TIMER => self.keep_alive = cdw11,
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(0)
    }

    /// Get Features: returns Completion DW0.
    pub fn get(&self, cdw10: u32, cdw11: u32) -> Result<u32, Status> {
        let fid = cdw10 as u8;
        match (cdw10 >> 8) & 0x7 {
            // Current.
            0 => self.value(fid, cdw11),
            // Default, and saved (nothing is saveable, so saved is the default).
            1 | 2 => Features::new(self.max_io_queues).value(fid, cdw11),
            // Supported capabilities.
            3 => self.value(fid, cdw11).map(|_| CAPABILITY_CHANGEABLE),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    fn value(&self, fid: u8, cdw11: u32) -> Result<u32, Status> {
        Ok(match fid {
            fid::ARBITRATION => self.arbitration,
            fid::POWER_MANAGEMENT => self.power_state,
            fid::TEMPERATURE_THRESHOLD => {
                let (_, sensor, kind) = temperature_fields(cdw11)?;
                let value = match kind {
                    0 => self.over_temperature,
                    _ => self.under_temperature,
                };
                u32::from(value) | (sensor << 16) | (kind << 20)
            }
            fid::ERROR_RECOVERY => self.error_recovery,
            fid::VOLATILE_WRITE_CACHE => u32::from(self.write_cache),
            fid::NUMBER_OF_QUEUES => self.number_of_queues(),
            fid::INTERRUPT_COALESCING => self.interrupt_coalescing,
            // The vector asked about, coalescing not disabled.
            fid::INTERRUPT_VECTOR_CONFIG => cdw11 & 0xffff,
            fid::WRITE_ATOMICITY => self.write_atomicity,
            fid::ASYNC_EVENT_CONFIG => self.async_event_config,
            fid::KEEP_ALIVE_TIMER => self.keep_alive,
            _ => return Err(Status::INVALID_FIELD),
        })
    }

    /// Number of Queues DW0: NSQA and NCQA, 0-based.
    fn number_of_queues(&self) -> u32 {
        u32::from(self.sq_granted - 1) | (u32::from(self.cq_granted - 1) << 16)
    }
}

/// Temperature Threshold fields: (TMPTH, TMPSEL, THSEL). Only the composite temperature
/// (TMPSEL 0) exists; THSEL 0 is the over, 1 the under threshold.
fn temperature_fields(cdw11: u32) -> Result<(u16, u32, u32), Status> {
    let (value, sensor, kind) = (cdw11 as u16, (cdw11 >> 16) & 0xf, (cdw11 >> 20) & 0x3);
    if sensor != 0 || kind > 1 {
        return Err(Status::INVALID_FIELD);
    }
    Ok((value, sensor, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEL_DEFAULT: u32 = 1 << 8;
    const SEL_CAPS: u32 = 3 << 8;

    #[test]
    fn number_of_queues_grants_the_minimum() {
        let mut f = Features::new(8);
        assert_eq!(f.get(7, 0), Ok(7 | (7 << 16)));
        // Ask for 4 SQs and 100 CQs (0-based 3 and 99).
        assert_eq!(f.set(7, 3 | (99 << 16), false), Ok(3 | (7 << 16)));
        assert_eq!((f.sq_granted, f.cq_granted), (4, 8));
        assert_eq!(f.get(7, 0), Ok(3 | (7 << 16)));
        assert_eq!(f.get(7 | SEL_DEFAULT, 0), Ok(7 | (7 << 16)));
        assert_eq!(f.set(7, 0xffff, false), Err(Status::INVALID_FIELD));
        assert_eq!(f.set(7, 0, true), Err(Status::COMMAND_SEQUENCE_ERROR));
    }

    #[test]
    fn accepted_features_read_back() {
        let mut f = Features::new(4);
        assert_eq!(f.get(6, 0), Ok(1), "write cache on by default");
        f.set(6, 0, false).unwrap();
        assert!(!f.write_cache);
        assert_eq!(f.get(6, 0), Ok(0));
        f.set(1, 0x0302_0103, false).unwrap();
        assert_eq!(f.get(1, 0), Ok(0x0302_0103));
        assert_eq!(f.set(2, 0, false), Ok(0));
        assert_eq!(f.set(2, 1, false), Err(Status::INVALID_FIELD));
        f.set(0x0f, 5000, false).unwrap();
        assert_eq!(f.get(0x0f, 0), Ok(5000));
        f.set(0x0b, 0x1ff, false).unwrap();
        assert_eq!(f.get(0x0b, 0), Ok(0x1ff));
        f.set(8, 0x0a05, false).unwrap();
        assert_eq!(f.get(8, 0), Ok(0x0a05));
        assert_eq!(f.get(9, 3), Ok(3));
        f.set(0x0a, 1, false).unwrap();
        assert_eq!(f.get(0x0a, 0), Ok(1));
        assert_eq!(f.set(5, 1 << 16, false), Err(Status::INVALID_FIELD));
        f.set(5, 30, false).unwrap();
        assert_eq!(f.get(5, 0), Ok(30));
    }

    #[test]
    fn temperature_thresholds() {
        let mut f = Features::new(4);
        assert_eq!(f.get(4, 0), Ok(u32::from(WARNING_TEMPERATURE)));
        f.set(4, 350, false).unwrap();
        f.set(4, 270 | (1 << 20), false).unwrap();
        assert_eq!(f.get(4, 0), Ok(350));
        assert_eq!(f.get(4, 1 << 20), Ok(270 | (1 << 20)));
        assert_eq!(f.set(4, 1 << 16, false), Err(Status::INVALID_FIELD));
        assert_eq!(f.get(4, 2 << 20), Err(Status::INVALID_FIELD));
    }

    #[test]
    fn unknown_saveable_and_select() {
        let mut f = Features::new(4);
        assert_eq!(f.set(0x7f, 0, false), Err(Status::INVALID_FIELD));
        assert_eq!(f.get(0x7f, 0), Err(Status::INVALID_FIELD));
        assert_eq!(
            f.set(6 | (1 << 31), 1, false),
            Err(Status::FEATURE_NOT_SAVEABLE)
        );
        assert_eq!(f.get(6 | SEL_CAPS, 0), Ok(CAPABILITY_CHANGEABLE));
        assert_eq!(f.get(6 | (4 << 8), 0), Err(Status::INVALID_FIELD));
    }
}
