//! Regression (found by `fuzz/` target `vhost_user_messages`): the daemon builds a fresh
//! backend and `VhostUserDaemon` for every frontend connection, and vhost-user-backend 0.24.0
//! never closes the queue threads' exit eventfds; each connection leaked one per queue until
//! `BlkBackend` closed them on drop.
//!
//! A test binary of its own: it counts the process's descriptors, which other tests running
//! in parallel would disturb.

use std::sync::Arc;
use std::time::Duration;

use backends::engine::{BlockEngine, NullConfig, NullEngine};
use backends::vhost_user_blk::backend::ServeOptions;
use backends::vhost_user_blk::{BlkBackend, BlkConfig};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What `serve_one` sets up for a connection, then drops.
fn one_connection(queues: u16) {
    let engines: Vec<Box<dyn BlockEngine>> = (0..queues)
        .map(|_| {
            Box::new(NullEngine::new(NullConfig {
                capacity: 1 << 20,
                block_size: 512,
                read_only: false,
                queue_depth: 8,
            })) as Box<dyn BlockEngine>
        })
        .collect();
    let config = BlkConfig {
        capacity: 1 << 20,
        block_size: 512,
        read_only: false,
        num_queues: queues,
        queue_size: 128,
        serial: "fds".into(),
    };
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let options = ServeOptions {
        poll: Duration::ZERO,
    };
    let backend = Arc::new(BlkBackend::new(config, engines, mem.clone(), options));
    let daemon = VhostUserDaemon::new("fds".into(), backend.clone(), mem).unwrap();
    backend
        .register_completions(&daemon.get_epoll_handlers())
        .unwrap();
    drop(daemon);
    drop(backend);
}

#[test]
fn a_connection_leaves_no_descriptor_behind() {
    // The first round may open what the process keeps for good.
    one_connection(4);
    let before = open_fds();
    for _ in 0..3 {
        one_connection(4);
    }
    assert_eq!(open_fds(), before);
}
