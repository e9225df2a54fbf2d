//! Counters: cheap, updated on the data path, read by the bench and the SMART log.

/// What a controller has done since it was created (a reset does not clear them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControllerStats {
    /// Admin commands fetched.
    pub admin_commands: u64,
    /// I/O commands fetched, by kind.
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub write_zeroes: u64,
    pub dataset_management: u64,
    /// I/O commands with an unsupported opcode.
    pub other_io: u64,
    /// Data moved by successful reads and writes.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Completions posted with a status other than success.
    pub error_completions: u64,
    /// Completion queue entries written to guest memory.
    pub cqes_posted: u64,
    /// Completions that waited for the guest to free completion queue entries.
    pub cq_full_waits: u64,
    pub sq_doorbell_writes: u64,
    pub cq_doorbell_writes: u64,
    /// Doorbell writes ignored: unknown queue, bad value, or controller not ready.
    pub invalid_doorbell_writes: u64,
    /// Requests the engine could not take at once (queued until it had room).
    pub engine_backlogged: u64,
    /// Engine submit or wait failures.
    pub engine_errors: u64,
    /// Times CSTS.CFS was set.
    pub fatal_errors: u64,
}
