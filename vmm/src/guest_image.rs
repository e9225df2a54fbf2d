//! The bench guest, built by this crate's build script and embedded, so every binary runs it
//! without a separate file.

/// The bench guest ELF.
pub const BENCH_GUEST: &[u8] = include_bytes!(env!("IOPATH_GUEST_ELF"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_guest_is_a_static_x86_64_elf() {
        assert_eq!(&BENCH_GUEST[..4], b"\x7fELF");
        assert_eq!(BENCH_GUEST[4], 2, "64-bit");
        // e_type EXEC, e_machine x86-64.
        assert_eq!(u16::from_le_bytes([BENCH_GUEST[16], BENCH_GUEST[17]]), 2);
        assert_eq!(u16::from_le_bytes([BENCH_GUEST[18], BENCH_GUEST[19]]), 62);
    }
}
