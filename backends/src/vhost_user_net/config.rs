//! What the device tells the driver: feature bits, protocol features and the
//! `virtio_net_config` space; and the frame size limits that follow from what was negotiated.

use std::mem::{offset_of, size_of};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::net::header::HDR_LEN;

/// Bytes of config space served (everything past `max_virtqueue_pairs`/`mtu` reads as zero).
pub const CONFIG_SPACE_LEN: usize = size_of::<virtio_net_config>();

/// Ethernet header with one VLAN tag.
const ETH_OVERHEAD: usize = 18;
/// The largest GSO frame a guest or TAP may hand over (64 KiB of IP plus Ethernet + VLAN).
pub const MAX_GSO_FRAME: usize = 65535 + ETH_OVERHEAD;

/// Where frames go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A host TAP device (created if it does not exist).
    Tap(String),
    /// Every TX frame comes back on RX with the MACs swapped.
    Reflect,
    /// TX frames are counted and dropped; RX stays empty.
    Sink,
}

/// The device as the driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub mac: [u8; 6],
    pub mtu: u16,
    /// Queue pairs (1..=32); more than one adds the control queue and MQ.
    pub queue_pairs: u16,
    /// Maximum entries per queue (a power of two).
    pub queue_size: u16,
}

impl NetConfig {
    pub fn multiqueue(&self) -> bool {
        self.queue_pairs > 1
    }

    /// RX and TX of every pair, then the control queue with MQ.
    pub fn num_queues(&self) -> usize {
        usize::from(self.queue_pairs) * 2 + usize::from(self.multiqueue())
    }

    /// The virtio feature bits offered. Every mode honours the offloads: TAP passes the
    /// header to the kernel, reflect passes it back (finishing checksums and refusing GSO
    /// the guest cannot take), sink drops the frame.
    pub fn features(&self) -> u64 {
        let mut bits = vec![
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
        ];
        if self.multiqueue() {
            bits.extend([VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ]);
        }
        bits.iter().fold(0u64, |acc, bit| acc | 1 << bit)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    pub fn protocol_features() -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    /// The config space, little-endian; the link is always up.
    pub fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        let mut c = [0u8; CONFIG_SPACE_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            c[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(offset_of!(virtio_net_config, mac), &self.mac);
        put(
            offset_of!(virtio_net_config, status),
            &(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes(),
        );
        put(
            offset_of!(virtio_net_config, max_virtqueue_pairs),
            &self.queue_pairs.to_le_bytes(),
        );
        put(offset_of!(virtio_net_config, mtu), &self.mtu.to_le_bytes());
        c
    }

    /// Frame limits under the negotiated `features`.
    pub fn limits(&self, features: u64) -> Limits {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        let plain = HDR_LEN + ETH_OVERHEAD + usize::from(self.mtu);
        let gso = HDR_LEN + MAX_GSO_FRAME;
        let host_gso = has(VIRTIO_NET_F_HOST_TSO4) || has(VIRTIO_NET_F_HOST_TSO6);
        let guest_gso = has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6);
        Limits {
            max_tx: if host_gso { gso } else { plain },
            rx_frame: if guest_gso { gso } else { plain },
            mergeable: has(VIRTIO_NET_F_MRG_RXBUF),
        }
    }
}

/// Frame size limits, vnet header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longer TX chains are dropped.
    pub max_tx: usize,
    /// The longest frame RX may have to hold: with mergeable buffers, receives gather this
    /// much buffer space.
    pub rx_frame: usize,
    /// MRG_RXBUF: a frame may span several RX chains.
    pub mergeable: bool,
}

/// Bytes `offset..offset+size` of the config space; past its end reads as zero.
pub fn config_window(space: &[u8], offset: u32, size: u32) -> Vec<u8> {
    (offset as u64..offset as u64 + size as u64)
        .map(|i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| space.get(i))
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: u16) -> NetConfig {
        NetConfig {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            mtu: 1500,
            queue_pairs: pairs,
            queue_size: 256,
        }
    }

    #[test]
    fn config_space_holds_mac_status_pairs_and_mtu() {
        let c = config(4).config_space();
        assert_eq!(&c[0..6], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(u16::from_le_bytes([c[6], c[7]]), 1, "link up");
        assert_eq!(u16::from_le_bytes([c[8], c[9]]), 4);
        assert_eq!(u16::from_le_bytes([c[10], c[11]]), 1500);
        assert_eq!(config_window(&c, 10, 4)[..2], 1500u16.to_le_bytes());
        assert_eq!(config_window(&c, 1000, 2), vec![0, 0]);
        assert_eq!(config_window(&c, u32::MAX, 2), vec![0, 0]);
    }

    #[test]
    fn control_queue_and_mq_only_with_several_pairs() {
        let mq = 1u64 << VIRTIO_NET_F_MQ | 1 << VIRTIO_NET_F_CTRL_VQ;
        assert_eq!(config(1).features() & mq, 0);
        assert_eq!(config(1).num_queues(), 2);
        assert_eq!(config(2).features() & mq, mq);
        assert_eq!(config(2).num_queues(), 5);
        assert_ne!(config(1).features() & 1 << VIRTIO_F_VERSION_1, 0);
    }

    #[test]
    fn limits_follow_the_negotiated_offloads() {
        let c = config(1);
        let l = c.limits(0);
        assert_eq!((l.max_tx, l.rx_frame, l.mergeable), (1530, 1530, false));
        let l = c.limits(1 << VIRTIO_NET_F_HOST_TSO4 | 1 << VIRTIO_NET_F_MRG_RXBUF);
        assert_eq!((l.max_tx, l.rx_frame, l.mergeable), (65565, 1530, true));
        assert_eq!(c.limits(1 << VIRTIO_NET_F_GUEST_TSO6).rx_frame, 65565);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("52:54:00:ab:CD:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "5:54:00:ab:cd:ef",
            "zz:54:00:ab:cd:ef",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
