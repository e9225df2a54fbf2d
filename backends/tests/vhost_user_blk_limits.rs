//! The vhost-user-blk daemon's limits: one frontend at a time (others are closed at once),
//! ring sizes and memory regions within bounds, and `--user` (root only).

mod vhost_user_blk_common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;
use vhost_user_blk_common::*;

const DISK: usize = 1 << 20;

#[test]
fn a_frontend_beyond_the_limit_is_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, 0);
    let d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--path", path.to_str().unwrap()],
    );
    let mut first = Conn::connect(&d.socket, Setup::default());
    // The second is accepted and closed: its first request fails instead of hanging.
    let second = Frontend::from_stream(UnixStream::connect(&d.socket).unwrap(), 1);
    assert!(second.get_features().is_err());
    assert_eq!(first.write(0, 0, &pattern(512, 1)).0, S_OK);
    drop(first);
    // Once the first has gone, the next one is served.
    let mut third = Conn::connect(&d.socket, Setup::default());
    assert_eq!(third.read(0, 0, 512).2, pattern(512, 1));

    // With --max-connections 2, two are served at once.
    let d2 = Daemon::spawn(
        &dir.path().join("blk2.sock"),
        &["--null", "1M", "--max-connections", "2"],
    );
    let mut a = Conn::connect(&d2.socket, Setup::default());
    let mut b = Conn::connect(&d2.socket, Setup::default());
    assert_eq!(a.write(0, 0, &pattern(512, 2)).0, S_OK);
    assert_eq!(b.write(0, 8, &pattern(512, 3)).0, S_OK);
    let c = Frontend::from_stream(UnixStream::connect(&d2.socket).unwrap(), 1);
    assert!(c.get_features().is_err());
}

#[test]
fn ring_sizes_must_be_powers_of_two_within_the_advertised_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--null", "1M", "--queue-size", "128"],
    );
    let mut fe = Frontend::connect(&d.socket, 1).unwrap();
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    let protocol = fe.get_protocol_features().unwrap();
    fe.set_protocol_features(protocol & VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    fe.set_features(features).unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    for bad in [100u16, 256, 0] {
        assert!(fe.set_vring_num(0, bad).is_err(), "{bad}");
    }
    fe.set_vring_num(0, 64).unwrap();
    fe.set_vring_num(0, 128).unwrap();
}

#[test]
fn memory_regions_beyond_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--null", "1M", "--max-mem-slots", "1"],
    );
    let mut fe = Frontend::connect(&d.socket, 1).unwrap();
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    let protocol = fe.get_protocol_features().unwrap();
    let wanted =
        VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    fe.set_protocol_features(protocol & wanted).unwrap();
    fe.set_features(features).unwrap();
    assert_eq!(fe.get_max_mem_slots().unwrap(), 1);
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    let ram = GuestRam::new();
    // Two regions, one allowed.
    assert!(fe.set_mem_table(&ram.regions()).is_err());
    fe.set_mem_table(&ram.regions()[..1]).unwrap();
}

/// `Uid:` / `Gid:` of a process: real, effective, saved, filesystem.
fn ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} line"));
    line[key.len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn user_drops_root_after_opening_the_file_and_still_serves() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: --user needs the test to run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, 0);
    // Only root may open the file: the daemon must have opened it before dropping root.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--path", path.to_str().unwrap(), "--user", "nobody"],
    );
    let nobody = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[2].parse::<u32>().unwrap(), f[3].parse::<u32>().unwrap())
        })
        .expect("a nobody user");
    // The socket appears before the switch: wait for the connection to be served.
    let mut c = Conn::connect(&d.socket, Setup::default());
    let pid = d.pid();
    assert_eq!(ids(pid, "Uid:"), vec![nobody.0; 4]);
    assert_eq!(ids(pid, "Gid:"), vec![nobody.1; 4]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((meta.uid(), meta.gid()), nobody, "the socket is the user's");

    // A second connection opens new engines over the file root opened.
    assert_eq!(c.write(0, 0, &pattern(4096, 9)).0, S_OK);
    drop(c);
    let mut c = Conn::connect(&d.socket, Setup::default());
    assert_eq!(c.read(0, 0, 4096).2, pattern(4096, 9));
    assert_eq!(file_bytes(&path, 0, 4096), pattern(4096, 9));
    assert!(d.running());
}
