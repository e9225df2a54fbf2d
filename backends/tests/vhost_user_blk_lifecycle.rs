//! The vhost-user-blk daemon's life: socket permissions, reconnects, `--client`, SIGTERM,
//! and command-line errors.

mod vhost_user_blk_common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use vhost_user_blk_common::*;

const DISK: usize = 1 << 20;

#[test]
fn the_socket_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(&dir.path().join("blk.sock"), &["--null", "1M"]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[test]
fn a_new_frontend_can_connect_after_the_last_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, 0);
    let mut d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--path", path.to_str().unwrap(), "--queues", "2"],
    );
    let two = Setup {
        queues: 2,
        ..Setup::default()
    };
    let mut c = Conn::connect(&d.socket, two);
    assert_eq!(c.write(1, 0, &pattern(4096, 5)).0, S_OK);
    drop(c);

    // A fresh connection sets everything up again from scratch (new memory, queues from 0).
    for round in 0..2u8 {
        let mut c = Conn::connect(&d.socket, two);
        assert_eq!(c.read(0, 0, 4096), (S_OK, 4097, pattern(4096, 5)));
        assert_eq!(c.write(1, 8, &pattern(512, round)).0, S_OK);
        assert_eq!(file_bytes(&path, 4096, 512), pattern(512, round));
    }
    assert!(d.running());
}

#[test]
fn client_mode_connects_to_the_frontend() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, 0);
    let socket = dir.path().join("frontend.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let _d = Daemon::spawn_client(&socket, &["--path", path.to_str().unwrap()]);
    let (stream, _) = listener.accept().unwrap();
    let mut c = Conn::from_stream(stream, Setup::default());
    assert_eq!(c.write(0, 2, &pattern(1024, 3)).0, S_OK);
    assert_eq!(file_bytes(&path, 1024, 1024), pattern(1024, 3));
    assert_eq!(c.read(0, 2, 1024).2, pattern(1024, 3));
    drop(c);
    // The daemon comes back to the frontend after a disconnect.
    let (stream, _) = listener.accept().unwrap();
    let mut c = Conn::from_stream(stream, Setup::default());
    assert_eq!(c.read(0, 2, 1024).2, pattern(1024, 3));
}

#[test]
fn sigterm_while_idle_exits_zero_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::spawn(&dir.path().join("blk.sock"), &["--null", "1M"]);
    d.signal(libc::SIGTERM);
    let status = d.wait();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!d.socket.exists());
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path(), DISK, 0);
    let mut d = Daemon::spawn(
        &dir.path().join("blk.sock"),
        &["--path", path.to_str().unwrap()],
    );
    let mut c = Conn::connect(&d.socket, Setup::default());
    assert_eq!(c.write(0, 0, &pattern(512, 1)).0, S_OK);

    let n = 64;
    let mut statuses = Vec::new();
    for i in 0..n {
        let (h, buf, s) = (c.buf(16), c.buf(8192), c.buf(1));
        c.ram.write(h, &header(T_OUT, i * 16));
        c.ram.write(buf, &pattern(8192, i as u8));
        c.ram.write(s, &[S_UNTOUCHED]);
        let head = c.write_chain(0, &[r(h, 16), r(buf, 8192), w(s, 1)]);
        c.publish(0, head);
        statuses.push(s);
    }
    c.kick(0);
    // Let the daemon take some of them before the signal.
    let first = Instant::now();
    while c.poll_used(0).is_empty() && first.elapsed() < Duration::from_secs(5) {
        std::hint::spin_loop();
    }
    d.signal(libc::SIGTERM);
    let status = d.wait();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!d.socket.exists());

    // Every request the daemon answered completed fully: status OK and data in the file;
    // none was left half done (status written without a used entry or the reverse).
    let answered = statuses
        .iter()
        .filter(|&&s| c.ram.read(s, 1)[0] != S_UNTOUCHED)
        .count();
    assert!(answered >= 1);
    let used_idx = c.ram.load_u16(c.vqs[0].used + 2);
    assert_eq!(
        usize::from(used_idx),
        answered + 1,
        "one used entry per answer"
    );
    for (i, s) in statuses.iter().enumerate() {
        if c.ram.read(*s, 1)[0] != S_UNTOUCHED {
            assert_eq!(c.ram.read(*s, 1)[0], S_OK);
            assert_eq!(
                file_bytes(&path, i as u64 * 8192, 8192),
                pattern(8192, i as u8)
            );
        }
    }
}

#[test]
fn sigint_also_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::spawn(&dir.path().join("blk.sock"), &["--null", "1M"]);
    let _c = Conn::connect(&d.socket, Setup::default());
    d.signal(libc::SIGINT);
    assert_eq!(d.wait().code(), Some(0));
}

fn stderr_of(args: &[&str]) -> (Option<i32>, String) {
    let out = run_to_exit(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_and_unopenable_files_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("blk.sock");
    let sock = sock.to_str().unwrap();

    let (code, err) = stderr_of(&["--socket", sock, "--path", "/nonexistent/disk.img"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim_end(),
        "iopath-vhost-user-blk: error: cannot open the backing device: \
         cannot open /nonexistent/disk.img: No such file or directory (os error 2)"
    );
    assert!(
        !dir.path().join("blk.sock").exists(),
        "no socket for a failed start"
    );

    for args in [
        vec!["--socket", sock],
        vec!["--socket", sock, "--null", "1M", "--path", "/tmp/x"],
        vec!["--null", "1M"],
        vec!["--socket", sock, "--null", "1M", "--queues", "x"],
    ] {
        let (code, err) = stderr_of(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.starts_with("iopath-vhost-user-blk: error: "), "{err}");
    }

    for (args, msg) in [
        (vec!["--null", "12X"], "--null \"12X\""),
        (vec!["--null", "1M", "--direct"], "--direct needs --path"),
        (vec!["--null", "1M", "--queue-size", "100"], "--queue-size"),
        (vec!["--null", "1M", "--queues", "0"], "--queues"),
        (vec!["--null", "1M", "--queues", "65"], "--queues"),
    ] {
        let mut all = vec!["--socket", sock];
        all.extend(args);
        let (code, err) = stderr_of(&all);
        assert_eq!(code, Some(1), "{all:?}: {err}");
        assert!(
            err.starts_with("iopath-vhost-user-blk: error: ") && err.contains(msg),
            "{err}"
        );
    }

    // A regular file where the socket should go is not deleted.
    let file = dir.path().join("precious");
    std::fs::write(&file, b"data").unwrap();
    let (code, err) = stderr_of(&["--socket", file.to_str().unwrap(), "--null", "1M"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}
