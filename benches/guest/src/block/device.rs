//! The boundary between the block job and a storage driver: one polled I/O queue with a fixed
//! number of slots. The NVMe and virtio-blk drivers implement it.

/// The direction of an I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

/// The device as the driver found it.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Bytes the device holds.
    pub capacity_bytes: u64,
    /// Logical block size: offsets and lengths are multiples of it.
    pub lba_bytes: u32,
}

/// What the job asks of a driver when it opens the device.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Slots: the most I/Os the job keeps in flight (1..=[`super::MAX_QUEUE_DEPTH`]).
    pub depth: u16,
    /// Bytes of every I/O; a driver that cannot transfer that much in one command refuses
    /// with BAD_PARAMETER.
    pub io_bytes: u32,
    /// For bounded waits.
    pub tsc_khz: u64,
}

/// One polled queue. The job owns the slots: it submits on a slot only once the previous I/O on
/// it has completed, with `offset` and `len` multiples of the block size inside the device and
/// `len <= io_bytes`; `buf` is 4 KiB aligned guest memory of `len` bytes, which is also its DMA
/// address.
pub trait BlockQueue {
    fn geometry(&self) -> Geometry;

    /// Queues an I/O on `slot` (below `depth`) without telling the device.
    fn submit(&mut self, slot: u16, op: Op, offset: u64, len: u32, buf: u64);

    /// Tells the device about everything submitted since the last call (one notification).
    fn ring(&mut self);

    /// Calls `done(slot, ok)` for each I/O that completed since the last call and returns how
    /// many did. `slot` comes from the device: the caller checks it.
    fn poll<F: FnMut(u16, bool)>(&mut self, done: F) -> usize;

    /// Logs what the driver knows about the device's state, after a stall or errors.
    fn log_state(&mut self) {}
}
