//! Frame engines without a wire: `reflect` sends every TX frame back on RX with source and
//! destination MAC swapped (latency without a peer), `sink` counts TX frames and drops them.
//!
//! Completions are ready as soon as a request is pushed (or, for a receive, as soon as a
//! frame is there for it), so there is no completion fd.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use iommu::DmaSlice;

use super::header::{self, VnetHdr, HDR_LEN};
use super::tap::offload;
use super::{Dir, EngineStats, FrameCompletion, FrameRequest, NetEngine};

/// Reflected frames waiting for RX buffers; more are dropped, as a full NIC ring would.
const BACKLOG: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopbackMode {
    Reflect,
    Sink,
}

/// See the module documentation.
pub struct Loopback {
    mode: LoopbackMode,
    depth: usize,
    /// Reflected frames (vnet header first) not yet received.
    frames: VecDeque<Vec<u8>>,
    /// Receives waiting for a frame.
    receives: VecDeque<(u64, Vec<DmaSlice>)>,
    done: VecDeque<FrameCompletion>,
    /// What the guest accepts on RX (`offload` flags).
    offloads: u32,
    stats: EngineStats,
}

// SAFETY: the `DmaSlice`s are addresses into memory the caller vouched for (the `push`
// contract); moving them to another thread with the engine changes nothing about that.
unsafe impl Send for Loopback {}

impl Loopback {
    pub fn new(mode: LoopbackMode, depth: usize) -> Self {
        Loopback {
            mode,
            depth: depth.max(1),
            frames: VecDeque::new(),
            receives: VecDeque::new(),
            done: VecDeque::new(),
            offloads: 0,
            stats: EngineStats::default(),
        }
    }

    fn transmit(&mut self, tag: u64, segments: &[DmaSlice]) {
        let len: usize = segments.iter().map(|s| s.len()).sum();
        self.stats.tx_frames += 1;
        self.done.push_back(FrameCompletion {
            tag,
            dir: Dir::Tx,
            result: Ok(len),
        });
        if self.mode == LoopbackMode::Sink {
            return;
        }
        let mut packet = Vec::with_capacity(len);
        for s in segments {
            // SAFETY: the `push` contract keeps every segment valid until its completion is
            // reaped, which has not happened yet.
            packet.extend_from_slice(unsafe { std::slice::from_raw_parts(s.as_ptr(), s.len()) });
        }
        if !self.fit_for_guest(&mut packet) {
            self.stats.unsegmentable += 1;
            return;
        }
        if self.frames.len() >= BACKLOG {
            self.stats.overflow += 1;
            return;
        }
        header::swap_macs(&mut packet);
        self.frames.push_back(packet);
    }

    /// Makes a transmitted frame receivable under the guest's RX offloads: a partial checksum
    /// is finished unless the guest takes partial checksums; a GSO frame the guest cannot take
    /// is refused (`false`). `num_buffers` is the receiver's to set.
    fn fit_for_guest(&self, packet: &mut [u8]) -> bool {
        let Some(hdr) = packet.first_chunk::<HDR_LEN>().map(VnetHdr::parse) else {
            return false;
        };
        if hdr.is_gso() {
            let need = match hdr.gso_type & !header::GSO_ECN {
                1 => offload::TSO4,
                4 => offload::TSO6,
                3 => offload::UFO,
                _ => return false,
            };
            if self.offloads & need == 0 {
                return false;
            }
        }
        if hdr.flags & header::F_NEEDS_CSUM != 0 && self.offloads & offload::CSUM == 0 {
            return header::finish_checksum(packet);
        }
        true
    }

    /// Pairs waiting frames with waiting receives.
    fn deliver(&mut self) {
        while !self.frames.is_empty() && !self.receives.is_empty() {
            let (Some(packet), Some((tag, segments))) =
                (self.frames.pop_front(), self.receives.pop_front())
            else {
                break;
            };
            let mut rest = packet.as_slice();
            for s in &segments {
                let n = rest.len().min(s.len());
                // SAFETY: as in `transmit`; `packet` is our own allocation.
                unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), s.as_ptr(), n) };
                rest = &rest[n..];
            }
            self.stats.rx_frames += 1;
            self.done.push_back(FrameCompletion {
                tag,
                dir: Dir::Rx,
                result: Ok(packet.len()),
            });
        }
    }
}

impl NetEngine for Loopback {
    fn queue_depth(&self) -> usize {
        self.depth
    }

    unsafe fn push(&mut self, request: FrameRequest) -> Result<(), FrameRequest> {
        if self.in_flight() >= self.depth {
            return Err(request);
        }
        match request.dir {
            Dir::Tx => self.transmit(request.tag, &request.segments),
            Dir::Rx => self.receives.push_back((request.tag, request.segments)),
        }
        self.deliver();
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<FrameCompletion>) -> usize {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    fn wait(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn cancel_rx(&mut self) {
        for (tag, _) in self.receives.drain(..) {
            self.done.push_back(FrameCompletion {
                tag,
                dir: Dir::Rx,
                result: Err(libc::ECANCELED),
            });
        }
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.offloads = flags;
        Ok(())
    }

    fn completion_fd(&self) -> Option<RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.receives.len() + self.done.len()
    }

    fn stats(&self) -> EngineStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use iommu::Access;

    use super::*;
    use crate::vhost_user::testing::Mem;

    fn slices(mem: &Mem, bufs: &[(u64, usize)]) -> Vec<DmaSlice> {
        let space = mem.space();
        bufs.iter()
            .map(|&(a, l)| space.translate(a, l, Access::Write).unwrap())
            .collect()
    }

    fn read(mem: &Mem, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        mem.space().read(addr, &mut b).unwrap();
        b
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; HDR_LEN];
        f.extend_from_slice(&[0xd0; 6]);
        f.extend_from_slice(&[0x50; 6]);
        f.extend((0..len - HDR_LEN - 12).map(|i| i as u8));
        f
    }

    fn push(e: &mut Loopback, dir: Dir, tag: u64, segments: Vec<DmaSlice>) {
        // SAFETY: `Mem` outlives the engine in every test.
        unsafe { e.push(FrameRequest { dir, segments, tag }) }.unwrap();
    }

    #[test]
    fn reflect_returns_frames_with_macs_swapped_across_segments() {
        let mem = Mem::new();
        let f = frame(100);
        mem.write(0x1000, &f[..20]);
        mem.write(0x2000, &f[20..]);
        let mut e = Loopback::new(LoopbackMode::Reflect, 8);
        push(
            &mut e,
            Dir::Rx,
            7,
            slices(&mem, &[(0x3000, 30), (0x4000, 200)]),
        );
        push(
            &mut e,
            Dir::Tx,
            1,
            slices(&mem, &[(0x1000, 20), (0x2000, 80)]),
        );
        let mut out = Vec::new();
        assert_eq!(e.reap(&mut out), 2);
        assert!(out.contains(&FrameCompletion {
            tag: 1,
            dir: Dir::Tx,
            result: Ok(100)
        }));
        assert!(out.contains(&FrameCompletion {
            tag: 7,
            dir: Dir::Rx,
            result: Ok(100)
        }));
        let mut got = read(&mem, 0x3000, 30);
        got.extend(read(&mem, 0x4000, 70));
        let mut want = f.clone();
        want[HDR_LEN..HDR_LEN + 6].copy_from_slice(&[0x50; 6]);
        want[HDR_LEN + 6..HDR_LEN + 12].copy_from_slice(&[0xd0; 6]);
        assert_eq!(got, want);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn a_frame_longer_than_the_receive_reports_its_full_length() {
        let mem = Mem::new();
        mem.write(0x1000, &frame(200));
        let mut e = Loopback::new(LoopbackMode::Reflect, 8);
        push(&mut e, Dir::Tx, 1, slices(&mem, &[(0x1000, 200)]));
        push(&mut e, Dir::Rx, 2, slices(&mem, &[(0x3000, 64)]));
        let mut out = Vec::new();
        e.reap(&mut out);
        assert_eq!(out[1].result, Ok(200), "more than the 64 bytes given");
        assert_eq!(
            read(&mem, 0x3040, 1),
            [0],
            "nothing written past the buffer"
        );
    }

    #[test]
    fn sink_drops_and_receives_wait_until_cancelled() {
        let mem = Mem::new();
        mem.write(0x1000, &frame(60));
        let mut e = Loopback::new(LoopbackMode::Sink, 8);
        push(&mut e, Dir::Rx, 9, slices(&mem, &[(0x3000, 1500)]));
        push(&mut e, Dir::Tx, 1, slices(&mem, &[(0x1000, 60)]));
        let mut out = Vec::new();
        e.reap(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dir, Dir::Tx);
        assert_eq!(e.in_flight(), 1);
        e.cancel_rx();
        out.clear();
        e.reap(&mut out);
        assert_eq!(out[0].result, Err(libc::ECANCELED));
        assert_eq!(e.stats().tx_frames, 1);
        assert_eq!(e.stats().rx_frames, 0);
    }

    #[test]
    fn reflect_backlog_overflows_into_a_counter() {
        let mem = Mem::new();
        mem.write(0x1000, &frame(60));
        let mut e = Loopback::new(LoopbackMode::Reflect, 1);
        let mut out = Vec::new();
        for i in 0..BACKLOG as u64 + 3 {
            push(&mut e, Dir::Tx, i, slices(&mem, &[(0x1000, 60)]));
            e.reap(&mut out);
        }
        assert_eq!(e.stats().overflow, 3);
        assert_eq!(e.frames.len(), BACKLOG);
        // Depth counts only what the caller has not reaped.
        push(&mut e, Dir::Rx, 1, slices(&mem, &[(0x3000, 100)]));
        let err = unsafe {
            // SAFETY: as in `push`.
            e.push(FrameRequest {
                dir: Dir::Rx,
                segments: slices(&mem, &[(0x3000, 100)]),
                tag: 2,
            })
        };
        assert!(err.is_err(), "depth 1 is full until reaped");
    }

    #[test]
    fn offloads_decide_what_reflect_can_return() {
        let mem = Mem::new();
        let gso = VnetHdr {
            gso_type: 1,
            gso_size: 1448,
            ..VnetHdr::default()
        };
        let mut f = frame(100);
        f[..HDR_LEN].copy_from_slice(&gso.to_bytes());
        mem.write(0x1000, &f);
        let mut e = Loopback::new(LoopbackMode::Reflect, 8);
        push(&mut e, Dir::Tx, 1, slices(&mem, &[(0x1000, 100)]));
        assert_eq!(e.stats().unsegmentable, 1);
        e.set_offloads(offload::CSUM | offload::TSO4).unwrap();
        push(&mut e, Dir::Tx, 2, slices(&mem, &[(0x1000, 100)]));
        assert_eq!(e.frames.len(), 1);

        // A partial checksum is finished for a guest without GUEST_CSUM.
        e.set_offloads(0).unwrap();
        let csum = VnetHdr {
            flags: header::F_NEEDS_CSUM,
            csum_start: 14,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        f[..HDR_LEN].copy_from_slice(&csum.to_bytes());
        mem.write(0x1000, &f);
        push(&mut e, Dir::Tx, 3, slices(&mem, &[(0x1000, 100)]));
        let back = e.frames.back().unwrap();
        assert_eq!(back[0] & header::F_NEEDS_CSUM, 0);
        let stored = u16::from_be_bytes([back[HDR_LEN + 20], back[HDR_LEN + 21]]);
        assert_ne!(
            stored,
            u16::from_be_bytes([f[HDR_LEN + 20], f[HDR_LEN + 21]])
        );
    }
}
