//! What the device tells the driver: feature bits, protocol features and the
//! `virtio_blk_config` space.

use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, Ordering};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// virtio-blk addresses the device in 512-byte sectors whatever its block size.
pub const SECTOR_SHIFT: u32 = 9;
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// Largest single data descriptor the driver may build. Descriptors reach io_uring as they are
/// (no bounce buffer), so this only bounds one iovec; 1 MiB keeps Linux's default segments.
pub const SIZE_MAX: u32 = 1 << 20;

/// Per-request limits for discard and write-zeroes: 1 GiB in up to 32 ranges. Linux splits
/// larger requests itself.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
pub const MAX_DISCARD_SEG: u32 = 32;

/// Bytes of config space served; everything past `virtio_blk_config` reads as zero, so a
/// frontend that knows a longer struct than ours still gets a well-formed answer.
pub const CONFIG_SPACE_LEN: usize = std::mem::size_of::<virtio_blk_config>();

/// Offset of the one writable field (the driver toggles writeback caching there).
pub const WCE_OFFSET: usize = offset_of!(virtio_blk_config, wce);

/// Length of the GET_ID serial.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// The device as the driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// Bytes; the driver sees whole 512-byte sectors of it.
    pub capacity: u64,
    /// Logical block size (a power of two, at least 512).
    pub block_size: u32,
    pub read_only: bool,
    /// Request queues (1..=64).
    pub num_queues: u16,
    /// Maximum entries per queue (a power of two).
    pub queue_size: u16,
    /// GET_ID answer: at most [`ID_BYTES`] are sent.
    pub serial: String,
}

impl BlkConfig {
    /// Sectors the driver may address.
    pub fn sectors(&self) -> u64 {
        self.capacity >> SECTOR_SHIFT
    }

    /// Data descriptors per request: the queue minus header and status.
    pub fn seg_max(&self) -> u32 {
        u32::from(self.queue_size).saturating_sub(2).max(1)
    }

    /// The serial padded with NULs to [`ID_BYTES`] (the spec leaves it unterminated when full).
    pub fn id(&self) -> [u8; ID_BYTES] {
        let mut id = [0u8; ID_BYTES];
        let bytes = self.serial.as_bytes();
        let n = bytes.len().min(ID_BYTES);
        id[..n].copy_from_slice(&bytes[..n]);
        id
    }

    /// The virtio feature bits offered.
    pub fn features(&self) -> u64 {
        let mut bits = [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_FLUSH,
            VIRTIO_BLK_F_TOPOLOGY,
            VIRTIO_BLK_F_CONFIG_WCE,
            VIRTIO_BLK_F_MQ,
            VIRTIO_BLK_F_DISCARD,
            VIRTIO_BLK_F_WRITE_ZEROES,
        ]
        .iter()
        .fold(0u64, |acc, bit| acc | 1 << bit);
        if self.read_only {
            bits |= 1 << VIRTIO_BLK_F_RO;
        }
        bits | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    /// The vhost-user protocol features offered.
    pub fn protocol_features() -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    /// The config space, little-endian, with `wce` as the driver last set it.
    pub fn config_space(&self, writeback: bool) -> [u8; CONFIG_SPACE_LEN] {
        let mut c = [0u8; CONFIG_SPACE_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            c[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        let sectors_per_block = (self.block_size >> SECTOR_SHIFT).max(1);
        put(
            offset_of!(virtio_blk_config, capacity),
            &self.sectors().to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, size_max),
            &SIZE_MAX.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, seg_max),
            &self.seg_max().to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, blk_size),
            &self.block_size.to_le_bytes(),
        );
        // Topology: one logical block per physical block, no misalignment; the minimum I/O is
        // one logical block (in logical blocks), no preferred size.
        put(
            offset_of!(virtio_blk_config, min_io_size),
            &1u16.to_le_bytes(),
        );
        put(WCE_OFFSET, &[u8::from(writeback)]);
        put(
            offset_of!(virtio_blk_config, num_queues),
            &self.num_queues.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_sectors),
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_seg),
            &MAX_DISCARD_SEG.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, discard_sector_alignment),
            &sectors_per_block.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            &MAX_DISCARD_SEG.to_le_bytes(),
        );
        // Write-zeroes with UNMAP becomes a hole punch, which reads back as zeroes.
        put(offset_of!(virtio_blk_config, write_zeroes_may_unmap), &[1]);
        c
    }
}

/// The device and what the driver changed about it, shared by the backend and its queues.
#[derive(Debug)]
pub struct Device {
    pub config: BlkConfig,
    /// Writeback caching (`wce`): off, every write is made durable before it completes.
    writeback: AtomicBool,
}

impl Device {
    pub fn new(config: BlkConfig) -> Self {
        Device {
            config,
            writeback: AtomicBool::new(true),
        }
    }

    pub fn writeback(&self) -> bool {
        self.writeback.load(Ordering::Relaxed)
    }

    pub fn set_writeback(&self, on: bool) {
        self.writeback.store(on, Ordering::Relaxed);
    }
}

/// `size` bytes of `space` from `offset`, zero past its end; empty (an error for the frontend)
/// if the window leaves the vhost-user config area altogether.
pub fn config_window(space: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let (offset, size) = (offset as usize, size as usize);
    let limit = vhost::vhost_user::message::VHOST_USER_CONFIG_SIZE as usize;
    if offset.checked_add(size).is_none_or(|end| end > limit) {
        return Vec::new();
    }
    let mut out = vec![0u8; size];
    if offset < space.len() {
        let n = (space.len() - offset).min(size);
        out[..n].copy_from_slice(&space[offset..offset + n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(read_only: bool) -> BlkConfig {
        BlkConfig {
            capacity: (64 << 20) + 100,
            block_size: 4096,
            read_only,
            num_queues: 4,
            queue_size: 128,
            serial: "disk.img".into(),
        }
    }

    fn le32(c: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(c[offset..offset + 4].try_into().unwrap())
    }

    #[test]
    fn features_follow_read_only() {
        let rw = config(false).features();
        let ro = config(true).features();
        assert_eq!(ro & !rw, 1 << VIRTIO_BLK_F_RO);
        for bit in [32, 29, 28, 1, 2, 6, 9, 10, 11, 12, 13, 14, 30] {
            assert_ne!(rw & (1 << bit), 0, "bit {bit}");
        }
        assert_eq!(rw & (1 << VIRTIO_BLK_F_RO), 0);
        let p = BlkConfig::protocol_features();
        assert!(p.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
        assert!(!p.contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD));
    }

    #[test]
    fn config_space_matches_the_virtio_layout() {
        let c = config(false).config_space(true);
        assert_eq!(c.len(), 96);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 131072);
        assert_eq!(le32(&c, 8), SIZE_MAX);
        assert_eq!(le32(&c, 12), 126);
        assert_eq!(le32(&c, 20), 4096);
        assert_eq!(u16::from_le_bytes([c[26], c[27]]), 1);
        assert_eq!(c[32], 1);
        assert_eq!(u16::from_le_bytes([c[34], c[35]]), 4);
        assert_eq!(le32(&c, 36), MAX_DISCARD_SECTORS);
        assert_eq!(le32(&c, 40), MAX_DISCARD_SEG);
        assert_eq!(le32(&c, 44), 8, "alignment in sectors");
        assert_eq!(le32(&c, 48), MAX_DISCARD_SECTORS);
        assert_eq!(le32(&c, 52), MAX_DISCARD_SEG);
        assert_eq!(c[56], 1);
        assert!(c[57..].iter().all(|&b| b == 0));
        assert_eq!(config(false).config_space(false)[WCE_OFFSET], 0);
    }

    #[test]
    fn id_is_padded_or_truncated_to_20_bytes() {
        let mut c = config(false);
        assert_eq!(&c.id()[..9], b"disk.img\0");
        c.serial = "a-very-long-serial-number-indeed".into();
        assert_eq!(&c.id(), b"a-very-long-serial-n");
    }

    #[test]
    fn config_windows_are_zero_padded_and_bounded() {
        let space = [1u8, 2, 3, 4];
        assert_eq!(config_window(&space, 1, 2), vec![2, 3]);
        assert_eq!(config_window(&space, 2, 4), vec![3, 4, 0, 0]);
        assert_eq!(config_window(&space, 100, 2), vec![0, 0]);
        assert!(config_window(&space, 0x1000, 1).is_empty());
        assert!(config_window(&space, u32::MAX, 2).is_empty());
    }
}
