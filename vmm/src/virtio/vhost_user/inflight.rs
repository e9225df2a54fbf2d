//! The in-flight tracking region of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: shared memory the
//! backend allocates on GET_INFLIGHT_FD and records every request it has taken from a ring
//! and not yet completed in. The frontend holds the fd for the device's life (a crashed
//! backend's successor gets it back with SET_INFLIGHT_FD and resubmits what is recorded); it
//! never maps the region itself.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use vhost::vhost_user::message::VhostUserInflight;

pub struct Inflight {
    info: VhostUserInflight,
    file: File,
}

impl Inflight {
    pub fn new(info: VhostUserInflight, file: File) -> Inflight {
        Inflight { info, file }
    }

    /// Size, offset in the fd, queue count and size, as the backend returned them.
    pub fn info(&self) -> &VhostUserInflight {
        &self.info
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
