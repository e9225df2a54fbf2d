//! The vhost-user-net daemon against a real frontend (vhost's `Frontend`) over a Unix socket,
//! with a split ring laid out by hand in memfd-backed guest memory: reflect and sink modes,
//! malformed chains, and (when /dev/net/tun exists) a TAP device in a network namespace.

#[path = "vhost_user_blk_common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{r, w, Conn, Setup};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

const BIN: &str = env!("CARGO_BIN_EXE_iopath-vhost-user-net");
const HDR: usize = 12;
const RX: usize = 0;
const TX: usize = 1;

/// The daemon process; terminated (SIGTERM) and reaped on drop. Its stderr goes to a file, not
/// a pipe: nobody reads a pipe while the test runs, and a full one would block the daemon's
/// logging (and with it the queue thread that logs).
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn spawn(socket: &Path, args: &[&str]) -> Daemon {
        let log = socket.with_extension("log");
        let stderr = std::fs::File::create(&log).expect("create the daemon's log");
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child, log }
    }

    /// SIGTERM, wait, and return what it printed.
    fn stop(mut self) -> String {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "daemon failed: {status}: {log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counter(log: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    let at = log
        .rfind(&key)
        .unwrap_or_else(|| panic!("no {name} in {log}"))
        + key.len();
    log[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// An Ethernet frame with the vnet header (all zero) in front.
fn packet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload_len: usize, seed: u8) -> Vec<u8> {
    let mut p = vec![0u8; HDR];
    p.extend_from_slice(&dst);
    p.extend_from_slice(&src);
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)));
    p
}

/// Posts `n` RX buffers of `len` bytes; returns their addresses by head.
fn post_rx(c: &mut Conn, n: usize, len: u32) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let at = c.buf(u64::from(len));
        c.ram.write(at, &vec![0xee; len as usize]);
        let head = c.write_chain(RX, &[w(at, len)]);
        c.publish(RX, head);
        out.push((head, at));
    }
    c.kick(RX);
    out
}

/// Sends `p` as a two-descriptor chain (header, frame); returns the TX used length.
fn send(c: &mut Conn, p: &[u8]) -> u32 {
    let h = c.buf(HDR as u64);
    c.ram.write(h, &p[..HDR]);
    let f = c.buf((p.len() - HDR) as u64);
    c.ram.write(f, &p[HDR..]);
    c.submit(TX, &[r(h, HDR as u32), r(f, (p.len() - HDR) as u32)])
}

fn start(dir: &Path, args: &[&str]) -> (Daemon, Conn) {
    let sock = dir.join("net.sock");
    let d = Daemon::spawn(&sock, args);
    let c = Conn::connect(
        &sock,
        Setup {
            queues: 2,
            queue_size: 256,
            event_idx: true,
        },
    );
    (d, c)
}

const GUEST: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

#[test]
fn negotiation_and_config_space() {
    let dir = tempfile::tempdir().unwrap();
    let (d, mut c) = start(
        dir.path(),
        &["--reflect", "--mac", "02:11:22:33:44:55", "--mtu", "9000"],
    );
    // VERSION_1, EVENT_IDX, MRG_RXBUF, MAC, MTU, STATUS, CSUM, GUEST_CSUM, TSO.
    for bit in [32, 29, 15, 5, 3, 16, 0, 1, 7, 8, 11, 12] {
        assert_ne!(c.features & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(c.features & (1 << 22), 0, "no MQ with one pair");
    assert_eq!(c.fe.get_queue_num().unwrap(), 2);
    let cfg = c.config(0, 12);
    assert_eq!(&cfg[0..6], &[2, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 9000);
    drop(c);
    d.stop();
}

#[test]
fn reflect_returns_every_frame_with_macs_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let (d, mut c) = start(dir.path(), &["--reflect"]);
    const N: usize = 50;
    let mut rx = post_rx(&mut c, N, 2048);
    rx.reverse();
    let mut sent = Vec::new();
    for i in 0..N {
        let p = packet(PEER, GUEST, 0x88b5, 60 + i * 20, i as u8);
        assert_eq!(send(&mut c, &p), 0, "TX used length is 0");
        sent.push(p);
    }
    let used = c.wait_used(RX, N);
    for (i, u) in used.iter().enumerate() {
        let (head, at) = rx.pop().unwrap();
        assert_eq!(u.head, head, "buffers are used in order");
        let p = &sent[i];
        assert_eq!(u.len as usize, p.len());
        let got = c.ram.read(at, p.len());
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(&got[HDR..HDR + 6], &GUEST, "destination is the sender");
        assert_eq!(&got[HDR + 6..HDR + 12], &PEER);
        assert_eq!(&got[HDR + 12..], &p[HDR + 12..], "frame {i} intact");
    }
    drop(c);
    let log = d.stop();
    assert_eq!(counter(&log, "tx_frames"), N as u64, "{log}");
    assert_eq!(counter(&log, "rx_frames"), N as u64, "{log}");
    assert_eq!(counter(&log, "dropped"), 0, "{log}");
}

#[test]
fn mergeable_buffers_carry_a_frame_too_big_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let (d, mut c) = start(dir.path(), &["--reflect"]);
    // 512-byte buffers: a 1400-byte frame spans three.
    let rx = post_rx(&mut c, 8, 512);
    let p = packet(PEER, GUEST, 0x88b5, 1400 - HDR - 14, 7);
    send(&mut c, &p);
    let used = c.wait_used(RX, 3);
    assert_eq!(
        used.iter().map(|u| u.len).collect::<Vec<_>>(),
        vec![512, 512, 1400 - 1024]
    );
    let mut got = Vec::new();
    for (u, (head, at)) in used.iter().zip(&rx) {
        assert_eq!(u.head, *head);
        got.extend(c.ram.read(*at, u.len as usize));
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[HDR + 12..], &p[HDR + 12..]);
    // The buffers the frame did not need stay with the device for the next one.
    let q = packet(PEER, GUEST, 0x88b5, 100, 8);
    send(&mut c, &q);
    let used = c.wait_used(RX, 1);
    assert_eq!(used[0].head, rx[3].0);
    drop(c);
    let log = d.stop();
    assert_eq!(counter(&log, "dropped"), 0, "{log}");
}

#[test]
fn malformed_chains_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (d, mut c) = start(dir.path(), &["--sink"]);
    let b = c.buf(4096);
    // Too short for header + Ethernet header.
    assert_eq!(c.submit(TX, &[r(b, 20)]), 0);
    // A device-writable buffer in TX.
    assert_eq!(c.submit(TX, &[r(b, 12), w(b + 64, 64)]), 0);
    // Outside guest memory.
    assert_eq!(c.submit(TX, &[r(b, 12), r(0x7000_0000, 64)]), 0);
    // Over MTU without TSO... TSO was negotiated, so over the GSO limit.
    assert_eq!(c.submit(TX, &[r(b, 12), r(0x10_0000, 70_000)]), 0);
    // A descriptor loop.
    let i = c.raw_desc(TX, b, 64, 1, 0);
    c.ram.put_desc(c.vqs[TX].desc, i, b, 64, 1, i);
    c.publish(TX, i);
    c.kick(TX);
    assert_eq!(c.wait_used(TX, 1)[0].len, 0);
    // And a good frame still goes through.
    let p = packet(PEER, GUEST, 0x88b5, 100, 1);
    send(&mut c, &p);
    drop(c);
    let log = d.stop();
    assert_eq!(counter(&log, "tx_frames"), 1, "{log}");
    assert_eq!(counter(&log, "dropped"), 5, "{log}");
    assert!(log.contains("wrong_direction: 1"), "{log}");
    assert!(log.contains("too_short: 1"), "{log}");
    assert!(log.contains("unmapped: 1"), "{log}");
    assert!(log.contains("tx_oversized: 1"), "{log}");
    assert!(log.contains("bad_chains: 1"), "{log}");
}

#[test]
fn frames_without_mergeable_buffers_must_fit_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("net.sock");
    let d = Daemon::spawn(&sock, &["--reflect"]);
    let mut c = Conn::connect(
        &sock,
        Setup {
            queues: 2,
            queue_size: 256,
            event_idx: true,
        },
    );
    // Renegotiate without MRG_RXBUF.
    c.fe.set_features(c.features & !(1 << 15)).unwrap();
    let rx = post_rx(&mut c, 2, 512);
    send(&mut c, &packet(PEER, GUEST, 0x88b5, 1000, 1));
    send(&mut c, &packet(PEER, GUEST, 0x88b5, 100, 2));
    let used = c.wait_used(RX, 1);
    assert_eq!(
        used[0].head, rx[0].0,
        "the big frame was dropped, its buffer reused"
    );
    assert_eq!(used[0].len as usize, HDR + 14 + 100);
    drop(c);
    let log = d.stop();
    assert!(log.contains("rx_oversized: 1"), "{log}");
}

/// Runs `f` on a thread in a fresh network namespace; processes it spawns are in it too.
fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "unshare: {}", std::io::Error::last_os_error());
        f();
    })
    .join()
    .expect("test thread panicked");
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

#[test]
fn tap_mode_reaches_the_host_stack_and_back() {
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: /dev/net/tun absent");
        return;
    }
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (d, mut c) = start(dir.path(), &["--tap", "iopvu0"]);
        let host_mac = [2, 0, 0, 0, 0, 1];
        ip(&[
            "link",
            "set",
            "dev",
            "iopvu0",
            "address",
            "02:00:00:00:00:01",
        ]);
        ip(&["addr", "add", "10.79.0.1/24", "dev", "iopvu0"]);
        ip(&["link", "set", "dev", "iopvu0", "up"]);
        let rx = post_rx(&mut c, 64, 2048);
        // The guest asks the host for 10.79.0.1: the frame must reach the host stack, and
        // the reply the host writes to the TAP must come back on RX.
        let mut arp = packet([0xff; 6], GUEST, 0x0806, 0, 0);
        arp.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&GUEST);
        arp.extend_from_slice(&[10, 79, 0, 2]);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 79, 0, 1]);
        assert_eq!(send(&mut c, &arp), 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        loop {
            assert!(Instant::now() < deadline, "no ARP reply on RX");
            let used = c.wait_used_for(RX, 1, Duration::from_millis(100));
            let mut replied = false;
            for u in used {
                let at = rx[seen].1;
                assert_eq!(u.head, rx[seen].0);
                seen += 1;
                let f = c.ram.read(at, u.len as usize);
                let eth = &f[HDR..];
                if eth[12..14] == [0x08, 0x06] && eth[20..22] == [0, 2] {
                    assert_eq!(&eth[0..6], &GUEST);
                    assert_eq!(&eth[6..12], &host_mac);
                    assert_eq!(&eth[28..32], &[10, 79, 0, 1]);
                    replied = true;
                }
            }
            if replied {
                break;
            }
        }
        drop(c);
        let log = d.stop();
        assert!(counter(&log, "tx_frames") >= 1, "{log}");
        assert!(counter(&log, "rx_frames") >= 1, "{log}");
    });
}

/// DPDK's virtio_user PMD (testpmd, txonly) as the frontend of our sink: an independent
/// vhost-user-net driver whose frames must all be counted by the daemon.
#[test]
fn dpdk_testpmd_transmits_through_our_daemon() {
    let testpmd = "dpdk-testpmd";
    if Command::new(testpmd).arg("--help").output().is_err() {
        eprintln!("skipped: {testpmd} absent (apt-get install dpdk-dev)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("net.sock");
    let d = Daemon::spawn(&sock, &["--sink"]);
    // --no-huge: virtio_user shares testpmd's memory with the daemon through memfds, no
    // hugepages needed. SIGINT after a few seconds makes testpmd print its totals and exit;
    // SIGKILL 30 s later if it has not, so a stuck shutdown fails the test instead of hanging it.
    let prefix = format!("iopath-test-{}", std::process::id());
    let out = Command::new("timeout")
        .args([
            "-k",
            "30",
            "-s",
            "INT",
            "6",
            testpmd,
            "-l",
            "0-1",
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
        ])
        .args(["--file-prefix", &prefix])
        .arg("--vdev")
        .arg(format!("net_virtio_user0,path={},queues=1", sock.display()))
        .args([
            "--",
            "--forward-mode=txonly",
            "--total-num-mbufs=4096",
            "--tx-first",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run testpmd");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = stdout
        .lines()
        .filter_map(|l| l.split("TX-packets:").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no TX-packets in testpmd output: {stdout}"));
    assert!(sent > 0, "{stdout}");
    let log = d.stop();
    assert_eq!(
        counter(&log, "tx_frames"),
        sent,
        "testpmd sent {sent}: {log}"
    );
    assert_eq!(counter(&log, "dropped"), 0, "{log}");
}
