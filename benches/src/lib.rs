//! iopath-bench: runs scenarios on each I/O path and reports them side by side.

pub mod block;
pub mod cpu;
pub mod daemon_cmd;
pub mod exits;
pub mod host;
pub mod matrix_args;
pub mod net;
pub mod peer;
pub mod plot;
pub mod report;
pub mod results;
pub mod stats;
pub mod table;
