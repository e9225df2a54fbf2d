//! A vfio-user NVMe server in this process: the backends library's NVMe function served by
//! the vfio_user crate's `Server` on a thread, exactly what `iopath-vfio-user-nvme` runs, minus
//! its signal handling (which would exit the test process).
#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;

use backends::engine::BackendSpec;
use backends::nvme::ControllerConfig;
use backends::vfio_user_nvme::{NvmeFunction, PollTuning, ENGINE_DEPTH};

/// Serves `backing` on `dir/nvme.sock`, one client after another, for the rest of the test
/// process. Returns the socket path.
pub fn serve(dir: &Path, backing: &Path) -> PathBuf {
    let socket = dir.join("nvme.sock");
    let listener = UnixListener::bind(&socket).expect("bind the server socket");
    let engine = BackendSpec::File {
        path: backing.into(),
        direct: false,
        read_only: false,
    }
    .open(ENGINE_DEPTH)
    .expect("open the backing file");
    let mut function =
        NvmeFunction::new(ControllerConfig::default(), engine, PollTuning::default())
            .expect("NVMe function");
    let server = vfio_user::Server::from_owned_fd(
        OwnedFd::from(listener),
        true,
        function.irqs(),
        function.regions(),
    );
    thread::Builder::new()
        .name("vfio-user-server".into())
        .spawn(move || loop {
            match server.run(&mut function) {
                Err(vfio_user::Error::SocketAccept(e)) => panic!("accept: {e}"),
                Ok(()) | Err(_) => function.disconnect(),
            }
        })
        .expect("server thread");
    socket
}

/// A file of `len` bytes of `fill`.
pub fn backing_file(dir: &Path, len: usize, fill: u8) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::write(&path, vec![fill; len]).unwrap();
    path
}
