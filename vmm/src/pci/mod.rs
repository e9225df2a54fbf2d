//! PCI: a root bus reached through CF8/CFC and ECAM, configuration spaces with BARs and
//! capabilities, BAR mapping onto the MMIO/PIO buses, and MSI-X.

pub mod config;
pub mod msix;
pub mod root;

pub use config::{Bar, BarKind, ConfigSpace, PciIds};
pub use root::{PciConfigIo, PciConfigMmio, PciRoot};

/// A PCI function as the root sees it.
pub trait PciDevice: Send {
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// Called after the guest wrote configuration register `reg` (dword index), so the device
    /// can react (MSI-X enable, command bits).
    fn config_written(&mut self, _reg: usize) {}
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// Guest-physical window for memory BARs: below the bench guest's probe pages.
pub const MMIO_WINDOW_START: u64 = 0xc000_0000;
pub const MMIO_WINDOW_END: u64 = 0xd000_0000;
/// ECAM for bus 0.
pub const ECAM_BASE: u64 = 0xe000_0000;
pub const ECAM_SIZE: u64 = 1 << 20;
/// Port window for I/O BARs.
pub const IO_WINDOW_START: u64 = 0xc000;
pub const IO_WINDOW_END: u64 = 0x1_0000;
/// The CF8/CFC configuration mechanism.
pub const CONFIG_IO_PORT: u64 = 0xcf8;
