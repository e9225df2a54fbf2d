//! The boundary between the net job and a network driver: one polled TX queue and one polled RX
//! queue. The e1000 and virtio-net drivers implement it.

/// What the job asks of a driver when it opens the device.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Frames the job may have queued for transmission at once (the driver's TX ring may be
    /// larger).
    pub tx_frames: u16,
    /// The longest frame the job sends or expects back, without FCS.
    pub max_frame: u32,
    /// For bounded waits.
    pub tsc_khz: u64,
}

/// One polled TX queue and one polled RX queue. Frames cross this boundary as Ethernet frames
/// without FCS and without any device header: the driver adds and strips its own.
pub trait NetQueue {
    /// The device's MAC address, as the driver read it.
    fn mac(&self) -> [u8; 6];

    /// Copies `frame` into the driver's next free TX buffer without telling the device; `false`
    /// when every TX buffer is still owned by the device (after taking back what it finished).
    fn send(&mut self, frame: &[u8]) -> bool;

    /// Tells the device about every frame queued since the last call (one notification).
    fn flush(&mut self);

    /// Calls `f` with each frame received since the last call, gives the buffers back to the
    /// device and returns how many frames there were. Frames that the device marked bad are
    /// dropped by the driver and not passed on.
    fn recv<F: FnMut(&[u8])>(&mut self, f: F) -> usize;

    /// Logs what the driver knows about the device's state, after a stall or errors.
    fn log_state(&mut self) {}
}
