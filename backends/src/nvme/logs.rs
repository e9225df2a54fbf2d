//! Log pages (NVMe 1.4 section 5.14.1): error information, SMART / health, firmware slots.

use super::aer::ERROR_LOG;
use super::stats::ControllerStats;

/// Log page identifiers.
pub mod lid {
    pub const ERROR: u8 = super::ERROR_LOG;
    pub const SMART: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
}

/// One error information entry (ELPE = 0).
const ERROR_LOG_SIZE: usize = 64;
const SMART_LOG_SIZE: usize = 512;
const FIRMWARE_LOG_SIZE: usize = 512;

/// Reported composite temperature (Kelvin): 37 °C.
const TEMPERATURE: u16 = 310;

/// The content of log page `lid`, or `None` if it is not supported.
pub fn page(lid: u8, stats: &ControllerStats, firmware: &str) -> Option<Vec<u8>> {
    match lid {
        lid::ERROR => Some(vec![0; ERROR_LOG_SIZE]),
        lid::SMART => Some(smart(stats)),
        lid::FIRMWARE_SLOT => Some(firmware_slots(firmware)),
        _ => None,
    }
}

/// Data units are thousands of 512-byte units, rounded up.
fn data_units(bytes: u64) -> u128 {
    u128::from(bytes.div_ceil(512)).div_ceil(1000)
}

fn smart(stats: &ControllerStats) -> Vec<u8> {
    let mut d = vec![0u8; SMART_LOG_SIZE];
    let mut put = |offset: usize, bytes: &[u8]| {
        if let Some(dst) = d.get_mut(offset..offset + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    // Critical Warning 0.
    put(1, &TEMPERATURE.to_le_bytes());
    put(3, &[100]); // Available Spare
    put(4, &[10]); // Available Spare Threshold
    put(32, &data_units(stats.bytes_read).to_le_bytes());
    put(48, &data_units(stats.bytes_written).to_le_bytes());
    put(64, &u128::from(stats.reads).to_le_bytes());
    put(80, &u128::from(stats.writes).to_le_bytes());
    d
}

fn firmware_slots(firmware: &str) -> Vec<u8> {
    let mut d = vec![0u8; FIRMWARE_LOG_SIZE];
    d[0] = 1; // AFI: slot 1 active
    let fr: Vec<u8> = firmware
        .bytes()
        .map(|b| if b.is_ascii_graphic() { b } else { b' ' })
        .chain(std::iter::repeat(b' '))
        .take(8)
        .collect();
    d[8..16].copy_from_slice(&fr);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_have_their_spec_sizes() {
        let s = ControllerStats::default();
        assert_eq!(page(1, &s, "x").unwrap().len(), 64);
        assert_eq!(page(2, &s, "x").unwrap().len(), 512);
        assert_eq!(page(3, &s, "x").unwrap().len(), 512);
        assert!(page(4, &s, "x").is_none());
        assert!(page(0xc0, &s, "x").is_none());
    }

    #[test]
    fn smart_counts_io() {
        let s = ControllerStats {
            reads: 3,
            writes: 2,
            bytes_read: 512 * 1000 + 1,
            bytes_written: 4096,
            ..Default::default()
        };
        let d = page(2, &s, "").unwrap();
        assert_eq!(u16::from_le_bytes([d[1], d[2]]), TEMPERATURE);
        assert_eq!(d[3], 100);
        assert_eq!(d[32], 2, "rounded up");
        assert_eq!(d[48], 1);
        assert_eq!(d[64], 3);
        assert_eq!(d[80], 2);
    }

    #[test]
    fn firmware_slot_1_is_active() {
        let d = page(3, &ControllerStats::default(), "0.1.0").unwrap();
        assert_eq!(d[0], 1);
        assert_eq!(&d[8..16], b"0.1.0   ");
    }
}
