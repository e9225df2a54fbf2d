//! Device models on the VMM's buses.

pub mod done;
pub mod e1000;
pub mod i8042;
pub mod mark;
pub mod nvme;
pub mod probe;
pub mod serial;
