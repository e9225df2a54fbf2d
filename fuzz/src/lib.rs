//! Shared pieces of the fuzz targets: reading structured values out of the fuzz input, guest
//! memory behind an `iommu` address space, playing a peer over a Unix socket, and a bare
//! virtio-queue split queue as a worker's ring.
//!
//! Harness code: it may `unwrap` its own set-up (a failure there is a broken harness, not a
//! finding), never the results of the code under test.

pub mod guest;
pub mod input;
pub mod peer;
pub mod ring;
