//! An NVMe controller model (NVMe base specification 1.4, NVM command set), independent of how
//! it is reached: the VMM traps BAR0 accesses into it, a vfio-user server forwards them.
//!
//! One namespace backed by a [`crate::engine::BlockEngine`]; every guest address goes through
//! an `iommu` address space; every malformed command completes with an error status.

mod admin;
mod aer;
mod config;
mod controller;
mod features;
mod identify;
mod inflight;
mod io;
mod logs;
mod namespace;
mod prp;
mod queue;
mod regs;
mod spec;
mod stats;
#[cfg(test)]
mod testing;

pub use config::ControllerConfig;
pub use controller::{Controller, InterruptFn};
pub use identify::PCI_VENDOR_ID;
/// Register offsets a transport needs to recognise (a CC write, the doorbell area).
pub use regs::{CC, DOORBELL_BASE};
pub use stats::ControllerStats;
