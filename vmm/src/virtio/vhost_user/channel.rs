//! The boundary between the frontend's logic and the vhost-user socket: the requests the
//! frontend sends, one method each. [`vhost::vhost_user::Frontend`] implements it over the
//! socket; the tests use a double that records the requests in order.

use std::fs::File;
use std::os::fd::RawFd;

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserInflight};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

/// One vhost-user connection's requests, as the frontend uses them.
pub trait Channel: Send {
    fn set_owner(&mut self) -> vhost::Result<()>;
    fn get_features(&mut self) -> vhost::Result<u64>;
    fn set_features(&mut self, features: u64) -> vhost::Result<()>;
    fn get_protocol_features(&mut self) -> vhost::Result<VhostUserProtocolFeatures>;
    fn set_protocol_features(&mut self, features: VhostUserProtocolFeatures) -> vhost::Result<()>;
    /// Asks for a status reply to every later request (REPLY_ACK).
    fn need_reply(&mut self);
    fn get_queue_num(&mut self) -> vhost::Result<u64>;
    fn get_config(&mut self, offset: u32, len: u32) -> vhost::Result<Vec<u8>>;
    fn set_config(&mut self, offset: u32, data: &[u8]) -> vhost::Result<()>;
    fn get_max_mem_slots(&mut self) -> vhost::Result<u64>;
    fn add_mem_region(&mut self, region: &VhostUserMemoryRegionInfo) -> vhost::Result<()>;
    fn set_mem_table(&mut self, regions: &[VhostUserMemoryRegionInfo]) -> vhost::Result<()>;
    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> vhost::Result<(VhostUserInflight, File)>;
    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, fd: RawFd) -> vhost::Result<()>;
    fn set_vring_num(&mut self, queue: usize, size: u16) -> vhost::Result<()>;
    fn set_vring_addr(&mut self, queue: usize, config: &VringConfigData) -> vhost::Result<()>;
    fn set_vring_base(&mut self, queue: usize, base: u16) -> vhost::Result<()>;
    fn get_vring_base(&mut self, queue: usize) -> vhost::Result<u32>;
    fn set_vring_call(&mut self, queue: usize, fd: &EventFd) -> vhost::Result<()>;
    fn set_vring_kick(&mut self, queue: usize, fd: &EventFd) -> vhost::Result<()>;
    fn set_vring_enable(&mut self, queue: usize, enable: bool) -> vhost::Result<()>;
}

impl Channel for Frontend {
    fn set_owner(&mut self) -> vhost::Result<()> {
        VhostBackend::set_owner(self)
    }

    fn get_features(&mut self) -> vhost::Result<u64> {
        VhostBackend::get_features(self)
    }

    fn set_features(&mut self, features: u64) -> vhost::Result<()> {
        VhostBackend::set_features(self, features)
    }

    fn get_protocol_features(&mut self) -> vhost::Result<VhostUserProtocolFeatures> {
        VhostUserFrontend::get_protocol_features(self)
    }

    fn set_protocol_features(&mut self, features: VhostUserProtocolFeatures) -> vhost::Result<()> {
        VhostUserFrontend::set_protocol_features(self, features)
    }

    fn need_reply(&mut self) {
        self.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }

    fn get_queue_num(&mut self) -> vhost::Result<u64> {
        VhostUserFrontend::get_queue_num(self)
    }

    fn get_config(&mut self, offset: u32, len: u32) -> vhost::Result<Vec<u8>> {
        let zeros = vec![0; len as usize];
        let (_, payload) = VhostUserFrontend::get_config(
            self,
            offset,
            len,
            VhostUserConfigFlags::empty(),
            &zeros,
        )?;
        Ok(payload)
    }

    fn set_config(&mut self, offset: u32, data: &[u8]) -> vhost::Result<()> {
        VhostUserFrontend::set_config(self, offset, VhostUserConfigFlags::empty(), data)
    }

    fn get_max_mem_slots(&mut self) -> vhost::Result<u64> {
        VhostUserFrontend::get_max_mem_slots(self)
    }

    fn add_mem_region(&mut self, region: &VhostUserMemoryRegionInfo) -> vhost::Result<()> {
        VhostUserFrontend::add_mem_region(self, region).map(drop)
    }

    fn set_mem_table(&mut self, regions: &[VhostUserMemoryRegionInfo]) -> vhost::Result<()> {
        VhostBackend::set_mem_table(self, regions).map(drop)
    }

    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> vhost::Result<(VhostUserInflight, File)> {
        VhostUserFrontend::get_inflight_fd(self, inflight)
    }

    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, fd: RawFd) -> vhost::Result<()> {
        VhostUserFrontend::set_inflight_fd(self, inflight, fd)
    }

    fn set_vring_num(&mut self, queue: usize, size: u16) -> vhost::Result<()> {
        VhostBackend::set_vring_num(self, queue, size)
    }

    fn set_vring_addr(&mut self, queue: usize, config: &VringConfigData) -> vhost::Result<()> {
        VhostBackend::set_vring_addr(self, queue, config)
    }

    fn set_vring_base(&mut self, queue: usize, base: u16) -> vhost::Result<()> {
        VhostBackend::set_vring_base(self, queue, base)
    }

    fn get_vring_base(&mut self, queue: usize) -> vhost::Result<u32> {
        VhostBackend::get_vring_base(self, queue)
    }

    fn set_vring_call(&mut self, queue: usize, fd: &EventFd) -> vhost::Result<()> {
        VhostBackend::set_vring_call(self, queue, fd)
    }

    fn set_vring_kick(&mut self, queue: usize, fd: &EventFd) -> vhost::Result<()> {
        VhostBackend::set_vring_kick(self, queue, fd)
    }

    fn set_vring_enable(&mut self, queue: usize, enable: bool) -> vhost::Result<()> {
        VhostUserFrontend::set_vring_enable(self, queue, enable)
    }
}
