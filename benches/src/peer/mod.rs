//! Peers: other VMMs running the very same bench guest, so their rows can stand beside ours.
//! Only the VMM and its device model change; the guest driver, the job and the backing file
//! stay the same. A peer that is not installed is reported as skipped, never imitated.

pub mod qemu;
