//! A virtio-blk device whose queues a vhost-user backend serves: the VMM negotiates features,
//! reads the block configuration and, when the driver sets DRIVER_OK, hands the backend guest
//! memory, the rings and the kick/call eventfds. From then on the data path is guest <->
//! backend; the VMM is not on it.
//!
//! The device-independent part (connection, memory, rings, in-flight region, reconnection)
//! is [`VhostUserFrontend`]; this file adds what is blk's own: the features offered, the
//! configuration space (GET_CONFIG once at connection, SET_CONFIG for the writeback toggle)
//! and INFLIGHT_SHMFD, which lets a restarted backend resubmit requests a crashed one had
//! taken.

use std::path::{Path, PathBuf};

use vhost::vhost_user::VhostUserProtocolFeatures;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::GuestMemoryMmap;

use super::device::{ActivateError, Activation, VirtioDevice};
use super::vhost_user::{self, FrontendConfig, VhostUserFrontend};
use super::{feature, DEVICE_TYPE_BLOCK};

/// struct virtio_blk_config up to and including write_zeroes_may_unmap and its padding
/// (section 5.2.4): what every backend knows.
pub const CONFIG_LEN: usize = 60;
/// Offset of num_queues in struct virtio_blk_config.
const CONFIG_NUM_QUEUES: usize = 34;
/// Offset of the writeback (wce) byte.
const CONFIG_WCE: usize = 32;
/// Queue size offered when the configuration names none.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;

/// Protocol features blk uses on top of the generic ones.
const BLK_PROTOCOL: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::CONFIG.union(VhostUserProtocolFeatures::INFLIGHT_SHMFD);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Frontend(#[from] vhost_user::Error),
    #[error(
        "the vhost-user backend does not offer VHOST_USER_PROTOCOL_F_CONFIG: the disk's size is \
         unknown"
    )]
    NoConfig,
    #[error("queues={0}: expected 1 to 64")]
    BadQueueCount(u16),
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
    frontend: VhostUserFrontend,
    offered: u64,
    config: [u8; CONFIG_LEN],
    queue_sizes: Vec<u16>,
}

impl VhostUserBlk {
    /// Connects and negotiates; the guest is offered what the backend and this frontend both
    /// support.
    pub fn connect(cfg: &VhostUserBlkConfig, mem: GuestMemoryMmap) -> Result<VhostUserBlk, Error> {
        if cfg.queues == 0 || cfg.queues > 64 {
            return Err(Error::BadQueueCount(cfg.queues));
        }
        let mut frontend = VhostUserFrontend::connect(
            FrontendConfig {
                socket: cfg.socket.clone(),
                queues: cfg.queues,
                queue_size: cfg.queue_size,
                device_protocol: BLK_PROTOCOL,
                default_queues: 1,
                backoff: Default::default(),
            },
            mem,
        )?;
        if !frontend
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG)
        {
            return Err(Error::NoConfig);
        }
        let payload = frontend.get_config(0, CONFIG_LEN as u32)?;
        let offered = guest_features(frontend.backend_features(), cfg.queues);
        frontend.offer(offered);
        let config = blk_config(&payload, offered, cfg.queues);
        log::debug!(
            "vhost-user-blk {}: offering {offered:#x}",
            cfg.socket.display()
        );
        Ok(VhostUserBlk {
            frontend,
            offered,
            config,
            queue_sizes: vec![cfg.queue_size; usize::from(cfg.queues)],
        })
    }

    pub fn socket(&self) -> &Path {
        self.frontend.socket()
    }

    /// Disk size in 512-byte sectors, as the backend reported it.
    pub fn capacity_sectors(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.config[..8]);
        u64::from_le_bytes(b)
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
        match self.frontend.set_config(CONFIG_WCE as u32, data) {
            Ok(()) => self.config[CONFIG_WCE] = data[0],
            Err(e) => log::warn!(
                "vhost-user-blk {}: SET_CONFIG (writeback): {}",
                self.socket().display(),
                crate::error_chain(&e)
            ),
        }
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.frontend.activate(a).map_err(|e| {
            let e = ErrorAt(self.socket().to_path_buf(), e.into());
            ActivateError(Box::new(e))
        })
    }

    fn reset(&mut self) {
        self.frontend.reset();
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

    use vhost::vhost_user::VhostUserVirtioFeatures;

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
            Err(Error::Frontend(vhost_user::Error::BadQueueSize(100)))
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
