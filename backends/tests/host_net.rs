//! The host-side network helpers for real: a namespace with a veth pair, a far end on one end,
//! frames of the bench's format sent on the other. Needs root and iproute2.

use std::time::{Duration, Instant};

use backends::host_net::{self, FarCounts, FarEnd, FarMode, Link, NetNs, PacketSocket};
use iopath_mailbox::net::{self, ETHERTYPE};

const FRAMES: u64 = 200;
const SEED: u64 = 0x5eed;
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn ns_or_skip() -> Option<NetNs> {
    if let Err(e) = host_net::available() {
        eprintln!("skipped: {e}");
        return None;
    }
    Some(NetNs::create(&host_net::unique_name("iopt")).expect("create namespace"))
}

/// Sends `FRAMES` frames of `len` bytes on `ifname` (inside `ns`), one at a time, and collects
/// what comes back within a second of each send.
fn exchange(ns: &NetNs, ifname: &str, len: usize, expect_back: bool) -> (u64, u64) {
    let ifname = ifname.to_string();
    ns.run_in(move || {
        let s = PacketSocket::open(&ifname, ETHERTYPE, Some(Duration::from_millis(50))).unwrap();
        let mut frame = vec![0u8; len];
        let mut buf = [0u8; 2048];
        let mut back = 0;
        for seq in 0..FRAMES {
            net::write(&mut frame, B, A, seq, 0, SEED);
            s.send(&frame).unwrap();
            if !expect_back {
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let Some(n) = s.recv(&mut buf).unwrap() else {
                    continue;
                };
                let got = &buf[..n];
                assert_eq!(&got[..6], &A, "reflected to the sender");
                assert_eq!(&got[6..12], &B);
                let info = net::check(got, Some(len), SEED).expect("intact frame");
                assert_eq!(info.seq, seq);
                back += 1;
                break;
            }
        }
        (FRAMES, back)
    })
    .unwrap()
}

#[test]
fn a_reflector_in_a_namespace_returns_every_frame_intact() {
    let Some(ns) = ns_or_skip() else { return };
    let veth = Link::veth("iopa", "iopb", Some(&ns)).unwrap();
    let far = FarEnd::spawn(Some(&ns), "iopb", FarMode::Reflect).unwrap();
    let (sent, back) = exchange(&ns, veth.name(), 64, true);
    assert_eq!(back, sent, "every frame came back");
    let (_, back) = exchange(&ns, veth.name(), 1514, true);
    assert_eq!(back, FRAMES);
    let c = far.stop();
    assert_eq!(
        c,
        FarCounts {
            received: 2 * FRAMES,
            bytes: FRAMES * (64 + 1514),
            reflected: 2 * FRAMES,
            short: 0,
            send_errors: 0
        }
    );
}

#[test]
fn a_sink_counts_and_returns_nothing() {
    let Some(ns) = ns_or_skip() else { return };
    let veth = Link::veth("iopa", "iopb", Some(&ns)).unwrap();
    let far = FarEnd::spawn(Some(&ns), "iopb", FarMode::Sink).unwrap();
    exchange(&ns, veth.name(), 60, false);
    // The frames are in flight through the pair: wait for the count, not a fixed time.
    let deadline = Instant::now() + Duration::from_secs(5);
    while far.counts().received < FRAMES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = far.stop();
    assert_eq!((c.received, c.bytes, c.reflected), (FRAMES, FRAMES * 60, 0));
}

#[test]
fn a_tap_moved_into_a_namespace_keeps_its_name_and_the_namespace_cleans_up() {
    let Some(ns) = ns_or_skip() else { return };
    let name = host_net::unique_name("iopt");
    let mut tap = Link::tap(&name, None).unwrap();
    tap.move_to(&ns).unwrap();
    let links = ns.ip(&["-o", "link", "show", &name]).unwrap();
    assert!(links.contains(&name), "{links}");
    assert!(
        host_net::ip(&["link", "show", &name]).is_err(),
        "gone from the host"
    );
    // No such link: the far end refuses to start instead of serving nothing.
    assert!(matches!(
        FarEnd::spawn(Some(&ns), "nosuch0", FarMode::Reflect),
        Err(host_net::Error::NoInterface(_))
    ));
    let ns_name = ns.name().to_string();
    drop(tap);
    drop(ns);
    let list = host_net::ip(&["netns", "list"]).unwrap();
    assert!(!list.contains(&ns_name), "{list}");
}

#[test]
fn a_veth_pair_spans_two_namespaces() {
    let Some(near) = ns_or_skip() else { return };
    let far_ns = NetNs::create(&host_net::unique_name("iopt")).unwrap();
    let (a, b) = (host_net::unique_name("iopa"), host_net::unique_name("iopb"));
    let mut veth = Link::veth(&a, &b, None).unwrap();
    veth.move_peer(&b, &far_ns).unwrap();
    veth.move_to(&near).unwrap();
    let far = FarEnd::spawn(Some(&far_ns), &b, FarMode::Reflect).unwrap();
    let (sent, back) = exchange(&near, &a, 100, true);
    assert_eq!(back, sent);
    assert_eq!(far.stop().reflected, sent);
    assert!(
        host_net::ip(&["link", "show", &a]).is_err(),
        "not left in the host"
    );
}
