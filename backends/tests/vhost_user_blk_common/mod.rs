//! The test side of vhost-user-blk: runs the daemon binary, plays the frontend (vhost's
//! `Frontend` over the real socket) and the guest driver (a split ring laid out by hand in
//! memfd-backed guest memory shared with the daemon).

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserInflight, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const BIN: &str = env!("CARGO_BIN_EXE_iopath-vhost-user-blk");
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// What a status byte holds until the device writes it.
pub const S_UNTOUCHED: u8 = 0xff;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Guest RAM: 4 MiB of one memfd as two adjacent regions (so buffers can straddle them).
pub const RAM_SIZE: u64 = 4 << 20;
pub const REGION_SPLIT: u64 = 2 << 20;
/// Data buffers are handed out from here to the region split.
const BUFFERS: u64 = 0x10_0000;

/// The daemon process; killed if a test leaves it running.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon listening on `socket` and waits for the socket to appear.
    pub fn spawn(socket: &Path, args: &[&str]) -> Daemon {
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        let mut d = Daemon {
            child: Some(child),
            socket: socket.into(),
        };
        let deadline = Instant::now() + TIMEOUT;
        while !socket.exists() {
            if let Some(status) = d.child().try_wait().unwrap() {
                panic!("daemon exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "no socket at {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Starts a `--client` daemon that connects to `socket`.
    pub fn spawn_client(socket: &Path, args: &[&str]) -> Daemon {
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(socket)
            .arg("--client")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        Daemon {
            child: Some(child),
            socket: socket.into(),
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon already reaped")
    }

    pub fn pid(&mut self) -> u32 {
        self.child().id()
    }

    pub fn running(&mut self) -> bool {
        self.child().try_wait().unwrap().is_none()
    }

    pub fn signal(&mut self, signal: i32) {
        let pid = self.child().id() as libc::pid_t;
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the daemon to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the daemon to completion (for argument errors).
pub fn run_to_exit(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the daemon")
}

/// A backing file of `size` bytes filled with `fill`.
pub fn disk(dir: &Path, size: usize, fill: u8) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::write(&path, vec![fill; size]).unwrap();
    path
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Guest memory shared with the daemon.
pub struct GuestRam {
    pub mem: GuestMemoryMmap,
    _file: File,
}

impl GuestRam {
    pub fn new() -> GuestRam {
        // SAFETY: plain FFI call with a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"iopath-test-ram".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(RAM_SIZE).unwrap();
        let ranges = [
            (
                GuestAddress(0),
                REGION_SPLIT as usize,
                Some(FileOffset::new(file.try_clone().unwrap(), 0)),
            ),
            (
                GuestAddress(REGION_SPLIT),
                (RAM_SIZE - REGION_SPLIT) as usize,
                Some(FileOffset::new(file.try_clone().unwrap(), REGION_SPLIT)),
            ),
        ];
        let mem = GuestMemoryMmap::from_ranges_with_files(&ranges).unwrap();
        GuestRam { mem, _file: file }
    }

    pub fn regions(&self) -> Vec<VhostUserMemoryRegionInfo> {
        self.mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).unwrap())
            .collect()
    }

    /// The frontend's (our) virtual address of `gpa`.
    pub fn va(&self, gpa: u64) -> u64 {
        let r = self.mem.find_region(GuestAddress(gpa)).unwrap();
        r.as_ptr() as u64 + (gpa - r.start_addr().0)
    }

    pub fn write(&self, gpa: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(gpa)).unwrap();
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
        b
    }

    pub fn load_u16(&self, gpa: u64) -> u16 {
        u16::from_le(self.mem.load(GuestAddress(gpa), Ordering::Acquire).unwrap())
    }

    pub fn store_u16(&self, gpa: u64, v: u16) {
        self.mem
            .store(v.to_le(), GuestAddress(gpa), Ordering::Release)
            .unwrap();
    }

    pub fn put_desc(&self, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.write(table + u64::from(index) * 16, &d);
    }
}

pub fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

pub fn segment(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    s
}

/// One buffer of a chain: guest address, length, device-writable.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

pub fn r(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: false,
    }
}

pub fn w(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: true,
    }
}

/// One split virtqueue, driver side.
pub struct Vq {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub kick: EventFd,
    pub call: EventFd,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
    /// Call eventfd signals observed.
    pub calls: u64,
}

impl Vq {
    fn new(index: usize, size: u16) -> Vq {
        let desc = 0x1_0000 * (index as u64 + 1);
        Vq {
            size,
            desc,
            avail: desc + 16 * u64::from(size),
            used: desc + 0x8000,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
            calls: 0,
        }
    }
}

/// A completed chain: head and used length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub head: u16,
    pub len: u32,
}

/// A connected frontend with guest memory and set-up queues.
pub struct Conn {
    pub fe: Frontend,
    pub ram: GuestRam,
    pub vqs: Vec<Vq>,
    pub features: u64,
    pub protocol: VhostUserProtocolFeatures,
    /// The inflight region the daemon handed out (or was handed back), if negotiated.
    pub inflight: Option<(File, VhostUserInflight)>,
    next_buf: u64,
}

/// What a connection does about the inflight region (INFLIGHT_SHMFD).
pub enum Inflight {
    /// Not negotiated.
    Off,
    /// A fresh region from GET_INFLIGHT_FD, handed back with SET_INFLIGHT_FD.
    New,
    /// A region from an earlier connection, handed back as it is (QEMU after a backend crash).
    Reuse(File, VhostUserInflight),
}

/// What a test wants negotiated.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub queues: usize,
    pub queue_size: u16,
    pub event_idx: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            queues: 1,
            queue_size: 256,
            event_idx: true,
        }
    }
}

impl Conn {
    pub fn connect(socket: &Path, setup: Setup) -> Conn {
        let fe = Frontend::connect(socket, setup.queues as u64).expect("connect");
        Self::set_up(fe, setup)
    }

    pub fn from_stream(stream: UnixStream, setup: Setup) -> Conn {
        Self::set_up(Frontend::from_stream(stream, setup.queues as u64), setup)
    }

    fn set_up(fe: Frontend, setup: Setup) -> Conn {
        let vqs = (0..setup.queues)
            .map(|i| Vq::new(i, setup.queue_size))
            .collect();
        Self::set_up_with(fe, setup, GuestRam::new(), vqs, Inflight::Off)
    }

    /// A new frontend connection (to a restarted daemon, say) for the same guest: same memory,
    /// the driver's rings as they are, each ring's base its used index (what QEMU sends when
    /// the old backend could not tell it: `virtio_queue_restore_last_avail_idx`).
    pub fn resume(
        ram: GuestRam,
        vqs: Vec<Vq>,
        stream: UnixStream,
        setup: Setup,
        inflight: Inflight,
    ) -> Conn {
        Self::set_up_with(
            Frontend::from_stream(stream, setup.queues as u64),
            setup,
            ram,
            vqs,
            inflight,
        )
    }

    /// A connection that negotiates INFLIGHT_SHMFD as `inflight` says, on fresh guest memory.
    pub fn with_inflight(stream: UnixStream, setup: Setup, inflight: Inflight) -> Conn {
        let vqs = (0..setup.queues)
            .map(|i| Vq::new(i, setup.queue_size))
            .collect();
        Self::set_up_with(
            Frontend::from_stream(stream, setup.queues as u64),
            setup,
            GuestRam::new(),
            vqs,
            inflight,
        )
    }

    fn set_up_with(
        mut fe: Frontend,
        setup: Setup,
        ram: GuestRam,
        vqs: Vec<Vq>,
        inflight: Inflight,
    ) -> Conn {
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        let protocol = fe.get_protocol_features().unwrap();
        let mut wanted_protocol = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        if !matches!(inflight, Inflight::Off) {
            assert!(protocol.contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD));
            wanted_protocol |= VhostUserProtocolFeatures::INFLIGHT_SHMFD;
        }
        fe.set_protocol_features(protocol & wanted_protocol)
            .unwrap();
        let nq = fe.get_queue_num().unwrap();
        assert!(nq as usize >= setup.queues, "daemon has {nq} queues");
        let mut features = offered;
        if !setup.event_idx {
            features &= !VIRTIO_RING_F_EVENT_IDX;
        }
        fe.set_features(features).unwrap();
        // As QEMU's vhost-user-blk: the region is set before the rings start.
        let inflight = match inflight {
            Inflight::Off => None,
            Inflight::New => {
                let ask = VhostUserInflight {
                    num_queues: setup.queues as u16,
                    queue_size: setup.queue_size,
                    ..Default::default()
                };
                Some(fe.get_inflight_fd(&ask).unwrap()).map(|(info, file)| (file, info))
            }
            Inflight::Reuse(file, info) => Some((file, info)),
        };
        if let Some((file, info)) = &inflight {
            fe.set_inflight_fd(info, file.as_raw_fd()).unwrap();
        }

        fe.set_mem_table(&ram.regions()).unwrap();
        for (i, vq) in vqs.iter().enumerate() {
            let base = ram.load_u16(vq.used + 2);
            let config = VringConfigData {
                queue_max_size: setup.queue_size,
                queue_size: setup.queue_size,
                flags: 0,
                desc_table_addr: ram.va(vq.desc),
                used_ring_addr: ram.va(vq.used),
                avail_ring_addr: ram.va(vq.avail),
                log_addr: None,
            };
            fe.set_vring_num(i, setup.queue_size).unwrap();
            fe.set_vring_addr(i, &config).unwrap();
            fe.set_vring_base(i, base).unwrap();
            fe.set_vring_call(i, &vq.call).unwrap();
            fe.set_vring_kick(i, &vq.kick).unwrap();
            fe.set_vring_enable(i, true).unwrap();
        }
        Conn {
            fe,
            ram,
            vqs,
            features,
            protocol: protocol & wanted_protocol,
            inflight,
            next_buf: BUFFERS,
        }
    }

    /// A fresh guest buffer (16-byte aligned; the allocator wraps, tests keep few alive).
    pub fn buf(&mut self, len: u64) -> u64 {
        let len = len.max(1).div_ceil(16) * 16;
        if self.next_buf + len > REGION_SPLIT {
            self.next_buf = BUFFERS;
        }
        let at = self.next_buf;
        self.next_buf += len;
        at
    }

    /// `size` bytes of config space from `offset`.
    pub fn config(&mut self, offset: u32, size: u32) -> Vec<u8> {
        let (_, data) = self
            .fe
            .get_config(
                offset,
                size,
                VhostUserConfigFlags::empty(),
                &vec![0u8; size as usize],
            )
            .unwrap();
        data
    }

    /// Writes `bufs` as one chain (without publishing it); returns its head.
    pub fn write_chain(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let vq = &mut self.vqs[q];
        let head = vq.next_desc;
        for (i, b) in bufs.iter().enumerate() {
            let index = (head + i as u16) % vq.size;
            let mut flags = if b.writable { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.ram
                .put_desc(vq.desc, index, b.addr, b.len, flags, (index + 1) % vq.size);
        }
        vq.next_desc = (head + bufs.len().max(1) as u16) % vq.size;
        head
    }

    /// Writes `bufs` as an indirect table at `table` and a direct descriptor naming it.
    pub fn write_indirect(&mut self, q: usize, table: u64, bufs: &[Buf]) -> u16 {
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.writable { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.ram
                .put_desc(table, i as u16, b.addr, b.len, flags, i as u16 + 1);
        }
        self.raw_desc(q, table, 16 * bufs.len() as u32, F_INDIRECT, 0)
    }

    /// One raw descriptor in the next slot; returns its index.
    pub fn raw_desc(&mut self, q: usize, addr: u64, len: u32, flags: u16, next: u16) -> u16 {
        let vq = &mut self.vqs[q];
        let index = vq.next_desc;
        self.ram.put_desc(vq.desc, index, addr, len, flags, next);
        vq.next_desc = (index + 1) % vq.size;
        index
    }

    /// Makes the chain at `head` available and asks to be signalled for the next used entry.
    pub fn publish(&mut self, q: usize, head: u16) {
        let vq = &mut self.vqs[q];
        let slot = u64::from(vq.avail_idx % vq.size);
        self.ram.store_u16(vq.avail + 4 + 2 * slot, head);
        // used_event (EVENT_IDX): signal once entry `used_seen` is written.
        self.ram
            .store_u16(vq.avail + 4 + 2 * u64::from(vq.size), vq.used_seen);
        vq.avail_idx = vq.avail_idx.wrapping_add(1);
        self.ram.store_u16(vq.avail + 2, vq.avail_idx);
    }

    pub fn kick(&self, q: usize) {
        self.vqs[q].kick.write(1).unwrap();
    }

    /// Chains published and not yet seen in the used ring.
    pub fn outstanding(&self, q: usize) -> u16 {
        let vq = &self.vqs[q];
        vq.avail_idx.wrapping_sub(vq.used_seen)
    }

    /// New used entries, without waiting.
    pub fn poll_used(&mut self, q: usize) -> Vec<Used> {
        let vq = &mut self.vqs[q];
        let idx = self.ram.load_u16(vq.used + 2);
        let mut out = Vec::new();
        while vq.used_seen != idx {
            let at = vq.used + 4 + 8 * u64::from(vq.used_seen % vq.size);
            let e = self.ram.read(at, 8);
            out.push(Used {
                head: u32::from_le_bytes(e[0..4].try_into().unwrap()) as u16,
                len: u32::from_le_bytes(e[4..8].try_into().unwrap()),
            });
            vq.used_seen = vq.used_seen.wrapping_add(1);
        }
        out
    }

    /// Waits (on the call eventfd) until `n` more used entries arrived or `timeout` passed.
    pub fn wait_used_for(&mut self, q: usize, n: usize, timeout: Duration) -> Vec<Used> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            out.extend(self.poll_used(q));
            if out.len() >= n {
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            let mut pfd = libc::pollfd {
                fd: self.vqs[q].call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Re-check the ring every 50 ms even without a signal: a missing signal shows up
            // as a count mismatch, not as a hang.
            let ms = left.as_millis().min(50) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 && self.vqs[q].call.read().is_ok() {
                self.vqs[q].calls += 1;
            }
        }
    }

    /// Whether queue `q` has signalled its call eventfd, now or within the timeout (the used
    /// ring may be seen before the signal arrives).
    pub fn signalled(&mut self, q: usize) -> bool {
        if self.vqs[q].calls > 0 {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd: self.vqs[q].call.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, TIMEOUT.as_millis() as i32) } > 0
            && self.vqs[q].call.read().is_ok()
        {
            self.vqs[q].calls += 1;
        }
        self.vqs[q].calls > 0
    }

    /// Waits for exactly `n` used entries (panics on timeout).
    pub fn wait_used(&mut self, q: usize, n: usize) -> Vec<Used> {
        let got = self.wait_used_for(q, n, TIMEOUT);
        assert_eq!(got.len(), n, "used entries {got:?}");
        got
    }

    /// Publishes `bufs`, kicks, waits for the one completion and checks it names the chain.
    pub fn submit(&mut self, q: usize, bufs: &[Buf]) -> u32 {
        let head = self.write_chain(q, bufs);
        self.publish(q, head);
        self.kick(q);
        let used = self.wait_used(q, 1);
        assert_eq!(used[0].head, head);
        used[0].len
    }

    /// A request with a header, `data` buffers and a status byte; returns (status, used len).
    pub fn request(&mut self, q: usize, kind: u32, sector: u64, data: &[Buf]) -> (u8, u32) {
        let h = self.buf(16);
        self.ram.write(h, &header(kind, sector));
        let s = self.buf(1);
        self.ram.write(s, &[S_UNTOUCHED]);
        let mut bufs = vec![r(h, 16)];
        bufs.extend_from_slice(data);
        bufs.push(w(s, 1));
        let len = self.submit(q, &bufs);
        (self.ram.read(s, 1)[0], len)
    }

    pub fn write(&mut self, q: usize, sector: u64, data: &[u8]) -> (u8, u32) {
        let d = self.buf(data.len() as u64);
        self.ram.write(d, data);
        self.request(q, T_OUT, sector, &[r(d, data.len() as u32)])
    }

    pub fn read(&mut self, q: usize, sector: u64, len: usize) -> (u8, u32, Vec<u8>) {
        let d = self.buf(len as u64);
        self.ram.write(d, &vec![0x5a; len]);
        let (status, used) = self.request(q, T_IN, sector, &[w(d, len as u32)]);
        (status, used, self.ram.read(d, len))
    }

    /// Discard or write-zeroes with (sector, sectors, flags) segments.
    pub fn ranges(&mut self, q: usize, kind: u32, segments: &[(u64, u32, u32)]) -> (u8, u32) {
        let d = self.buf(16 * segments.len() as u64);
        for (i, &(sector, n, flags)) in segments.iter().enumerate() {
            self.ram
                .write(d + 16 * i as u64, &segment(sector, n, flags));
        }
        self.request(q, kind, 0, &[r(d, 16 * segments.len() as u32)])
    }
}

/// The file's bytes at `offset`.
pub fn file_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let all = std::fs::read(path).unwrap();
    all[offset as usize..offset as usize + len].to_vec()
}

pub fn features_include(features: u64, bits: &[u64]) -> bool {
    bits.iter().all(|b| features & b != 0)
}

pub fn protocol_bit() -> u64 {
    VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}
