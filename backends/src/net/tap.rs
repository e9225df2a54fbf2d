//! A TAP device opened through `/dev/net/tun`: Ethernet frames in and out of the host stack.
//!
//! Every fd is non-blocking so a queue thread can poll it, or hand it to io_uring, without
//! stalling. With `vnet_hdr` every frame carries a 12-byte `virtio_net_hdr_v1` in front (the
//! VERSION_1 layout), which is what lets checksum and segmentation offloads pass through.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of `virtio_net_hdr_v1` (`virtio_net_hdr_mrg_rxbuf` with `num_buffers`), the header
/// every VERSION_1 frame carries.
pub const VNET_HDR_LEN: usize = 12;

/// Offload flags for [`Tap::set_offloads`] (the kernel's `TUN_F_*`).
pub mod offload {
    /// The reader accepts frames with a partial checksum.
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    pub const TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
    pub const UFO: u32 = libc::TUN_F_UFO;
}

const TUN_PATH: &str = "/dev/net/tun";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a TAP device needs at least one queue")]
    NoQueues,
    #[error("interface name {0:?} is longer than {max} bytes", max = libc::IFNAMSIZ - 1)]
    NameTooLong(String),
    #[error("interface name {0:?} contains a NUL byte")]
    NameNul(String),
    #[error("cannot open {TUN_PATH}")]
    OpenTun(#[source] io::Error),
    #[error("cannot attach queue {queue} to TAP device {name:?}")]
    Attach {
        name: String,
        queue: u16,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the vnet header size of TAP device {0:?}")]
    VnetHdrSize(String, #[source] io::Error),
    #[error("cannot set offloads {flags:#x} on TAP device {name:?}")]
    Offload {
        name: String,
        flags: u32,
        #[source]
        source: io::Error,
    },
}

/// One queue of a TAP device. Dropping every queue of a non-persistent device removes it.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (or creates) TAP device `name` with `queues` fds. An empty name, or one with
    /// `%d`, lets the kernel choose; [`Tap::name`] tells the result. More than one queue sets
    /// `IFF_MULTI_QUEUE`, one fd per queue.
    pub fn open(name: &str, queues: u16, vnet_hdr: bool) -> Result<Vec<Tap>, Error> {
        if queues == 0 {
            return Err(Error::NoQueues);
        }
        if name.len() >= libc::IFNAMSIZ {
            return Err(Error::NameTooLong(name.to_owned()));
        }
        if name.as_bytes().contains(&0) {
            return Err(Error::NameNul(name.to_owned()));
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let mut taps = Vec::with_capacity(usize::from(queues));
        let mut name = name.to_owned();
        for queue in 0..queues {
            let tap = Self::attach(&name, flags, queue)?;
            if vnet_hdr {
                tap.set_vnet_hdr_len()?;
            }
            // The kernel may have chosen the name: later queues must join that device.
            name.clone_from(&tap.name);
            taps.push(tap);
        }
        Ok(taps)
    }

    fn attach(name: &str, flags: libc::c_int, queue: u16) -> Result<Tap, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(Error::OpenTun)?;
        let mut req = IfReq::new(name);
        req.set_flags(flags);
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `req` is and which outlives the
        // call; the fd is ours and open.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::Attach {
                name: name.to_owned(),
                queue,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: req.name(),
        })
    }

    fn set_vnet_hdr_len(&self) -> Result<(), Error> {
        let len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which points at `len`
        // for the duration of the call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        if ret < 0 {
            return Err(Error::VnetHdrSize(
                self.name.clone(),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Tells the kernel which offloads the reader of this device accepts ([`offload`] flags):
    /// with none, every frame read arrives fully checksummed and segmented. Applies to the
    /// whole device, whichever queue it is called on.
    pub fn set_offloads(&self, flags: u32) -> Result<(), Error> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long); no memory is
        // passed.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(Error::Offload {
                name: self.name.clone(),
                flags,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Another fd for the same queue (a `dup`: flags such as non-blocking are shared).
    pub fn try_clone(&self) -> io::Result<Tap> {
        Ok(Tap {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }

    /// Switches the fd between non-blocking (the default) and blocking.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL take and return plain integers; the fd is ours and open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes one frame (with its vnet header first if the device has one). Never blocks.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is a valid readable buffer of `frame.len()` bytes for the call.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Reads one frame into `buf`; `WouldBlock` when none is waiting. A frame longer than
    /// `buf` is truncated by the kernel.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes for the call.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// `struct ifreq` with the name and flags members the TUN ioctls use.
struct IfReq(libc::ifreq);

impl IfReq {
    /// `name` must be shorter than `IFNAMSIZ` and free of NUL bytes (checked by the caller).
    fn new(name: &str) -> Self {
        // SAFETY: `ifreq` is plain old data (a byte array and a union of integers); all zeroes
        // is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        IfReq(req)
    }

    fn set_flags(&mut self, flags: libc::c_int) {
        // The kernel reads `ifr_flags` as a short; the IFF_* values used here fit.
        self.0.ifr_ifru.ifru_flags = flags as libc::c_short;
    }

    fn as_mut_ptr(&mut self) -> *mut libc::ifreq {
        &mut self.0
    }

    fn name(&self) -> String {
        // SAFETY: `ifr_name` is `IFNAMSIZ` bytes; `new` leaves the last one 0 and the kernel
        // writes a NUL-terminated name of at most `IFNAMSIZ - 1` bytes.
        let name = unsafe { CStr::from_ptr(self.0.ifr_name.as_ptr()) };
        name.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    /// Runs `f` on a thread of its own in a fresh network namespace, so the TAP devices it
    /// creates and the addresses it sets are invisible to the host and to other tests.
    fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
        std::thread::spawn(move || {
            // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "unshare: {}", io::Error::last_os_error());
            f();
        })
        .join()
        .expect("test thread panicked");
    }

    fn tun_or_skip() -> bool {
        if Path::new(TUN_PATH).exists() {
            return true;
        }
        eprintln!("skipped: {TUN_PATH} absent");
        false
    }

    fn ip(args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("run ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    const TAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const TAP_IP: [u8; 4] = [10, 77, 0, 1];
    const PEER_IP: [u8; 4] = [10, 77, 0, 2];

    /// Brings `name` up with address 10.77.0.1/24 and MAC 02:00:00:00:00:01.
    fn configure(name: &str) {
        ip(&["link", "set", "dev", name, "address", "02:00:00:00:00:01"]);
        ip(&["addr", "add", "10.77.0.1/24", "dev", name]);
        ip(&["link", "set", "dev", name, "up"]);
    }

    /// An ARP request for the TAP's address from a peer on the TAP's wire.
    fn arp_request() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&PEER_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&TAP_IP);
        f
    }

    fn is_arp_reply(frame: &[u8]) -> bool {
        frame.len() >= 42
            && frame[0..6] == PEER_MAC
            && frame[6..12] == TAP_MAC
            && frame[12..14] == [0x08, 0x06]
            && frame[20..22] == [0, 2]
            && frame[28..32] == TAP_IP
            && frame[38..42] == PEER_IP
    }

    /// Reads frames (skipping the host's own chatter, e.g. IPv6 router solicitations) until
    /// one satisfies `want`; returns it, or panics after a generous deadline.
    fn recv_matching(tap: &Tap, skip: usize, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 2048];
        loop {
            match tap.recv(&mut buf) {
                Ok(n) if want(&buf[skip..n]) => return buf[..n].to_vec(),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no matching frame on the TAP");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(matches!(Tap::open("t", 0, false), Err(Error::NoQueues)));
        assert!(matches!(
            Tap::open("a-name-of-sixteen", 1, false),
            Err(Error::NameTooLong(_))
        ));
        assert!(matches!(
            Tap::open("a\0b", 1, false),
            Err(Error::NameNul(_))
        ));
    }

    #[test]
    fn empty_device_reads_would_block() {
        if !tun_or_skip() {
            return;
        }
        in_netns(|| {
            let taps = Tap::open("iopt%d", 1, false).expect("open");
            assert!(taps[0].name().starts_with("iopt"), "{}", taps[0].name());
            let mut buf = [0u8; 64];
            let err = taps[0].recv(&mut buf).expect_err("nothing to read");
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        });
    }

    #[test]
    fn frames_cross_between_fd_and_host_stack() {
        if !tun_or_skip() {
            return;
        }
        in_netns(|| {
            let taps = Tap::open("ioptap0", 1, false).expect("open");
            let tap = &taps[0];
            assert_eq!(tap.name(), "ioptap0");
            configure(tap.name());
            let request = arp_request();
            assert_eq!(tap.send(&request).expect("send"), request.len());
            // The host stack answered the frame we wrote: both directions work.
            recv_matching(tap, 0, is_arp_reply);
        });
    }

    #[test]
    fn vnet_header_travels_in_front_of_each_frame() {
        if !tun_or_skip() {
            return;
        }
        in_netns(|| {
            let taps = Tap::open("ioptap1", 1, true).expect("open");
            let tap = &taps[0];
            tap.set_offloads(offload::CSUM | offload::TSO4 | offload::TSO6)
                .expect("offloads");
            configure(tap.name());
            let mut frame = vec![0u8; VNET_HDR_LEN];
            frame.extend_from_slice(&arp_request());
            assert_eq!(tap.send(&frame).expect("send"), frame.len());
            let reply = recv_matching(tap, VNET_HDR_LEN, is_arp_reply);
            // An ARP reply needs no offload: flags and gso_type are 0.
            assert_eq!(reply[0], 0, "flags");
            assert_eq!(reply[1], 0, "gso_type");
        });
    }

    #[test]
    fn multi_queue_fds_join_one_device() {
        if !tun_or_skip() {
            return;
        }
        in_netns(|| {
            let taps = Tap::open("iopmq%d", 3, true).expect("open");
            assert_eq!(taps.len(), 3);
            assert!(taps.iter().all(|t| t.name() == taps[0].name()));
            let fds: std::collections::HashSet<_> = taps.iter().map(|t| t.as_raw_fd()).collect();
            assert_eq!(fds.len(), 3);
            configure(taps[0].name());
            // A frame written on any queue reaches the stack; the reply comes back on one of
            // the queues (the kernel picks by flow hash).
            assert!(taps[2]
                .send(&{
                    let mut f = vec![0u8; VNET_HDR_LEN];
                    f.extend_from_slice(&arp_request());
                    f
                })
                .is_ok());
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = vec![0u8; 2048];
            'wait: loop {
                for tap in &taps {
                    if let Ok(n) = tap.recv(&mut buf) {
                        if is_arp_reply(&buf[VNET_HDR_LEN..n]) {
                            break 'wait;
                        }
                    }
                }
                assert!(Instant::now() < deadline, "no reply on any queue");
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }

    #[test]
    fn unknown_offload_flags_are_refused() {
        if !tun_or_skip() {
            return;
        }
        in_netns(|| {
            let taps = Tap::open("ioptap2", 1, true).expect("open");
            let err = taps[0].set_offloads(1 << 31).expect_err("must refuse");
            assert!(
                matches!(err, Error::Offload { flags, .. } if flags == 1 << 31),
                "{err}"
            );
            taps[0].set_offloads(0).expect("no offloads is always fine");
        });
    }
}
