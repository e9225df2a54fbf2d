//! Helpers shared by the integration tests. Each test binary uses a different part of them.
#![allow(dead_code)]

pub mod guest_ram;
pub mod nvme_driver;
pub mod vfio_user_daemon;
