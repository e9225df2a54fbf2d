//! Device-side code shared by the VMM and the daemons.

pub mod cli;
pub mod engine;
pub mod fd_stream;
pub mod host_net;
pub mod net;
pub mod nvme;
pub mod privileges;
pub mod vfio_user_nvme;
pub mod vhost_user;
pub mod vhost_user_blk;
pub mod vhost_user_net;
