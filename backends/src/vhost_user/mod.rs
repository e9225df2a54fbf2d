//! What the vhost-user daemons share: the DMA view of the memory table, descriptor chain
//! walking through it, the listening socket and SIGTERM handling.
//!
//! - [`memory`]: the memory table as an `iommu` address space
//! - [`chain`]: split-ring descriptor chains, read through that address space
//! - [`socket`]: the private listening socket and waiting on it
//! - [`signal`]: SIGTERM/SIGINT as an event

pub mod chain;
pub mod memory;
pub mod signal;
pub mod socket;
#[cfg(test)]
pub(crate) mod testing;
