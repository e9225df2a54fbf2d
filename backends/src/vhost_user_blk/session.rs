//! One frontend connection: the crate's handler on a private socket, reached only through the
//! [`relay`] that adds what the crate lacks.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;

use super::backend::{BlkBackend, Memory};
use super::daemon::VhostUserError;
use super::queue::Stats;
use super::relay::{self, Limits};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the private socket")]
    PrivateSocket(#[source] io::Error),
    #[error("cannot reach the private socket")]
    Connect(#[source] io::Error),
    #[error("cannot set up the vhost-user daemon")]
    Daemon(#[source] VhostUserError),
    #[error("cannot watch the engines' completions")]
    Completions(#[source] io::Error),
}

/// Where the crate's handler listens: a socket in a directory only this process's user can
/// enter. Connecting and accepting happen under one lock, so concurrent sessions cannot take
/// each other's connection.
pub struct PrivateSocket {
    listener: Mutex<Listener>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateSocket {
    pub fn new() -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("iopath-vhost-user-blk-")
            .tempdir()
            .map_err(Error::PrivateSocket)?;
        let path = dir.path().join("handler.sock");
        let listener = UnixListener::bind(&path).map_err(Error::PrivateSocket)?;
        Ok(PrivateSocket {
            listener: Mutex::new(Listener::from(listener)),
            path,
            _dir: dir,
        })
    }
}

/// A backend served by the crate's handler. Dropping a session without [`Session::close`]
/// abandons the requests in flight, as a crash would.
pub struct Session {
    daemon: VhostUserDaemon<Arc<BlkBackend>>,
    backend: Arc<BlkBackend>,
    crate_end: Option<UnixStream>,
}

impl Session {
    /// Starts the crate's handler for `backend` (`mem` must be the backend's memory).
    pub fn new(
        backend: Arc<BlkBackend>,
        mem: Memory,
        private: &PrivateSocket,
    ) -> Result<Self, Error> {
        let daemon_error = |e| Error::Daemon(VhostUserError(e));
        let mut daemon = VhostUserDaemon::new("vhost-user-blk".into(), backend.clone(), mem)
            .map_err(daemon_error)?;
        backend
            .register_completions(&daemon.get_epoll_handlers())
            .map_err(Error::Completions)?;
        let crate_end = {
            let mut listener = private
                .listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let stream = UnixStream::connect(&private.path).map_err(Error::Connect)?;
            daemon.start(&mut listener).map_err(daemon_error)?;
            stream
        };
        Ok(Session {
            daemon,
            backend,
            crate_end: Some(crate_end),
        })
    }

    /// Relays `frontend` to the handler until the connection ends.
    pub fn relay(&mut self, frontend: UnixStream, limits: Limits) {
        let Some(crate_end) = self.crate_end.take() else {
            return;
        };
        relay::relay(frontend, crate_end, &*self.backend, limits);
        match self.daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => log::info!("frontend disconnected"),
            Err(e) => log::warn!("connection ended: {e}"),
        }
    }

    /// Completes every request the frontend started, then stops the queue threads.
    pub fn close(self) -> Stats {
        self.backend.drain();
        let stats = self.backend.stats();
        // Dropping the daemon stops and joins the queue threads.
        drop(self.daemon);
        stats
    }
}
