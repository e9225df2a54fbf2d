//! SIGTERM and SIGINT as an event: blocked in every thread, read from a signalfd by one
//! watcher thread, which records the request, wakes the accept loop and runs a hook (shutting
//! down the current connection).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

type Hook = Box<dyn Fn() + Send>;

struct Inner {
    requested: AtomicBool,
    /// Readable once termination was requested.
    wake: EventFd,
    hook: Mutex<Option<Hook>>,
}

/// See the module documentation.
pub struct Termination {
    inner: Arc<Inner>,
}

impl Termination {
    /// Blocks SIGTERM and SIGINT in the calling thread and starts the watcher. Call it before
    /// starting any other thread: threads inherit the mask, and a thread that did not block
    /// the signals would take the default action (exit without draining).
    pub fn install() -> io::Result<Self> {
        // SAFETY: `sigset_t` is plain data, initialised by `sigemptyset` before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset; the calls only write to it and to the thread mask.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: plain FFI call with a valid sigset; the result is checked.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let signals = unsafe { OwnedFd::from_raw_fd(fd) };
        let inner = Arc::new(Inner {
            requested: AtomicBool::new(false),
            wake: EventFd::new(EFD_NONBLOCK)?,
            hook: Mutex::new(None),
        });
        let watcher = inner.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || watch(&signals, &watcher))?;
        Ok(Termination { inner })
    }

    pub fn requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Becomes readable once termination was requested.
    pub fn wake_fd(&self) -> RawFd {
        self.inner.wake.as_raw_fd()
    }

    /// Runs `hook` when termination is requested (at once if it already was). `None` removes
    /// the hook.
    pub fn set_hook(&self, hook: Option<Hook>) {
        let mut slot = self
            .inner
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = hook;
        if self.requested() {
            if let Some(hook) = slot.as_ref() {
                hook();
            }
        }
    }
}

fn watch(signals: &OwnedFd, inner: &Inner) {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    loop {
        // SAFETY: reads at most `info.len()` bytes into `info` from the signalfd we own.
        let n = unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if n == info.len() as isize {
            break;
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        log::error!(
            "reading the signalfd failed: {}",
            io::Error::last_os_error()
        );
        return;
    }
    log::info!("termination requested: draining and exiting");
    inner.requested.store(true, Ordering::SeqCst);
    if let Err(e) = inner.wake.write(1) {
        log::error!("cannot wake the accept loop: {e}");
    }
    if let Some(hook) = inner
        .hook
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        hook();
    }
}
