//! An `AF_PACKET` socket bound to one interface and one EtherType: whole Ethernet frames in and
//! out of a link, below the host's IP stack.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{check_name, Error};

/// A raw frame socket on one interface, in the namespace of the thread that opened it. It sees
/// only incoming frames of its EtherType: protocol-bound packet sockets are not handed the
/// frames they (or anyone on the host) send.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    /// Opens a socket on `ifname` for frames of `ethertype`; receives time out after `timeout`
    /// (so a loop can look at a stop flag), `None` blocks.
    pub fn open(ifname: &str, ethertype: u16, timeout: Option<Duration>) -> Result<Self, Error> {
        check_name(ifname)?;
        let err = |e| Error::Packet(ifname.into(), e);
        let cname = CString::new(ifname).map_err(|_| Error::BadName(ifname.into()))?;
        // SAFETY: if_nametoindex reads the NUL-terminated name, which outlives the call.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(Error::NoInterface(ifname.into()));
        }
        let proto = ethertype.to_be();
        // SAFETY: socket takes plain integers; the fd it returns is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: bind reads `size_of::<sockaddr_ll>()` bytes of `addr`, which lives across
        // the call; the fd is ours.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        let on: libc::c_int = 1;
        // Straight to the driver, past the qdisc: a TAP that just got its carrier keeps the
        // no-op qdisc (which drops everything) until the kernel's link watch runs, up to a
        // second later, and the first frames of a run would be lost there.
        // SAFETY: PACKET_QDISC_BYPASS reads one int from `on`, which outlives the call.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        if let Some(t) = timeout {
            let tv = libc::timeval {
                tv_sec: t.as_secs() as libc::time_t,
                tv_usec: t.subsec_micros() as libc::suseconds_t,
            };
            // SAFETY: SO_RCVTIMEO reads one timeval from `tv`, which outlives the call.
            let ret = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::addr_of!(tv).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if ret != 0 {
                return Err(err(io::Error::last_os_error()));
            }
        }
        Ok(PacketSocket {
            fd,
            ifname: ifname.into(),
        })
    }

    /// Asks for a receive buffer of `bytes` (as root past `rmem_max`): a far end that falls
    /// behind a burst drops fewer frames.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let n = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: the option reads one int from `n`, which outlives the call.
            let ret = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    std::ptr::addr_of!(n).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if ret == 0 {
                return Ok(());
            }
        }
        Err(io::Error::last_os_error())
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Sends one whole frame (MACs first, no FCS) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: send reads `frame.len()` bytes of `frame`, which outlives the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short AF_PACKET send",
            )),
            _ => Ok(()),
        }
    }

    /// Receives one frame into `buf`; `Ok(None)` when the timeout passed first. A frame longer
    /// than `buf` is cut to it.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which outlives the call.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }
}
