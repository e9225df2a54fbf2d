//! A virtio-blk device whose queues a vhost-user backend serves: the VMM negotiates features,
//! reads the block configuration and, when the driver sets DRIVER_OK, hands the backend guest
//! memory, the rings and the kick/call eventfds. From then on the data path is guest <->
//! backend; the VMM is not on it.
//!
//! Connection set-up follows QEMU's vhost-user frontend: SET_OWNER, GET_FEATURES,
//! GET/SET_PROTOCOL_FEATURES (CONFIG, MQ, REPLY_ACK, CONFIGURE_MEM_SLOTS when offered),
//! GET_QUEUE_NUM, GET_CONFIG. Guest memory goes to the backend once per connection (it never
//! changes), on the first activation: ADD_MEM_REG per region when CONFIGURE_MEM_SLOTS was
//! negotiated, else SET_MEM_TABLE. A driver reset stops the rings with GET_VRING_BASE.
//!
//! Requests are synchronous on the calling thread (the vCPU thread for activation) with no
//! timeout: the vhost crate retries a timed-out socket read, so a backend that accepts and
//! then never answers stalls the VMM until it hangs up.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::GuestMemoryMmap;

use super::device::{ActivateError, Activation, VirtioDevice};
use super::{feature, vhost_user_mem, DEVICE_TYPE_BLOCK};

/// struct virtio_blk_config up to and including write_zeroes_may_unmap and its padding
/// (section 5.2.4): what every backend knows.
pub const CONFIG_LEN: usize = 60;
/// Offset of num_queues in struct virtio_blk_config.
const CONFIG_NUM_QUEUES: usize = 34;
/// Offset of the writeback (wce) byte.
const CONFIG_WCE: usize = 32;
/// Queue size offered when the configuration names none.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;

/// Protocol features the frontend uses.
const PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::CONFIG
    .union(VhostUserProtocolFeatures::MQ)
    .union(VhostUserProtocolFeatures::REPLY_ACK)
    .union(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to vhost-user socket {}", .0.display())]
    Connect(PathBuf, #[source] std::io::Error),
    #[error("vhost-user {what} to {} failed", socket.display())]
    Request {
        socket: PathBuf,
        what: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("the vhost-user backend does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NotModern(u64),
    #[error(
        "the vhost-user backend does not offer VHOST_USER_PROTOCOL_F_CONFIG: the disk's size is \
         unknown"
    )]
    NoConfig,
    #[error("{want} queues asked for, the vhost-user backend has {have}")]
    TooManyQueues { want: u16, have: u64 },
    #[error("queues={0}: expected 1 to 64")]
    BadQueueCount(u16),
    #[error("queue_size={0}: expected a power of two from 2 to 32768")]
    BadQueueSize(u16),
    #[error("guest RAM has {regions} regions, the vhost-user backend takes {slots}")]
    TooManyRegions { regions: usize, slots: u64 },
    #[error("guest memory")]
    Memory(#[source] vhost_user_mem::Error),
    #[error("the driver accepted features {0:#x} that were not offered")]
    UnofferedFeatures(u64),
    #[error("queue {index}: size {size} is not a power of two up to {max}")]
    QueueSize { index: u16, size: u16, max: u16 },
}

/// What to connect to and what to offer the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhostUserBlkConfig {
    pub socket: PathBuf,
    /// Request queues (1 unless the backend offers VIRTIO_BLK_F_MQ).
    pub queues: u16,
    /// The largest ring the backend accepts per queue: vhost-user has no message to ask.
    pub queue_size: u16,
}

pub struct VhostUserBlk {
    frontend: Frontend,
    socket: PathBuf,
    /// VHOST_USER_F_PROTOCOL_FEATURES, if the backend offered it: must be acked with the
    /// virtio features so that rings are enabled with SET_VRING_ENABLE.
    protocol_bit: u64,
    protocol: VhostUserProtocolFeatures,
    offered: u64,
    config: [u8; CONFIG_LEN],
    queue_sizes: Vec<u16>,
    mem: GuestMemoryMmap,
    mem_sent: bool,
    /// Queues the backend is running, to stop on reset.
    started: Vec<u16>,
}

/// Names a failed request and the backend it went to.
fn req<T>(socket: &Path, what: &'static str, r: vhost::Result<T>) -> Result<T, Error> {
    r.map_err(|source| Error::Request {
        socket: socket.to_path_buf(),
        what,
        source,
    })
}

/// Acks the protocol features this frontend uses, if the backend has any.
fn negotiate_protocol(
    frontend: &mut Frontend,
    socket: &Path,
    backend: u64,
) -> Result<VhostUserProtocolFeatures, Error> {
    if backend & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
        return Ok(VhostUserProtocolFeatures::empty());
    }
    let offered = req(
        socket,
        "GET_PROTOCOL_FEATURES",
        frontend.get_protocol_features(),
    )?;
    let protocol = offered & PROTOCOL;
    req(
        socket,
        "SET_PROTOCOL_FEATURES",
        frontend.set_protocol_features(protocol),
    )?;
    if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        // Every request then gets a status reply: a backend refusal surfaces as an error at
        // the request that caused it.
        frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    Ok(protocol)
}

impl VhostUserBlk {
    /// Connects and negotiates; the guest is offered what the backend and this frontend both
    /// support.
    pub fn connect(cfg: &VhostUserBlkConfig, mem: GuestMemoryMmap) -> Result<VhostUserBlk, Error> {
        if cfg.queues == 0 || cfg.queues > 64 {
            return Err(Error::BadQueueCount(cfg.queues));
        }
        if !cfg.queue_size.is_power_of_two() || cfg.queue_size < 2 || cfg.queue_size > 32768 {
            return Err(Error::BadQueueSize(cfg.queue_size));
        }
        let stream =
            UnixStream::connect(&cfg.socket).map_err(|e| Error::Connect(cfg.socket.clone(), e))?;
        let mut frontend = Frontend::from_stream(stream, u64::from(cfg.queues));
        req(&cfg.socket, "SET_OWNER", frontend.set_owner())?;
        let backend = req(&cfg.socket, "GET_FEATURES", frontend.get_features())?;
        if backend & feature(VIRTIO_F_VERSION_1) == 0 {
            return Err(Error::NotModern(backend));
        }
        let protocol_bit = backend & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol = negotiate_protocol(&mut frontend, &cfg.socket, backend)?;
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let have = req(&cfg.socket, "GET_QUEUE_NUM", frontend.get_queue_num())?;
            if have < u64::from(cfg.queues) {
                return Err(Error::TooManyQueues {
                    want: cfg.queues,
                    have,
                });
            }
        } else if cfg.queues > 1 {
            return Err(Error::TooManyQueues {
                want: cfg.queues,
                have: 1,
            });
        }
        if !protocol.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(Error::NoConfig);
        }
        let (_, payload) = req(
            &cfg.socket,
            "GET_CONFIG",
            frontend.get_config(
                0,
                CONFIG_LEN as u32,
                VhostUserConfigFlags::empty(),
                &[0; CONFIG_LEN],
            ),
        )?;
        let offered = guest_features(backend, cfg.queues);
        let config = blk_config(&payload, offered, cfg.queues);
        log::debug!(
            "vhost-user-blk {}: backend features {backend:#x}, protocol {:#x}, offering {offered:#x}",
            cfg.socket.display(),
            protocol.bits()
        );
        Ok(VhostUserBlk {
            frontend,
            socket: cfg.socket.clone(),
            protocol_bit,
            protocol,
            offered,
            config,
            queue_sizes: vec![cfg.queue_size; usize::from(cfg.queues)],
            mem,
            mem_sent: false,
            started: Vec::new(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Disk size in 512-byte sectors, as the backend reported it.
    pub fn capacity_sectors(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.config[..8]);
        u64::from_le_bytes(b)
    }

    fn send_memory(&mut self) -> Result<(), Error> {
        if self.mem_sent {
            return Ok(());
        }
        let regions = vhost_user_mem::regions(&self.mem).map_err(Error::Memory)?;
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
        {
            let slots = req(
                &self.socket,
                "GET_MAX_MEM_SLOTS",
                self.frontend.get_max_mem_slots(),
            )?;
            if regions.len() as u64 > slots {
                return Err(Error::TooManyRegions {
                    regions: regions.len(),
                    slots,
                });
            }
            for r in &regions {
                req(&self.socket, "ADD_MEM_REG", self.frontend.add_mem_region(r))?;
            }
        } else {
            req(
                &self.socket,
                "SET_MEM_TABLE",
                self.frontend.set_mem_table(&regions),
            )?;
        }
        self.mem_sent = true;
        Ok(())
    }

    fn start(&mut self, a: Activation) -> Result<(), Error> {
        if a.features & !self.offered != 0 {
            return Err(Error::UnofferedFeatures(a.features & !self.offered));
        }
        req(
            &self.socket,
            "SET_FEATURES",
            self.frontend.set_features(a.features | self.protocol_bit),
        )?;
        self.send_memory()?;
        for q in &a.queues {
            let i = usize::from(q.index);
            let max = self.queue_sizes.get(i).copied().unwrap_or(0);
            if !q.size.is_power_of_two() || q.size > max {
                return Err(Error::QueueSize {
                    index: q.index,
                    size: q.size,
                    max,
                });
            }
            let addrs = vhost_user_mem::ring_addrs(&self.mem, q).map_err(Error::Memory)?;
            let f = &mut self.frontend;
            req(&self.socket, "SET_VRING_NUM", f.set_vring_num(i, q.size))?;
            req(
                &self.socket,
                "SET_VRING_ADDR",
                f.set_vring_addr(
                    i,
                    &VringConfigData {
                        queue_max_size: max,
                        queue_size: q.size,
                        flags: 0,
                        desc_table_addr: addrs.desc,
                        used_ring_addr: addrs.device,
                        avail_ring_addr: addrs.driver,
                        log_addr: None,
                    },
                ),
            )?;
            // A fresh driver starts its rings at index 0.
            req(&self.socket, "SET_VRING_BASE", f.set_vring_base(i, 0))?;
            req(&self.socket, "SET_VRING_CALL", f.set_vring_call(i, &q.call))?;
            req(&self.socket, "SET_VRING_KICK", f.set_vring_kick(i, &q.kick))?;
            self.started.push(q.index);
            if self.protocol_bit != 0 {
                req(
                    &self.socket,
                    "SET_VRING_ENABLE",
                    f.set_vring_enable(i, true),
                )?;
            }
        }
        Ok(())
    }
}

/// What the guest may negotiate: the backend's features that this transport and frontend
/// handle. Packed rings, notification data, IN_ORDER and platform DMA are left out (the
/// transport's notify path and ring checks assume split rings and plain notifies), and so is
/// the vhost-user-only protocol bit.
pub fn guest_features(backend: u64, queues: u16) -> u64 {
    let mut supported = [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_GEOMETRY,
        VIRTIO_BLK_F_RO,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_TOPOLOGY,
        VIRTIO_BLK_F_CONFIG_WCE,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ]
    .iter()
    .fold(0, |m, &b| m | feature(b));
    if queues > 1 {
        supported |= feature(VIRTIO_BLK_F_MQ);
    }
    backend & supported
}

/// The configuration the guest reads: the backend's, with num_queues set to what this device
/// exposes when MQ is offered. A short reply leaves the rest zero.
fn blk_config(from_backend: &[u8], offered: u64, queues: u16) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let n = from_backend.len().min(CONFIG_LEN);
    c[..n].copy_from_slice(&from_backend[..n]);
    if offered & feature(VIRTIO_BLK_F_MQ) != 0 {
        c[CONFIG_NUM_QUEUES..CONFIG_NUM_QUEUES + 2].copy_from_slice(&queues.to_le_bytes());
    }
    c
}

impl VirtioDevice for VhostUserBlk {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let start = offset as usize;
        match self.config.get(start..start + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0),
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only the write-cache toggle is writable (VIRTIO_BLK_F_CONFIG_WCE); it is the
        // backend's to apply.
        if offset as usize != CONFIG_WCE || data.len() != 1 {
            return;
        }
        if self.offered & feature(VIRTIO_BLK_F_CONFIG_WCE) == 0 {
            return;
        }
        match self
            .frontend
            .set_config(CONFIG_WCE as u32, VhostUserConfigFlags::empty(), data)
        {
            Ok(()) => self.config[CONFIG_WCE] = data[0],
            Err(e) => log::warn!(
                "vhost-user-blk {}: SET_CONFIG (writeback): {e}",
                self.socket.display()
            ),
        }
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.start(a).map_err(|e| {
            let e = ErrorAt(self.socket.clone(), e);
            ActivateError(Box::new(e))
        })
    }

    fn reset(&mut self) {
        for q in std::mem::take(&mut self.started) {
            let i = usize::from(q);
            if self.protocol_bit != 0 {
                if let Err(e) = self.frontend.set_vring_enable(i, false) {
                    log::warn!(
                        "vhost-user-blk {}: disabling queue {q}: {e}",
                        self.socket.display()
                    );
                }
            }
            // GET_VRING_BASE stops the ring; the index it returns is of no use to a driver
            // that starts over from 0.
            if let Err(e) = self.frontend.get_vring_base(i) {
                log::warn!(
                    "vhost-user-blk {}: stopping queue {q}: {e}",
                    self.socket.display()
                );
            }
        }
    }
}

/// An activation error with the socket it concerns.
#[derive(Debug, thiserror::Error)]
#[error("vhost-user-blk {}", .0.display())]
struct ErrorAt(PathBuf, #[source] Error);

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::memory::{GuestRam, RamConfig};

    fn ram() -> GuestRam {
        GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap()
    }

    fn cfg(socket: PathBuf) -> VhostUserBlkConfig {
        VhostUserBlkConfig {
            socket,
            queues: 1,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }

    #[test]
    fn guest_features_keep_what_both_sides_support() {
        let backend = feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_RING_F_EVENT_IDX)
            | feature(VIRTIO_RING_F_INDIRECT_DESC)
            | feature(VIRTIO_BLK_F_BLK_SIZE)
            | feature(VIRTIO_BLK_F_MQ)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | feature(virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED)
            | feature(virtio_bindings::virtio_config::VIRTIO_F_NOTIFICATION_DATA);
        let one = guest_features(backend, 1);
        assert_eq!(
            one,
            feature(VIRTIO_F_VERSION_1)
                | feature(VIRTIO_RING_F_EVENT_IDX)
                | feature(VIRTIO_RING_F_INDIRECT_DESC)
                | feature(VIRTIO_BLK_F_BLK_SIZE)
        );
        assert_eq!(guest_features(backend, 4), one | feature(VIRTIO_BLK_F_MQ));
    }

    #[test]
    fn config_gets_our_queue_count_when_mq_is_offered() {
        let mut from = [0u8; CONFIG_LEN];
        from[..8].copy_from_slice(&8192u64.to_le_bytes());
        from[CONFIG_NUM_QUEUES] = 16;
        let c = blk_config(&from, feature(VIRTIO_BLK_F_MQ), 2);
        assert_eq!(c[CONFIG_NUM_QUEUES], 2);
        assert_eq!(&c[..8], &8192u64.to_le_bytes());
        let c = blk_config(&from[..10], 0, 1);
        assert_eq!(c[8..], [0; CONFIG_LEN - 8], "a short reply is zero-filled");
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = VhostUserBlk::connect(&cfg(path.clone()), ram().memory().clone())
            .err()
            .unwrap();
        let text = crate::error_chain(&err);
        assert!(
            text.starts_with(&format!(
                "connecting to vhost-user socket {}",
                path.display()
            )),
            "{text}"
        );
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn bad_queue_parameters_are_refused_before_connecting() {
        let c = VhostUserBlkConfig {
            queues: 0,
            ..cfg("/nonexistent".into())
        };
        assert!(matches!(
            VhostUserBlk::connect(&c, ram().memory().clone()),
            Err(Error::BadQueueCount(0))
        ));
        let c = VhostUserBlkConfig {
            queue_size: 100,
            ..cfg("/nonexistent".into())
        };
        assert!(matches!(
            VhostUserBlk::connect(&c, ram().memory().clone()),
            Err(Error::BadQueueSize(100))
        ));
    }

    /// A "backend" that answers every request with `reply` and hangs up.
    fn bogus_backend(reply: Vec<u8>) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bogus.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hdr = [0u8; 12];
            // SET_OWNER carries no body; answer whatever comes next with garbage.
            let _ = s.read_exact(&mut hdr);
            let _ = s.read_exact(&mut hdr);
            let _ = s.write_all(&reply);
        });
        (dir, path, handle)
    }

    #[test]
    fn garbage_from_the_backend_is_an_error_not_a_panic() {
        for reply in [
            vec![],
            vec![0xff; 7],
            vec![0xff; 64],
            // A well-formed header for GET_FEATURES (1) with a reply flag and a huge size.
            [
                1u32.to_le_bytes(),
                0x5u32.to_le_bytes(),
                0xffff_fff0u32.to_le_bytes(),
            ]
            .concat(),
            // The right reply with a body too short for a u64.
            [
                1u32.to_le_bytes(),
                0x5u32.to_le_bytes(),
                4u32.to_le_bytes(),
                [1; 4],
            ]
            .concat(),
        ] {
            let (_dir, path, handle) = bogus_backend(reply);
            let err = VhostUserBlk::connect(&cfg(path), ram().memory().clone())
                .err()
                .unwrap();
            let text = crate::error_chain(&err);
            assert!(text.starts_with("vhost-user GET_FEATURES to "), "{text}");
            handle.join().unwrap();
        }
    }
}
