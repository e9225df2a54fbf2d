//! One connection to a vhost-user backend: the negotiation every device does (SET_OWNER,
//! GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM) and the requests that hand the
//! backend guest memory and start or stop a ring. What to replay after a reconnect is the
//! frontend's business; this module only sends.

use std::path::{Path, PathBuf};

use vhost::vhost_user::message::VhostUserInflight;
use vhost::vhost_user::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::VringConfigData;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::GuestMemoryMmap;

use super::channel::Channel;
use super::inflight::Inflight;
use crate::virtio::device::QueueActivation;
use crate::virtio::{feature, vhost_user_mem};

/// Protocol features every device's frontend uses when offered.
pub const GENERIC_PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::MQ
    .union(VhostUserProtocolFeatures::REPLY_ACK)
    .union(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vhost-user {what} to {} failed", socket.display())]
    Request {
        socket: PathBuf,
        what: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("the vhost-user backend does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NotModern(u64),
    #[error("{want} queues asked for, the vhost-user backend has {have}")]
    TooManyQueues { want: u16, have: u64 },
    #[error("guest RAM has {regions} regions, the vhost-user backend takes {slots}")]
    TooManyRegions { regions: usize, slots: u64 },
    #[error("guest memory")]
    Memory(#[source] vhost_user_mem::Error),
}

/// A negotiated connection.
pub struct Connection {
    channel: Box<dyn Channel>,
    socket: PathBuf,
    /// What GET_FEATURES returned.
    pub backend_features: u64,
    /// VHOST_USER_F_PROTOCOL_FEATURES, if the backend offered it: acked with the virtio
    /// features, and then rings are enabled with SET_VRING_ENABLE.
    pub protocol_bit: u64,
    /// The protocol features acked.
    pub protocol: VhostUserProtocolFeatures,
    mem_sent: bool,
}

/// Names a failed request and the backend it went to.
fn req<T>(socket: &Path, what: &'static str, r: vhost::Result<T>) -> Result<T, Error> {
    r.map_err(|source| Error::Request {
        socket: socket.to_path_buf(),
        what,
        source,
    })
}

impl Connection {
    /// Takes ownership of the backend and negotiates: VERSION_1 is required, protocol
    /// features are acked from `wanted` as far as the backend offers them, and the backend
    /// must have `queues` queues (without VHOST_USER_PROTOCOL_F_MQ it has the device's
    /// `default_queues`).
    pub fn negotiate(
        mut channel: Box<dyn Channel>,
        socket: &Path,
        queues: u16,
        default_queues: u16,
        wanted: VhostUserProtocolFeatures,
    ) -> Result<Connection, Error> {
        req(socket, "SET_OWNER", channel.set_owner())?;
        let backend = req(socket, "GET_FEATURES", channel.get_features())?;
        if backend & feature(VIRTIO_F_VERSION_1) == 0 {
            return Err(Error::NotModern(backend));
        }
        let protocol_bit = backend & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol = if protocol_bit == 0 {
            VhostUserProtocolFeatures::empty()
        } else {
            let offered = req(
                socket,
                "GET_PROTOCOL_FEATURES",
                channel.get_protocol_features(),
            )?;
            let protocol = offered & wanted;
            req(
                socket,
                "SET_PROTOCOL_FEATURES",
                channel.set_protocol_features(protocol),
            )?;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every request then gets a status reply: a backend refusal surfaces as an
                // error at the request that caused it.
                channel.need_reply();
            }
            protocol
        };
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let have = req(socket, "GET_QUEUE_NUM", channel.get_queue_num())?;
            if have < u64::from(queues) {
                return Err(Error::TooManyQueues { want: queues, have });
            }
        } else if queues > default_queues {
            return Err(Error::TooManyQueues {
                want: queues,
                have: u64::from(default_queues),
            });
        }
        log::debug!(
            "vhost-user {}: backend features {backend:#x}, protocol {:#x}",
            socket.display(),
            protocol.bits()
        );
        Ok(Connection {
            channel,
            socket: socket.to_path_buf(),
            backend_features: backend,
            protocol_bit,
            protocol,
            mem_sent: false,
        })
    }

    pub fn get_config(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, Error> {
        req(
            &self.socket,
            "GET_CONFIG",
            self.channel.get_config(offset, len),
        )
    }

    pub fn set_config(&mut self, offset: u32, data: &[u8]) -> Result<(), Error> {
        req(
            &self.socket,
            "SET_CONFIG",
            self.channel.set_config(offset, data),
        )
    }

    /// SET_FEATURES with the driver's features (and the protocol bit when negotiated).
    pub fn set_features(&mut self, guest: u64) -> Result<(), Error> {
        req(
            &self.socket,
            "SET_FEATURES",
            self.channel.set_features(guest | self.protocol_bit),
        )
    }

    /// Hands the backend guest memory, once per connection (it never changes): ADD_MEM_REG
    /// per region when CONFIGURE_MEM_SLOTS was negotiated, else SET_MEM_TABLE.
    pub fn send_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), Error> {
        if self.mem_sent {
            return Ok(());
        }
        let regions = vhost_user_mem::regions(mem).map_err(Error::Memory)?;
        let s = &self.socket;
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
        {
            let slots = req(s, "GET_MAX_MEM_SLOTS", self.channel.get_max_mem_slots())?;
            if regions.len() as u64 > slots {
                return Err(Error::TooManyRegions {
                    regions: regions.len(),
                    slots,
                });
            }
            for r in &regions {
                req(s, "ADD_MEM_REG", self.channel.add_mem_region(r))?;
            }
        } else {
            req(s, "SET_MEM_TABLE", self.channel.set_mem_table(&regions))?;
        }
        self.mem_sent = true;
        Ok(())
    }

    /// Whether INFLIGHT_SHMFD was negotiated on this connection.
    pub fn has_inflight(&self) -> bool {
        self.protocol
            .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD)
    }

    /// GET_INFLIGHT_FD: the backend allocates a zeroed region for `queues` rings of
    /// `queue_size` entries.
    pub fn get_inflight(&mut self, queues: u16, queue_size: u16) -> Result<Inflight, Error> {
        let ask = VhostUserInflight {
            mmap_size: 0,
            mmap_offset: 0,
            num_queues: queues,
            queue_size,
        };
        let (info, file) = req(
            &self.socket,
            "GET_INFLIGHT_FD",
            self.channel.get_inflight_fd(&ask),
        )?;
        Ok(Inflight::new(info, file))
    }

    /// SET_INFLIGHT_FD: the backend maps the region and, on SET_VRING_KICK, resubmits what
    /// it records as in flight.
    pub fn set_inflight(&mut self, inflight: &Inflight) -> Result<(), Error> {
        req(
            &self.socket,
            "SET_INFLIGHT_FD",
            self.channel
                .set_inflight_fd(inflight.info(), inflight.raw_fd()),
        )
    }

    /// SET_VRING_NUM/ADDR/BASE/CALL/KICK and, with protocol features, SET_VRING_ENABLE.
    /// `base` is where the backend starts reading the avail ring.
    pub fn start_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        q: &QueueActivation,
        max_size: u16,
        base: u16,
    ) -> Result<(), Error> {
        let i = usize::from(q.index);
        let addrs = vhost_user_mem::ring_addrs(mem, q).map_err(Error::Memory)?;
        let (s, c) = (&self.socket, &mut self.channel);
        req(s, "SET_VRING_NUM", c.set_vring_num(i, q.size))?;
        let config = VringConfigData {
            queue_max_size: max_size,
            queue_size: q.size,
            flags: 0,
            desc_table_addr: addrs.desc,
            used_ring_addr: addrs.device,
            avail_ring_addr: addrs.driver,
            log_addr: None,
        };
        req(s, "SET_VRING_ADDR", c.set_vring_addr(i, &config))?;
        req(s, "SET_VRING_BASE", c.set_vring_base(i, base))?;
        req(s, "SET_VRING_CALL", c.set_vring_call(i, &q.call))?;
        req(s, "SET_VRING_KICK", c.set_vring_kick(i, &q.kick))?;
        if self.protocol_bit != 0 {
            req(s, "SET_VRING_ENABLE", c.set_vring_enable(i, true))?;
        }
        Ok(())
    }

    /// Disables the ring (with protocol features) and stops it with GET_VRING_BASE; the
    /// index it returns is of no use to a driver that starts over from 0.
    pub fn stop_queue(&mut self, queue: u16) -> Result<(), Error> {
        let i = usize::from(queue);
        if self.protocol_bit != 0 {
            req(
                &self.socket,
                "SET_VRING_ENABLE",
                self.channel.set_vring_enable(i, false),
            )?;
        }
        req(
            &self.socket,
            "GET_VRING_BASE",
            self.channel.get_vring_base(i),
        )?;
        Ok(())
    }
}
