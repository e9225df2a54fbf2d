//! Getting a guest to its first instruction.

pub mod bench_guest;
pub mod linux;
pub mod long_mode;
