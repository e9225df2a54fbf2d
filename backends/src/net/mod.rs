//! Network frame I/O for the net paths: the host TAP device and the frame engines a
//! virtio-net queue pair drives.
//!
//! - [`tap`]: a TAP device through `/dev/net/tun` (vnet header, multi-queue, offloads)
//! - [`header`]: the `virtio_net_hdr_v1` in front of every frame
//! - [`uring`]: [`TapEngine`], frames between guest buffers and a TAP queue on io_uring
//! - [`loopback`]: [`Loopback`], reflect (every TX frame back on RX) and sink (dropped)
//!
//! An engine takes guest buffers as checked host ranges ([`iommu::DmaSlice`]) and keeps them
//! until their completion is reaped, like the block engine. One engine per queue pair thread.

use std::io;
use std::os::fd::RawFd;

use iommu::DmaSlice;

pub mod header;
pub mod loopback;
pub mod tap;
pub mod uring;

pub use loopback::{Loopback, LoopbackMode};
pub use tap::Tap;
pub use uring::TapEngine;

/// Which way a frame goes, seen from the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Guest to wire: `segments` hold the vnet header and the frame.
    Tx,
    /// Wire to guest: `segments` receive the vnet header and the frame.
    Rx,
}

/// One frame transfer.
#[derive(Debug)]
pub struct FrameRequest {
    pub dir: Dir,
    pub segments: Vec<DmaSlice>,
    /// Returned unchanged in the completion.
    pub tag: u64,
}

/// The outcome of one [`FrameRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCompletion {
    pub tag: u64,
    pub dir: Dir,
    /// Bytes of the frame, vnet header included. For RX it may exceed the buffers' total: the
    /// frame did not fit and what was written is truncated. `Err(errno)`; `ECANCELED` for
    /// receives ended by [`NetEngine::cancel_rx`].
    pub result: Result<usize, i32>,
}

/// Frames the engine itself dropped (the guest never sees a completion error for them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// TX frames sent (TAP), reflected (reflect) or counted and dropped (sink).
    pub tx_frames: u64,
    pub rx_frames: u64,
    /// Reflected frames dropped because RX buffers did not keep up.
    pub overflow: u64,
    /// Reflected GSO frames the guest cannot take (no GUEST_TSO*) and that reflect cannot
    /// segment.
    pub unsegmentable: u64,
}

/// The frame engine boundary. Implementations: [`TapEngine`] (io_uring over a TAP queue),
/// [`Loopback`] (reflect, sink).
pub trait NetEngine: Send {
    /// Requests that may be in flight at once.
    fn queue_depth(&self) -> usize;

    /// Queues a transfer; gives it back if the engine is full. Receives complete when a frame
    /// arrives, which may be never: see [`NetEngine::cancel_rx`].
    ///
    /// # Safety
    /// Every segment must stay valid (mapped, not freed) until this request's completion has
    /// been returned by [`NetEngine::reap`] or the engine has been dropped.
    unsafe fn push(&mut self, request: FrameRequest) -> Result<(), FrameRequest>;

    /// Hands queued requests to the kernel.
    fn submit(&mut self) -> io::Result<()>;

    /// Moves finished transfers into `out` without blocking; returns how many.
    fn reap(&mut self, out: &mut Vec<FrameCompletion>) -> usize;

    /// Blocks until a transfer finishes (returns at once if none can: nothing in flight, or
    /// only receives that wait for traffic that will not come without the guest).
    fn wait(&mut self) -> io::Result<()>;

    /// Ends every pending receive (`ECANCELED`), so the queue can be drained.
    fn cancel_rx(&mut self);

    /// Which offloads the guest accepts on RX (`tap::offload` flags, i.e. `TUN_F_*`).
    fn set_offloads(&mut self, flags: u32) -> io::Result<()>;

    /// An eventfd that becomes readable when completions are ready; `None` if completions
    /// are ready right after `push`/`submit` (loopback).
    fn completion_fd(&self) -> Option<RawFd>;

    /// Requests pushed and not yet reaped.
    fn in_flight(&self) -> usize;

    fn stats(&self) -> EngineStats;
}

/// The `tap::offload` flags matching the guest's negotiated virtio-net features
/// (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO).
pub fn guest_offloads(features: u64) -> u32 {
    use virtio_bindings::virtio_net::*;
    let has = |bit: u32| features & (1u64 << bit) != 0;
    let mut flags = 0;
    if has(VIRTIO_NET_F_GUEST_CSUM) {
        flags |= tap::offload::CSUM;
        if has(VIRTIO_NET_F_GUEST_TSO4) {
            flags |= tap::offload::TSO4;
        }
        if has(VIRTIO_NET_F_GUEST_TSO6) {
            flags |= tap::offload::TSO6;
        }
        if has(VIRTIO_NET_F_GUEST_ECN) {
            flags |= tap::offload::TSO_ECN;
        }
        if has(VIRTIO_NET_F_GUEST_UFO) {
            flags |= tap::offload::UFO;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_net::*;

    use super::*;

    #[test]
    fn segmentation_offloads_need_the_checksum_offload() {
        let f = |bits: &[u32]| bits.iter().map(|b| 1u64 << b).sum::<u64>();
        assert_eq!(guest_offloads(0), 0);
        assert_eq!(guest_offloads(f(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
        assert_eq!(
            guest_offloads(f(&[
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6
            ])),
            tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6
        );
    }
}
