//! The frontend against a scripted backend: the requests it sends on activation, reset and
//! after a hang-up, in order.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use vhost::vhost_user::message::VhostUserInflight;
use vhost::vhost_user::VhostUserVirtioFeatures;
use vhost::{VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::memory::{GuestRam, RamConfig};
use crate::virtio::feature;
use crate::virtio::vhost_user::channel::{Channel, Link};

type Log = Arc<Mutex<Vec<String>>>;

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A backend that answers every request and writes down what it was asked.
struct Fake {
    log: Log,
    features: u64,
    protocol: VhostUserProtocolFeatures,
}

impl Fake {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

impl Channel for Fake {
    fn set_owner(&mut self) -> vhost::Result<()> {
        self.note("SET_OWNER".into());
        Ok(())
    }
    fn get_features(&mut self) -> vhost::Result<u64> {
        self.note("GET_FEATURES".into());
        Ok(self.features)
    }
    fn set_features(&mut self, features: u64) -> vhost::Result<()> {
        self.note(format!("SET_FEATURES {features:#x}"));
        Ok(())
    }
    fn get_protocol_features(&mut self) -> vhost::Result<VhostUserProtocolFeatures> {
        self.note("GET_PROTOCOL_FEATURES".into());
        Ok(self.protocol)
    }
    fn set_protocol_features(&mut self, f: VhostUserProtocolFeatures) -> vhost::Result<()> {
        self.note(format!("SET_PROTOCOL_FEATURES {:#x}", f.bits()));
        Ok(())
    }
    fn need_reply(&mut self) {}
    fn get_queue_num(&mut self) -> vhost::Result<u64> {
        self.note("GET_QUEUE_NUM".into());
        Ok(1)
    }
    fn get_config(&mut self, _offset: u32, len: u32) -> vhost::Result<Vec<u8>> {
        self.note("GET_CONFIG".into());
        Ok(vec![0; len as usize])
    }
    fn set_config(&mut self, _offset: u32, _data: &[u8]) -> vhost::Result<()> {
        self.note("SET_CONFIG".into());
        Ok(())
    }
    fn get_max_mem_slots(&mut self) -> vhost::Result<u64> {
        self.note("GET_MAX_MEM_SLOTS".into());
        Ok(8)
    }
    fn add_mem_region(&mut self, _r: &VhostUserMemoryRegionInfo) -> vhost::Result<()> {
        self.note("ADD_MEM_REG".into());
        Ok(())
    }
    fn set_mem_table(&mut self, _r: &[VhostUserMemoryRegionInfo]) -> vhost::Result<()> {
        self.note("SET_MEM_TABLE".into());
        Ok(())
    }
    fn get_inflight_fd(
        &mut self,
        ask: &VhostUserInflight,
    ) -> vhost::Result<(VhostUserInflight, File)> {
        let file = tempfile::tempfile().unwrap();
        let ino = file.metadata().unwrap().ino();
        self.note(format!(
            "GET_INFLIGHT_FD {}x{} -> {ino}",
            ask.num_queues, ask.queue_size
        ));
        let info = VhostUserInflight {
            mmap_size: 4096,
            mmap_offset: 0,
            num_queues: ask.num_queues,
            queue_size: ask.queue_size,
        };
        Ok((info, file))
    }
    fn set_inflight_fd(&mut self, info: &VhostUserInflight, fd: RawFd) -> vhost::Result<()> {
        // SAFETY: fstat on a descriptor the caller keeps open, into a zeroed stat buffer.
        let ino = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fd, &mut st), 0);
            st.st_ino
        };
        self.note(format!("SET_INFLIGHT_FD {} {ino}", info.mmap_size));
        Ok(())
    }
    fn set_vring_num(&mut self, q: usize, size: u16) -> vhost::Result<()> {
        self.note(format!("SET_VRING_NUM {q} {size}"));
        Ok(())
    }
    fn set_vring_addr(&mut self, q: usize, _c: &VringConfigData) -> vhost::Result<()> {
        self.note(format!("SET_VRING_ADDR {q}"));
        Ok(())
    }
    fn set_vring_base(&mut self, q: usize, base: u16) -> vhost::Result<()> {
        self.note(format!("SET_VRING_BASE {q} {base}"));
        Ok(())
    }
    fn get_vring_base(&mut self, q: usize) -> vhost::Result<u32> {
        self.note(format!("GET_VRING_BASE {q}"));
        Ok(0)
    }
    fn set_vring_call(&mut self, q: usize, _fd: &EventFd) -> vhost::Result<()> {
        self.note(format!("SET_VRING_CALL {q}"));
        Ok(())
    }
    fn set_vring_kick(&mut self, q: usize, _fd: &EventFd) -> vhost::Result<()> {
        self.note(format!("SET_VRING_KICK {q}"));
        Ok(())
    }
    fn set_vring_enable(&mut self, q: usize, enable: bool) -> vhost::Result<()> {
        self.note(format!("SET_VRING_ENABLE {q} {enable}"));
        Ok(())
    }
}

/// Hands out the links the test queues, in order; with none queued the socket "refuses".
#[derive(Clone, Default)]
struct Script {
    links: Arc<Mutex<VecDeque<Link>>>,
    attempts: Arc<Mutex<u32>>,
}

impl Connector for Script {
    fn connect(&self) -> std::io::Result<Link> {
        *self.attempts.lock().unwrap() += 1;
        self.links
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| std::io::ErrorKind::ConnectionRefused.into())
    }
}

impl Script {
    /// Queues a backend with `features`; returns its log and the backend's end of the
    /// socket (dropping it is the backend hanging up).
    fn backend(&self, features: u64) -> (Log, UnixStream) {
        let log = Log::default();
        let (ours, theirs) = UnixStream::pair().unwrap();
        self.links.lock().unwrap().push_back(Link {
            channel: Box::new(Fake {
                log: log.clone(),
                features,
                protocol: GENERIC_PROTOCOL
                    | VhostUserProtocolFeatures::CONFIG
                    | VhostUserProtocolFeatures::INFLIGHT_SHMFD,
            }),
            stream: ours,
        });
        (log, theirs)
    }

    fn attempts(&self) -> u32 {
        *self.attempts.lock().unwrap()
    }
}

const GUEST: u64 = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX);
const BACKEND: u64 = GUEST | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
const DESC: u64 = 0x1000;
const DRIVER: u64 = 0x2000;
const DEVICE: u64 = 0x3000;

fn ram() -> GuestRam {
    GuestRam::new(RamConfig {
        size: 1 << 20,
        hugepages: false,
    })
    .unwrap()
}

fn frontend(ram: &GuestRam, script: &Script) -> VhostUserFrontend {
    let cfg = FrontendConfig {
        device_protocol: VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::INFLIGHT_SHMFD,
        backoff: Backoff {
            first: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        },
        ..FrontendConfig::new("/test/blk.sock".into(), 1, 16)
    };
    let mut f =
        VhostUserFrontend::with_connector(cfg, ram.memory().clone(), Box::new(script.clone()))
            .unwrap();
    f.offer(GUEST);
    f
}

/// One queue of 16 at DESC/DRIVER/DEVICE, and a clone of its kick eventfd.
fn activation() -> (Activation, EventFd) {
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let peek = kick.try_clone().unwrap();
    let a = Activation {
        features: GUEST,
        queues: vec![QueueActivation {
            index: 0,
            size: 16,
            desc: DESC,
            driver: DRIVER,
            device: DEVICE,
            kick,
            call: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        }],
    };
    (a, peek)
}

fn set_used_index(ram: &GuestRam, idx: u16) {
    ram.memory()
        .write_obj(idx.to_le(), GuestAddress(DEVICE + 2))
        .unwrap();
}

/// Waits (bounded, for a loaded machine) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

const NEGOTIATION: [&str; 5] = [
    "SET_OWNER",
    "GET_FEATURES",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES 0x9209",
    "GET_QUEUE_NUM",
];

fn ring_start(base: u16) -> Vec<String> {
    vec![
        "SET_VRING_NUM 0 16".into(),
        "SET_VRING_ADDR 0".into(),
        format!("SET_VRING_BASE 0 {base}"),
        "SET_VRING_CALL 0".into(),
        "SET_VRING_KICK 0".into(),
        "SET_VRING_ENABLE 0 true".into(),
    ]
}

/// The inode in "GET_INFLIGHT_FD ... -> ino".
fn region_of(get: &str) -> String {
    get.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn a_hang_up_is_followed_by_a_replay_in_order_from_the_used_index() {
    let ram = ram();
    let script = Script::default();
    let (first, first_end) = script.backend(BACKEND);
    let mut f = frontend(&ram, &script);
    let (a, kick) = activation();
    f.activate(a).unwrap();

    let log = lines(&first);
    assert_eq!(log[..5], NEGOTIATION);
    assert_eq!(log[5], format!("SET_FEATURES {BACKEND:#x}"));
    assert_eq!(log[6..8], ["GET_MAX_MEM_SLOTS", "ADD_MEM_REG"]);
    assert!(log[8].starts_with("GET_INFLIGHT_FD 1x16 -> "), "{log:?}");
    let region = region_of(&log[8]);
    assert_eq!(log[9], format!("SET_INFLIGHT_FD 4096 {region}"));
    assert_eq!(log[10..], ring_start(0), "a fresh driver starts at 0");
    assert!(kick.read().is_err(), "activation itself does not kick");

    // The guest has seen 7 completions when the backend dies.
    set_used_index(&ram, 7);
    script.attempts.lock().unwrap().clone_from(&0);
    drop(first_end);
    eventually("disconnected", || f.status() == Status::Disconnected);
    eventually("a few refused attempts", || script.attempts() >= 3);
    let (second, _second_end) = script.backend(BACKEND);
    eventually("reconnected", || f.status() == Status::Connected);

    let mut want: Vec<String> = NEGOTIATION.iter().map(|s| s.to_string()).collect();
    want.push(format!("SET_FEATURES {BACKEND:#x}"));
    want.extend(["GET_MAX_MEM_SLOTS".into(), "ADD_MEM_REG".into()]);
    // The same region, not a new one: it holds what the dead backend had in flight.
    want.push(format!("SET_INFLIGHT_FD 4096 {region}"));
    want.extend(ring_start(7));
    assert_eq!(lines(&second), want);
    assert_eq!(
        kick.read().unwrap(),
        1,
        "the ring is kicked after the replay"
    );
}

#[test]
fn a_backend_without_the_negotiated_features_fails_the_device() {
    let ram = ram();
    let script = Script::default();
    let (_first, first_end) = script.backend(BACKEND);
    let mut f = frontend(&ram, &script);
    f.activate(activation().0).unwrap();
    drop(first_end);
    let lacking = BACKEND & !feature(VIRTIO_RING_F_EVENT_IDX);
    let (second, _second_end) = script.backend(lacking);
    eventually("failed", || f.status() == Status::Failed);
    assert_eq!(lines(&second)[..5], NEGOTIATION, "no ring was started");
    assert_eq!(lines(&second).len(), 5);
    let tries = script.attempts();
    script.backend(BACKEND);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(script.attempts(), tries, "a failed device is not retried");
    assert!(matches!(f.activate(activation().0), Err(Error::Failed(_))));
}

#[test]
fn a_driver_started_while_the_backend_is_away_runs_once_it_is_back() {
    let ram = ram();
    let script = Script::default();
    let (_first, first_end) = script.backend(BACKEND);
    let mut f = frontend(&ram, &script);
    drop(first_end);
    eventually("disconnected", || f.status() == Status::Disconnected);
    let (a, kick) = activation();
    f.activate(a).unwrap();
    assert!(matches!(f.get_config(0, 8), Err(Error::Disconnected(_))));
    let (second, _second_end) = script.backend(BACKEND);
    eventually("reconnected", || f.status() == Status::Connected);
    let log = lines(&second);
    assert!(log[8].starts_with("GET_INFLIGHT_FD"), "{log:?}");
    assert_eq!(log[log.len() - 6..], ring_start(0));
    assert_eq!(kick.read().unwrap(), 1);
}

#[test]
fn a_driver_reset_stops_the_ring_and_the_next_driver_gets_a_fresh_region() {
    let ram = ram();
    let script = Script::default();
    let (log, _end) = script.backend(BACKEND);
    let mut f = frontend(&ram, &script);
    f.activate(activation().0).unwrap();
    f.reset();
    assert_eq!(
        lines(&log)[16..],
        ["SET_VRING_ENABLE 0 false", "GET_VRING_BASE 0"]
    );
    f.activate(activation().0).unwrap();
    let log = lines(&log);
    let gets = log.iter().filter(|l| l.starts_with("GET_INFLIGHT_FD"));
    assert_eq!(gets.count(), 2, "a new region for the new driver: {log:?}");
    assert_eq!(log[log.len() - 6..], ring_start(0));
}

#[test]
fn a_backend_that_accepts_and_never_answers_is_cut_off() {
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mute = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Takes every request, answers none; returns once the frontend shuts the socket.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let cfg = FrontendConfig {
        reply_timeout: Duration::from_millis(100),
        ..FrontendConfig::new(path, 1, 16)
    };
    let err = VhostUserFrontend::connect(cfg, ram().memory().clone())
        .err()
        .unwrap();
    let text = crate::error_chain(&err);
    assert!(text.starts_with("vhost-user GET_FEATURES to "), "{text}");
    mute.join().unwrap();
}
