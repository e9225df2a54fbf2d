//! The bench guest drives the emulated e1000 under /dev/kvm: round trips through the VMM's
//! reflector and through a TAP device with an AF_PACKET reflector on the host side, and a TX
//! run; every frame must come back intact.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{bench_vm_config, kvm_or_skip};
use iopath_mailbox::net::{self, NetDevice, NetJob, NetResults, NetWorkload, ETHERTYPE};
use iopath_mailbox::{Job, JobKind, Status};
use vmm::bench_vm::{self, BenchRun, BenchVmConfig};
use vmm::net::{NetBackend, NetConfig, NetIface, DEFAULT_MAC};

const SEED: u64 = 0x0e10_00aa;

fn net_job(workload: NetWorkload, frame_bytes: u32, depth: u32, ops: u64) -> Job {
    Job {
        kind: JobKind::Net as u32,
        seed: SEED,
        net: NetJob {
            device: NetDevice::E1000 as u32,
            workload: workload as u32,
            frame_bytes,
            depth,
            ops,
            duration_ms: 0,
            dst_mac: 0,
            // Generous: the machine is loaded, and a late frame is not a lost one.
            timeout_ms: 2_000,
        },
        ..Job::default()
    }
}

fn run(job: Job, backend: NetBackend) -> BenchRun {
    let run = bench_vm::run(BenchVmConfig {
        nets: vec![NetConfig {
            backend,
            iface: NetIface::E1000,
            mac: None,
        }],
        ..bench_vm_config(job)
    })
    .expect("bench guest run");
    assert_eq!(
        run.mailbox.status,
        Status::Done as u32,
        "guest failed: {}",
        run.console
    );
    run
}

fn assert_all_back(res: &NetResults, ops: u64, console: &str) {
    assert_eq!(res.sent, ops, "{console}");
    assert_eq!(res.received, res.sent, "{console}");
    assert_eq!((res.bad, res.lost), (0, 0), "{console}");
    assert_eq!(res.mac, net::mac_to_u64(DEFAULT_MAC));
    assert_eq!(res.latency.count(), ops);
}

#[test]
fn round_trips_through_the_reflector_come_back_intact() {
    if !kvm_or_skip() {
        return;
    }
    for (frame, depth) in [(64, 1), (64, 8), (1514, 1), (1514, 8)] {
        let run = run(
            net_job(NetWorkload::RoundTrip, frame, depth, 2000),
            NetBackend::Reflect,
        );
        assert_all_back(&run.mailbox.net, 2000, &run.console);
        assert_eq!(run.mailbox.net.foreign, 0);
        assert_eq!(run.mailbox.net.bytes, 2000 * u64::from(frame));
        // At least a TDT and an RDT write per frame at depth 1.
        if depth == 1 {
            assert!(
                run.disk_exits_measured[0] >= 2 * 2000,
                "{:?}",
                run.disk_exits
            );
        }
    }
}

#[test]
fn a_tx_run_sends_every_frame() {
    if !kvm_or_skip() {
        return;
    }
    let ops = 5000;
    let run = run(net_job(NetWorkload::Tx, 64, 32, ops), NetBackend::Reflect);
    let res = run.mailbox.net;
    assert_eq!(res.sent, ops, "{}", run.console);
    assert_eq!(res.bad, 0);
    // Reflections the NIC had no RX buffer for are dropped by the device, never damaged.
    assert!(res.received > 0 && res.received <= ops, "{}", run.console);
    // One doorbell per batch of at most 32 frames, at least.
    assert!(run.disk_exits_measured[0] >= ops / 32);
}

/// An AF_PACKET socket on `ifname` that sends every frame of our EtherType back, MACs swapped,
/// until `stop`.
fn host_reflector(ifname: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let proto = ETHERTYPE.to_be();
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {ifname}");
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval, passed with its size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    std::thread::spawn(move || {
        let mut reflected = 0;
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: all-zero is a valid sockaddr_ll; recvfrom fills at most its size.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are valid for the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            // Our own reflections show up as outgoing: skip them.
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let frame = &mut buf[..n as usize];
            net::reflect(frame);
            // SAFETY: `frame` is valid for its length; `addr` names the interface.
            let sent = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    &addr as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent == n {
                reflected += 1;
            }
        }
        reflected
    })
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

#[test]
fn round_trips_through_a_tap_and_a_host_reflector() {
    if !kvm_or_skip() {
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: /dev/net/tun is absent on this host");
        return;
    }
    // A network namespace of this test's own thread: the TAP, the socket and the `ip` calls
    // stay out of the host's view and other tests'.
    std::thread::spawn(|| {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let tap = "e1000t0";
        ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        ip(&["link", "set", "dev", tap, "up"]);
        let stop = Arc::new(AtomicBool::new(false));
        let reflector = host_reflector(tap, stop.clone());
        let ops = 2000;
        let run = run(
            net_job(NetWorkload::RoundTrip, 1514, 4, ops),
            NetBackend::Tap(tap.into()),
        );
        stop.store(true, Ordering::Relaxed);
        let reflected = reflector.join().unwrap();
        assert_all_back(&run.mailbox.net, ops, &run.console);
        assert_eq!(reflected, ops);
    })
    .join()
    .expect("TAP test thread");
}
