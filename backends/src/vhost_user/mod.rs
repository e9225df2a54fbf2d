//! What the vhost-user daemons share: the DMA view of the memory table, descriptor chain
//! walking through it, the listening socket and SIGTERM handling.
//!
//! - [`memory`]: the memory table as an `iommu` address space
//! - [`chain`]: split-ring descriptor chains, read through that address space
//! - [`ring`]: the split ring as a worker sees it, over the crate's vring state
//! - [`queue_thread`]: what a `VhostUserBackend` keeps around its per-thread workers
//! - [`socket`]: the private listening socket and waiting on it
//! - [`signal`]: SIGTERM/SIGINT as an event

pub mod chain;
pub mod memory;
pub mod queue_thread;
pub mod ring;
pub mod signal;
pub mod socket;
#[cfg(test)]
pub(crate) mod testing;
