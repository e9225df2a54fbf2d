//! The vfio-user NVMe daemon's life: reconnects, device reset, SIGTERM, socket permissions,
//! startup errors.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::nvme_driver::*;
use common::vfio_user_daemon::{self, exited_zero, Daemon};

#[test]
fn a_new_client_finds_a_reset_controller_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let d = Daemon::start(&["--path", path.to_str().unwrap()]);
    let data = pattern(5, 4096);
    {
        let mut drv = Driver::connect(&d.socket);
        drv.enable();
        drv.identify_controller();
        drv.create_io_queues();
        drv.ram.map.write(DATA, &data);
        assert!(drv.run(1, rw(true, 8, 8, DATA)).ok());
        // Dropping the client closes the connection with the controller enabled.
    }
    let mut drv = Driver::connect(&d.socket);
    assert_eq!(
        drv.read32(CSTS),
        0,
        "the next client gets a reset controller"
    );
    drv.enable();
    // The admin SQ tail doorbell takes the same values as in the first session: the stale
    // slot must not hide them.
    let id = drv.identify_controller();
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x1b36);
    drv.create_io_queues();
    assert!(drv.run(1, rw(false, 8, 8, DATA2)).ok());
    assert_eq!(drv.ram.map.read(DATA2, 4096), data);
}

#[test]
fn device_reset_message_resets_the_controller() {
    let d = Daemon::start(&["--null", "1M"]);
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    drv.create_io_queues();
    assert!(drv.run(1, flush()).ok());
    drv.client.reset().unwrap();
    assert_eq!(drv.read32(CSTS), 0, "CSTS.RDY cleared by the reset");
    assert_eq!(drv.read32(CC) & 1, 0);
    drv.enable();
    drv.identify_controller();
    drv.create_io_queues();
    assert!(drv.run(1, flush()).ok(), "queues recreated from 0 work");
}

#[test]
fn io_queues_deleted_and_created_again_start_from_zero() {
    let d = Daemon::start(&["--null", "1M"]);
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    drv.create_io_queues();
    assert!(drv.run(1, flush()).ok());
    // Delete SQ 1 then CQ 1 (their slots hold 1), create them again, and ring with 1 again.
    assert!(drv.run(0, cmd(0x00, 0, 0, 0, [1, 0, 0])).ok(), "delete SQ");
    assert!(drv.run(0, cmd(0x04, 0, 0, 0, [1, 0, 0])).ok(), "delete CQ");
    drv.create_io_queues();
    assert!(drv.run(1, flush()).ok());
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let d = Daemon::start(&["--null", "1M"]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");
    let socket = d.socket.clone();
    // Terminating with a client connected still exits cleanly.
    let mut drv = Driver::connect(&socket);
    drv.enable();
    let status = d.terminate();
    assert!(exited_zero(status), "{status}");
    assert!(!socket.exists());
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let d = Daemon::start(&["--null", "1M"]);
    let out = vfio_user_daemon::run(&["--socket", d.socket.to_str().unwrap(), "--null", "1M"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by a running server"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let d2 = Daemon::start_at(&stale, &["--null", "1M"]);
    let mut drv = Driver::connect(&d2.socket);
    assert_eq!(drv.read32(VS), 0x0001_0400);
}

#[test]
fn startup_errors_print_the_chain_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let out = vfio_user_daemon::run(&[
        "--socket",
        socket.to_str().unwrap(),
        "--path",
        "/nonexistent/iopath-disk",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "iopath-vfio-user-nvme: error: cannot open backend file:/nonexistent/iopath-disk: \
             cannot open /nonexistent/iopath-disk: "
        ),
        "{err}"
    );
    assert!(!socket.exists(), "the socket is removed on error");

    let not_socket = dir.path().join("file");
    std::fs::write(&not_socket, b"x").unwrap();
    let out = vfio_user_daemon::run(&["--socket", not_socket.to_str().unwrap(), "--null", "1M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a socket"));
    assert_eq!(std::fs::read(&not_socket).unwrap(), b"x", "left alone");
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let socket = socket.to_str().unwrap();
    for args in [
        &["--socket", socket][..],
        &["--socket", socket, "--null", "1M", "--path", "/tmp/y"],
        &["--socket", socket, "--null", "1M", "--readonly"],
        &["--socket", socket, "--null", "1M", "--direct"],
        &["--socket", socket, "--null", "1X"],
        &["--null", "1M"],
    ] {
        let out = vfio_user_daemon::run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    }
    assert!(!std::path::Path::new(socket).exists());
}

/// The inputs that crash vfio_user 0.1.7 (fuzz/regressions/): each only ends its own
/// connection; the daemon lives on and serves the next client.
#[test]
fn malformed_messages_end_the_connection_not_the_daemon() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let mut d = Daemon::start(&["--null", "1M"]);
    let version = |size: u32, payload: &[u8]| {
        let mut m = vec![0u8; 16];
        m[2..4].copy_from_slice(&1u16.to_le_bytes());
        m[4..8].copy_from_slice(&size.to_le_bytes());
        m.extend_from_slice(payload);
        m
    };
    let inputs = [
        // Shorter than a Version's fixed part: the crate's size arithmetic underflows.
        version(18, &[1, 0]),
        // A payload that is not one NUL-terminated string: the crate unwraps.
        version(22, &[0, 0, 0, 0, b'{', b'}']),
        // A size the crate would try to allocate.
        version(u32::MAX, &[0, 0, 0, 0]),
    ];
    for input in inputs {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = s.write_all(&input);
        let mut rest = Vec::new();
        // The relay hangs up; nothing is answered.
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "no reply to a malformed message");
        assert!(d.alive(), "the daemon survives {input:?}");
    }
    let mut drv = Driver::connect(&d.socket);
    drv.enable();
    drv.identify_controller();
    drv.create_io_queues();
    assert!(drv.run(1, flush()).ok(), "the next client is served");
}
