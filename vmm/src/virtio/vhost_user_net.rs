//! A virtio-net device whose queues a vhost-user backend serves (`--net socket=PATH`): the VMM
//! negotiates features and builds the configuration space; when the driver sets DRIVER_OK the
//! backend gets guest memory, the receive and transmit rings and their kick/call eventfds, and
//! from then on frames go guest <-> backend without the VMM.
//!
//! The device-independent part is [`VhostUserFrontend`]; this file adds what is net's own:
//! - the features offered: the backend's ring and offload features that this transport
//!   handles, with the offloads' dependencies (section 5.1.3.1) enforced, plus MAC and STATUS,
//!   which the VMM serves from its own configuration space whatever the backend offers (QEMU
//!   does the same). Only the features the backend offered are acked to it.
//! - the configuration space: the MAC (`mac=`, else the backend's through GET_CONFIG when it
//!   has VHOST_USER_PROTOCOL_F_CONFIG and VIRTIO_NET_F_MAC, else [`DEFAULT_MAC`]), the status
//!   (always LINK_UP), max_virtqueue_pairs (1) and the MTU (the backend's, offered only when
//!   the backend both offers VIRTIO_NET_F_MTU and reports a usable value).
//!
//! One queue pair: VIRTIO_NET_F_MQ needs a control queue that the VMM would serve itself (as
//! QEMU does) to pass VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET on as ring enables; that is not built,
//! so more pairs are refused and MQ and CTRL_VQ are never offered.

use std::path::{Path, PathBuf};

use vhost::vhost_user::VhostUserProtocolFeatures;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::GuestMemoryMmap;

use super::device::{ActivateError, Activation, VirtioDevice};
use super::vhost_user::{self, FrontendConfig, VhostUserFrontend};
use super::{feature, DEVICE_TYPE_NET};
pub use crate::net::DEFAULT_MAC;

/// struct virtio_net_config up to and including mtu (section 5.1.4).
pub const CONFIG_LEN: usize = 12;
const CONFIG_MAC: usize = 0;
const CONFIG_STATUS: usize = 6;
const CONFIG_MAX_PAIRS: usize = 8;
const CONFIG_MTU: usize = 10;
/// The smallest MTU a driver must accept (section 5.1.4.1: at least 68).
const MIN_MTU: u16 = 68;
/// Receive and transmit queue of the one pair.
const QUEUES: u16 = 2;

/// Protocol features net uses on top of the generic ones.
const NET_PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::CONFIG;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Frontend(#[from] vhost_user::Error),
    #[error(
        "queues={0}: this frontend serves one queue pair (VIRTIO_NET_F_MQ needs a control queue \
         it does not serve)"
    )]
    MultiQueue(u16),
}

/// What to connect to and what to offer the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhostUserNetConfig {
    pub socket: PathBuf,
    /// Queue pairs; only 1 is served.
    pub queue_pairs: u16,
    /// The largest ring the backend accepts per queue: vhost-user has no message to ask.
    pub queue_size: u16,
    /// The guest's MAC; `None`: the backend's, or [`DEFAULT_MAC`].
    pub mac: Option<[u8; 6]>,
}

pub struct VhostUserNet {
    frontend: VhostUserFrontend,
    offered: u64,
    config: [u8; CONFIG_LEN],
    queue_sizes: Vec<u16>,
}

impl VhostUserNet {
    /// Connects and negotiates; the guest is offered what the backend and this frontend both
    /// support.
    pub fn connect(cfg: &VhostUserNetConfig, mem: GuestMemoryMmap) -> Result<VhostUserNet, Error> {
        check(cfg)?;
        let frontend = VhostUserFrontend::connect(frontend_config(cfg), mem)?;
        Ok(VhostUserNet::over(cfg, frontend))
    }

    /// As [`VhostUserNet::connect`], over a frontend already negotiated (a test double's).
    pub fn with_frontend(
        cfg: &VhostUserNetConfig,
        frontend: VhostUserFrontend,
    ) -> Result<VhostUserNet, Error> {
        check(cfg)?;
        Ok(VhostUserNet::over(cfg, frontend))
    }

    fn over(cfg: &VhostUserNetConfig, mut frontend: VhostUserFrontend) -> VhostUserNet {
        let backend = frontend.backend_features();
        let from_backend = backend_config(&frontend);
        let mtu = from_backend
            .as_ref()
            .filter(|_| backend & feature(VIRTIO_NET_F_MTU) != 0)
            .map(|c| u16::from_le_bytes([c[CONFIG_MTU], c[CONFIG_MTU + 1]]))
            .filter(|&m| m >= MIN_MTU);
        let offered = guest_features(backend, mtu.is_some());
        frontend.offer(offered);
        let backend_mac = from_backend
            .as_ref()
            .filter(|_| backend & feature(VIRTIO_NET_F_MAC) != 0)
            .map(|c| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&c[CONFIG_MAC..CONFIG_MAC + 6]);
                mac
            });
        let mac = cfg.mac.or(backend_mac).unwrap_or(DEFAULT_MAC);
        log::debug!(
            "vhost-user-net {}: offering {offered:#x}, mac {mac:02x?}, mtu {mtu:?}",
            cfg.socket.display()
        );
        VhostUserNet {
            frontend,
            offered,
            config: net_config(mac, mtu),
            queue_sizes: vec![cfg.queue_size; usize::from(QUEUES)],
        }
    }

    pub fn socket(&self) -> &Path {
        self.frontend.socket()
    }

    /// The MAC the guest reads.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[CONFIG_MAC..CONFIG_MAC + 6]);
        mac
    }
}

fn check(cfg: &VhostUserNetConfig) -> Result<(), Error> {
    if cfg.queue_pairs != 1 {
        return Err(Error::MultiQueue(cfg.queue_pairs));
    }
    Ok(())
}

/// The frontend's configuration for `cfg`: two queues (receive, transmit).
pub fn frontend_config(cfg: &VhostUserNetConfig) -> FrontendConfig {
    FrontendConfig {
        socket: cfg.socket.clone(),
        queues: QUEUES,
        queue_size: cfg.queue_size,
        device_protocol: NET_PROTOCOL,
        default_queues: QUEUES,
        backoff: Default::default(),
    }
}

/// The backend's configuration space, when it can tell (VHOST_USER_PROTOCOL_F_CONFIG); a
/// failed or short reply counts as none, so the VMM's defaults apply.
fn backend_config(frontend: &VhostUserFrontend) -> Option<[u8; CONFIG_LEN]> {
    if !frontend
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG)
    {
        return None;
    }
    match frontend.get_config(0, CONFIG_LEN as u32) {
        Ok(payload) if payload.len() >= CONFIG_LEN => {
            let mut c = [0u8; CONFIG_LEN];
            c.copy_from_slice(&payload[..CONFIG_LEN]);
            Some(c)
        }
        Ok(payload) => {
            log::warn!(
                "vhost-user-net {}: GET_CONFIG returned {} bytes, not {CONFIG_LEN}",
                frontend.socket().display(),
                payload.len()
            );
            None
        }
        Err(e) => {
            log::warn!(
                "vhost-user-net {}: {}",
                frontend.socket().display(),
                crate::error_chain(&e)
            );
            None
        }
    }
}

/// What the guest may negotiate: the backend's ring and offload features this transport and
/// frontend handle (no packed rings, notification data, IN_ORDER or platform DMA, as for blk;
/// no MQ or control queue), offloads only with what they depend on, MTU when a value is known,
/// and MAC and STATUS, which the VMM's configuration space serves.
pub fn guest_features(backend: u64, mtu_known: bool) -> u64 {
    let supported = [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_HOST_UFO,
    ]
    .iter()
    .fold(0, |m, &b| m | feature(b));
    let mut f = backend & supported | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_NET_F_STATUS);
    if mtu_known {
        f |= feature(VIRTIO_NET_F_MTU);
    }
    let has = |f: u64, b: u32| f & feature(b) != 0;
    // Section 5.1.3.1: segmentation offloads need checksum offload in the same direction,
    // ECN needs a TSO.
    if !has(f, VIRTIO_NET_F_GUEST_CSUM) {
        f &= !(feature(VIRTIO_NET_F_GUEST_TSO4)
            | feature(VIRTIO_NET_F_GUEST_TSO6)
            | feature(VIRTIO_NET_F_GUEST_UFO));
    }
    if !has(f, VIRTIO_NET_F_GUEST_TSO4) && !has(f, VIRTIO_NET_F_GUEST_TSO6) {
        f &= !feature(VIRTIO_NET_F_GUEST_ECN);
    }
    if !has(f, VIRTIO_NET_F_CSUM) {
        f &= !(feature(VIRTIO_NET_F_HOST_TSO4)
            | feature(VIRTIO_NET_F_HOST_TSO6)
            | feature(VIRTIO_NET_F_HOST_UFO));
    }
    if !has(f, VIRTIO_NET_F_HOST_TSO4) && !has(f, VIRTIO_NET_F_HOST_TSO6) {
        f &= !feature(VIRTIO_NET_F_HOST_ECN);
    }
    f
}

/// The configuration the guest reads.
fn net_config(mac: [u8; 6], mtu: Option<u16>) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    c[CONFIG_MAC..CONFIG_MAC + 6].copy_from_slice(&mac);
    c[CONFIG_STATUS..CONFIG_STATUS + 2]
        .copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    c[CONFIG_MAX_PAIRS..CONFIG_MAX_PAIRS + 2].copy_from_slice(&1u16.to_le_bytes());
    c[CONFIG_MTU..CONFIG_MTU + 2].copy_from_slice(&mtu.unwrap_or(0).to_le_bytes());
    c
}

impl VirtioDevice for VhostUserNet {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_NET
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
        // Every field is read-only for a VERSION_1 driver (the MAC is set through the control
        // queue, which is not offered).
        log::debug!(
            "vhost-user-net {}: ignoring a {}-byte config write at {offset}",
            self.socket().display(),
            data.len()
        );
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        // MAC and STATUS are the VMM's: the backend is acked only what it offered. Bits never
        // offered stay in, for the frontend to refuse.
        let a = Activation {
            features: a.features & (self.frontend.backend_features() | !self.offered),
            queues: a.queues,
        };
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
#[error("vhost-user-net {}", .0.display())]
struct ErrorAt(PathBuf, #[source] Error);

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::RawFd;
    use std::sync::{Arc, Mutex};

    use vhost::vhost_user::message::VhostUserInflight;
    use vhost::vhost_user::VhostUserVirtioFeatures;
    use vhost::{VhostUserMemoryRegionInfo, VringConfigData};
    use virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED;
    use virtio_bindings::virtio_net::{VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ};
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::memory::{GuestRam, RamConfig};
    use crate::virtio::device::QueueActivation;
    use crate::virtio::vhost_user::Channel;

    /// A backend behind the frontend channel: answers with its features and configuration,
    /// records every request in order.
    struct FakeBackend {
        features: u64,
        protocol: VhostUserProtocolFeatures,
        /// GET_CONFIG's reply; `None`: the request fails.
        config: Option<Vec<u8>>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl FakeBackend {
        fn record(&self, s: String) {
            self.log.lock().unwrap().push(s);
        }
    }

    fn refused() -> vhost::Error {
        vhost::Error::VhostUserProtocol(vhost::vhost_user::Error::InvalidMessage)
    }

    impl Channel for FakeBackend {
        fn set_owner(&mut self) -> vhost::Result<()> {
            self.record("SET_OWNER".into());
            Ok(())
        }
        fn get_features(&mut self) -> vhost::Result<u64> {
            Ok(self.features)
        }
        fn set_features(&mut self, features: u64) -> vhost::Result<()> {
            self.record(format!("SET_FEATURES {features:#x}"));
            Ok(())
        }
        fn get_protocol_features(&mut self) -> vhost::Result<VhostUserProtocolFeatures> {
            Ok(self.protocol)
        }
        fn set_protocol_features(&mut self, f: VhostUserProtocolFeatures) -> vhost::Result<()> {
            self.record(format!("SET_PROTOCOL_FEATURES {:#x}", f.bits()));
            Ok(())
        }
        fn need_reply(&mut self) {}
        fn get_queue_num(&mut self) -> vhost::Result<u64> {
            Ok(2)
        }
        fn get_config(&mut self, offset: u32, len: u32) -> vhost::Result<Vec<u8>> {
            self.record(format!("GET_CONFIG {offset} {len}"));
            self.config.clone().ok_or_else(refused)
        }
        fn set_config(&mut self, _: u32, _: &[u8]) -> vhost::Result<()> {
            self.record("SET_CONFIG".into());
            Ok(())
        }
        fn get_max_mem_slots(&mut self) -> vhost::Result<u64> {
            Ok(8)
        }
        fn add_mem_region(&mut self, _: &VhostUserMemoryRegionInfo) -> vhost::Result<()> {
            self.record("ADD_MEM_REG".into());
            Ok(())
        }
        fn set_mem_table(&mut self, _: &[VhostUserMemoryRegionInfo]) -> vhost::Result<()> {
            self.record("SET_MEM_TABLE".into());
            Ok(())
        }
        fn get_inflight_fd(
            &mut self,
            _: &VhostUserInflight,
        ) -> vhost::Result<(VhostUserInflight, File)> {
            Err(refused())
        }
        fn set_inflight_fd(&mut self, _: &VhostUserInflight, _: RawFd) -> vhost::Result<()> {
            Err(refused())
        }
        fn set_vring_num(&mut self, q: usize, size: u16) -> vhost::Result<()> {
            self.record(format!("SET_VRING_NUM {q} {size}"));
            Ok(())
        }
        fn set_vring_addr(&mut self, q: usize, _: &VringConfigData) -> vhost::Result<()> {
            self.record(format!("SET_VRING_ADDR {q}"));
            Ok(())
        }
        fn set_vring_base(&mut self, q: usize, base: u16) -> vhost::Result<()> {
            self.record(format!("SET_VRING_BASE {q} {base}"));
            Ok(())
        }
        fn get_vring_base(&mut self, q: usize) -> vhost::Result<u32> {
            self.record(format!("GET_VRING_BASE {q}"));
            Ok(0)
        }
        fn set_vring_call(&mut self, q: usize, _: &EventFd) -> vhost::Result<()> {
            self.record(format!("SET_VRING_CALL {q}"));
            Ok(())
        }
        fn set_vring_kick(&mut self, q: usize, _: &EventFd) -> vhost::Result<()> {
            self.record(format!("SET_VRING_KICK {q}"));
            Ok(())
        }
        fn set_vring_enable(&mut self, q: usize, on: bool) -> vhost::Result<()> {
            self.record(format!("SET_VRING_ENABLE {q} {on}"));
            Ok(())
        }
    }

    const PROTOCOL_BIT: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

    fn ram() -> GuestRam {
        GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap()
    }

    fn cfg(mac: Option<[u8; 6]>) -> VhostUserNetConfig {
        VhostUserNetConfig {
            socket: "/fake/net.sock".into(),
            queue_pairs: 1,
            queue_size: 256,
            mac,
        }
    }

    /// The configuration space a backend with `mac` and `mtu` reports.
    fn backend_space(mac: [u8; 6], mtu: u16) -> Vec<u8> {
        let mut c = vec![0u8; CONFIG_LEN];
        c[..6].copy_from_slice(&mac);
        c[CONFIG_MTU..CONFIG_MTU + 2].copy_from_slice(&mtu.to_le_bytes());
        c
    }

    /// A device over a fake backend, with the fake's request log.
    fn device(
        features: u64,
        protocol: VhostUserProtocolFeatures,
        config: Option<Vec<u8>>,
        mac: Option<[u8; 6]>,
        ram: &GuestRam,
    ) -> (VhostUserNet, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let backend = FakeBackend {
            features,
            protocol,
            config,
            log: log.clone(),
        };
        let c = cfg(mac);
        let frontend = VhostUserFrontend::with_channel(
            frontend_config(&c),
            ram.memory().clone(),
            Box::new(backend),
        )
        .unwrap();
        (VhostUserNet::with_frontend(&c, frontend).unwrap(), log)
    }

    fn config_of(dev: &VhostUserNet) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        dev.read_config(0, &mut c);
        c
    }

    fn u16_at(c: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([c[at], c[at + 1]])
    }

    const BASIC: u64 = feature(VIRTIO_F_VERSION_1)
        | feature(VIRTIO_RING_F_EVENT_IDX)
        | feature(VIRTIO_NET_F_MRG_RXBUF);

    #[test]
    fn guest_features_keep_what_both_sides_support() {
        let backend = BASIC
            | PROTOCOL_BIT
            | feature(VIRTIO_F_RING_PACKED)
            | feature(VIRTIO_NET_F_MQ)
            | feature(VIRTIO_NET_F_CTRL_VQ)
            | feature(VIRTIO_NET_F_CSUM)
            | feature(VIRTIO_NET_F_HOST_TSO4)
            | feature(VIRTIO_NET_F_GUEST_CSUM)
            | feature(VIRTIO_NET_F_GUEST_TSO6)
            | feature(VIRTIO_NET_F_GUEST_ECN);
        let ours = feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_NET_F_STATUS);
        assert_eq!(
            guest_features(backend, false),
            BASIC
                | ours
                | feature(VIRTIO_NET_F_CSUM)
                | feature(VIRTIO_NET_F_HOST_TSO4)
                | feature(VIRTIO_NET_F_GUEST_CSUM)
                | feature(VIRTIO_NET_F_GUEST_TSO6)
                | feature(VIRTIO_NET_F_GUEST_ECN)
        );
        assert_eq!(
            guest_features(BASIC, true),
            BASIC | ours | feature(VIRTIO_NET_F_MTU)
        );
    }

    #[test]
    fn offloads_without_what_they_depend_on_are_not_offered() {
        let backend = BASIC
            | feature(VIRTIO_NET_F_HOST_TSO4)
            | feature(VIRTIO_NET_F_HOST_ECN)
            | feature(VIRTIO_NET_F_GUEST_TSO4)
            | feature(VIRTIO_NET_F_GUEST_UFO)
            | feature(VIRTIO_NET_F_GUEST_ECN)
            | feature(VIRTIO_NET_F_GUEST_CSUM);
        let f = guest_features(backend, false);
        // No CSUM: the host-side TSO and its ECN go.
        assert_eq!(
            f & (feature(VIRTIO_NET_F_HOST_TSO4) | feature(VIRTIO_NET_F_HOST_ECN)),
            0
        );
        // GUEST_CSUM present: the guest-side offloads stay.
        assert_ne!(f & feature(VIRTIO_NET_F_GUEST_TSO4), 0);
        assert_ne!(f & feature(VIRTIO_NET_F_GUEST_ECN), 0);
        let f = guest_features(backend & !feature(VIRTIO_NET_F_GUEST_CSUM), false);
        let guest_offloads = feature(VIRTIO_NET_F_GUEST_TSO4)
            | feature(VIRTIO_NET_F_GUEST_UFO)
            | feature(VIRTIO_NET_F_GUEST_ECN);
        assert_eq!(f & guest_offloads, 0);
    }

    #[test]
    fn config_has_the_backends_mac_and_mtu_when_it_reports_them() {
        let ram = ram();
        let (dev, log) = device(
            BASIC | PROTOCOL_BIT | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_NET_F_MTU),
            VhostUserProtocolFeatures::CONFIG,
            Some(backend_space(BACKEND_MAC, 9000)),
            None,
            &ram,
        );
        let c = config_of(&dev);
        assert_eq!(&c[..6], &BACKEND_MAC);
        assert_eq!(u16_at(&c, CONFIG_STATUS), VIRTIO_NET_S_LINK_UP as u16);
        assert_eq!(u16_at(&c, CONFIG_MAX_PAIRS), 1);
        assert_eq!(u16_at(&c, CONFIG_MTU), 9000);
        assert_ne!(dev.features() & feature(VIRTIO_NET_F_MTU), 0);
        assert!(log
            .lock()
            .unwrap()
            .contains(&format!("GET_CONFIG 0 {CONFIG_LEN}")));
        // A read past the end is zeros, not a panic.
        let mut past = [0xffu8; 4];
        dev.read_config(CONFIG_LEN as u64 - 2, &mut past);
        assert_eq!(past, [0; 4]);
    }

    #[test]
    fn the_configured_mac_beats_the_backends() {
        let ram = ram();
        let mine = [0x52, 0x54, 0, 0xab, 0xcd, 0xef];
        let (dev, _) = device(
            BASIC | PROTOCOL_BIT | feature(VIRTIO_NET_F_MAC),
            VhostUserProtocolFeatures::CONFIG,
            Some(backend_space(BACKEND_MAC, 1500)),
            Some(mine),
            &ram,
        );
        assert_eq!(dev.mac(), mine);
        assert_eq!(&config_of(&dev)[..6], &mine);
        // The backend did not offer VIRTIO_NET_F_MTU: its value is not passed on.
        assert_eq!(dev.features() & feature(VIRTIO_NET_F_MTU), 0);
        assert_eq!(u16_at(&config_of(&dev), CONFIG_MTU), 0);
    }

    #[test]
    fn without_a_usable_backend_config_the_defaults_apply() {
        let ram = ram();
        // No CONFIG protocol feature: GET_CONFIG is never sent.
        let (dev, log) = device(
            BASIC | PROTOCOL_BIT | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_NET_F_MTU),
            VhostUserProtocolFeatures::empty(),
            Some(backend_space(BACKEND_MAC, 9000)),
            None,
            &ram,
        );
        assert_eq!(dev.mac(), DEFAULT_MAC);
        assert_eq!(dev.features() & feature(VIRTIO_NET_F_MTU), 0);
        assert!(!log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("GET_CONFIG")));
        // A refused, a short and an MTU below 68: defaults again.
        for (reply, what) in [
            (None, "refused"),
            (Some(vec![1, 2, 3]), "short"),
            (Some(backend_space(BACKEND_MAC, 10)), "tiny mtu"),
        ] {
            let tiny = what == "tiny mtu";
            let (dev, _) = device(
                BASIC | PROTOCOL_BIT | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_NET_F_MTU),
                VhostUserProtocolFeatures::CONFIG,
                reply,
                None,
                &ram,
            );
            assert_eq!(dev.features() & feature(VIRTIO_NET_F_MTU), 0, "{what}");
            let want = if tiny { BACKEND_MAC } else { DEFAULT_MAC };
            assert_eq!(dev.mac(), want, "{what}");
        }
    }

    fn queue(index: u16, at: u64) -> QueueActivation {
        QueueActivation {
            index,
            size: 256,
            desc: at,
            driver: at + 0x1000,
            device: at + 0x2000,
            kick: EventFd::new(0).unwrap(),
            call: EventFd::new(0).unwrap(),
        }
    }

    #[test]
    fn activation_acks_the_backend_only_what_it_offered() {
        let ram = ram();
        let backend = BASIC | PROTOCOL_BIT;
        let (mut dev, log) = device(
            backend,
            VhostUserProtocolFeatures::empty(),
            None,
            None,
            &ram,
        );
        let driver = dev.features();
        assert_ne!(driver & feature(VIRTIO_NET_F_STATUS), 0);
        dev.activate(Activation {
            features: driver,
            queues: vec![queue(0, 0x10000), queue(1, 0x20000)],
        })
        .unwrap();
        let log = log.lock().unwrap().clone();
        let start = log
            .iter()
            .position(|l| l.starts_with("SET_FEATURES"))
            .unwrap();
        assert_eq!(
            log[start..],
            [
                format!("SET_FEATURES {backend:#x}"),
                "SET_MEM_TABLE".into(),
                "SET_VRING_NUM 0 256".into(),
                "SET_VRING_ADDR 0".into(),
                "SET_VRING_BASE 0 0".into(),
                "SET_VRING_CALL 0".into(),
                "SET_VRING_KICK 0".into(),
                "SET_VRING_ENABLE 0 true".into(),
                "SET_VRING_NUM 1 256".into(),
                "SET_VRING_ADDR 1".into(),
                "SET_VRING_BASE 1 0".into(),
                "SET_VRING_CALL 1".into(),
                "SET_VRING_KICK 1".into(),
                "SET_VRING_ENABLE 1 true".into(),
            ]
        );
    }

    #[test]
    fn a_driver_taking_unoffered_features_is_refused() {
        let ram = ram();
        let (mut dev, log) = device(
            BASIC | PROTOCOL_BIT | feature(VIRTIO_NET_F_MQ),
            VhostUserProtocolFeatures::empty(),
            None,
            None,
            &ram,
        );
        let err = dev
            .activate(Activation {
                features: dev.features() | feature(VIRTIO_NET_F_MQ),
                queues: vec![queue(0, 0x10000), queue(1, 0x20000)],
            })
            .unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("were not offered"), "{text}");
        assert!(!log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("SET_VRING")));
    }

    #[test]
    fn more_than_one_queue_pair_is_refused_before_connecting() {
        let c = VhostUserNetConfig {
            queue_pairs: 2,
            ..cfg(None)
        };
        assert!(matches!(
            VhostUserNet::connect(&c, ram().memory().clone()),
            Err(Error::MultiQueue(2))
        ));
    }

    #[test]
    fn a_backend_without_version_1_is_refused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let backend = FakeBackend {
            features: feature(VIRTIO_NET_F_MAC),
            protocol: VhostUserProtocolFeatures::empty(),
            config: None,
            log,
        };
        let c = cfg(None);
        let err = VhostUserFrontend::with_channel(
            frontend_config(&c),
            ram().memory().clone(),
            Box::new(backend),
        )
        .err()
        .unwrap();
        assert!(crate::error_chain(&err).contains("VERSION_1"));
    }
}
