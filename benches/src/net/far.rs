//! The far side of one run. `reflect`: nothing here (each path's own process turns frames
//! around). `netns`: a fresh network namespace holding a persistent TAP device and an
//! `AF_PACKET` reflector on it; the path's process attaches to the TAP from inside the
//! namespace (a thread that entered it, or a child started from one), so frames never touch
//! the host's own stack. Everything is removed when the side is dropped.

use backends::host_net::{self, FarCounts, FarEnd, FarMode, Link, NetNs};

use super::Far;

pub use backends::host_net::Error;

pub struct FarSide {
    // Dropped in this order: the reflector, the TAP, the namespace.
    reflector: Option<FarEnd>,
    tap: Option<Link>,
    ns: Option<NetNs>,
}

impl FarSide {
    pub fn new(far: Far) -> Result<FarSide, Error> {
        match far {
            Far::Reflect => Ok(FarSide {
                reflector: None,
                tap: None,
                ns: None,
            }),
            Far::Netns => {
                host_net::available()?;
                let ns = NetNs::create(&host_net::unique_name("iopathns"))?;
                let tap = Link::tap(&host_net::unique_name("iopt"), Some(&ns))?;
                let reflector = FarEnd::spawn(Some(&ns), tap.name(), FarMode::Reflect)?;
                Ok(FarSide {
                    reflector: Some(reflector),
                    tap: Some(tap),
                    ns: Some(ns),
                })
            }
        }
    }

    /// The TAP device the path attaches to (`netns` only).
    pub fn tap(&self) -> Option<&str> {
        self.tap.as_ref().map(Link::name)
    }

    /// Runs `f` where the path's process must live: inside the namespace, or right here.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        match &self.ns {
            Some(ns) => ns.run_in(f),
            None => Ok(f()),
        }
    }

    /// What the reflector saw so far (`netns` only).
    pub fn counts(&self) -> Option<FarCounts> {
        self.reflector.as_ref().map(FarEnd::counts)
    }
}
