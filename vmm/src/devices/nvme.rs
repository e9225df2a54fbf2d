//! The emulated NVMe device: `backends::nvme::Controller` behind a PCI function. BAR0 holds
//! registers and doorbells, BAR4 the MSI-X table and PBA; every access is a trapped MMIO exit,
//! which is what the emulated path measures. A completion thread posts CQEs when the engine
//! finishes I/O, so a polling guest sees them without exiting.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use backends::engine::BlockEngine;
use backends::nvme::{Controller, ControllerConfig};
use vmm_sys_util::eventfd::EventFd;

use crate::lock;
use crate::pci::msix::{MsiSink, Msix};
use crate::pci::{Bar, BarKind, ConfigSpace, PciDevice, PciIds};

const BAR_REGS: usize = 0;
const BAR_MSIX: usize = 4;
const MSIX_PBA_OFFSET: u64 = 0x1000;
const MSIX_BAR_SIZE: u64 = 0x2000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PCI configuration")]
    Config(#[source] crate::pci::config::Error),
    #[error("creating the completion thread's stop eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("spawning the completion thread failed")]
    Spawn(#[source] std::io::Error),
}

pub struct NvmeDevice {
    config: ConfigSpace,
    msix_cap: usize,
    ctrl: Arc<Mutex<Controller>>,
    msix: Arc<Mutex<Msix>>,
    msi: Arc<dyn MsiSink>,
    /// Trapped BAR accesses: each is one exit to the VMM.
    bar_exits: Arc<AtomicU64>,
    completer: Option<Completer>,
}

/// The thread that posts completions when the engine signals its eventfd.
struct Completer {
    stop: EventFd,
    handle: JoinHandle<()>,
}

impl NvmeDevice {
    pub fn new(
        cfg: ControllerConfig,
        engine: Box<dyn BlockEngine>,
        dma: Arc<iommu::AddressSpace>,
        msi: Arc<dyn MsiSink>,
    ) -> Result<NvmeDevice, Error> {
        let vectors = cfg.interrupt_vectors.max(1);
        let mut config = ConfigSpace::new(PciIds {
            // QEMU's NVMe IDs: every NVMe driver binds by class, these only name the device.
            vendor: 0x1b36,
            device: 0x0010,
            class: 0x01,
            subclass: 0x08,
            prog_if: 0x02,
            revision: 2,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        let bar = |size| Bar {
            kind: BarKind::Mem64 {
                prefetchable: false,
            },
            size,
        };
        config
            .add_bar(BAR_REGS, bar(Controller::BAR0_SIZE))
            .map_err(Error::Config)?;
        config
            .add_bar(BAR_MSIX, bar(MSIX_BAR_SIZE))
            .map_err(Error::Config)?;
        let msix = Msix::new(vectors);
        let (body, writable) =
            msix.capability(BAR_MSIX as u8, 0, BAR_MSIX as u8, MSIX_PBA_OFFSET as u32);
        let msix_cap = config
            .add_capability(&body, &writable)
            .map_err(Error::Config)?;

        let mut ctrl = Controller::new(cfg, engine, dma);
        let msix = Arc::new(Mutex::new(msix));
        {
            let (msix, msi) = (msix.clone(), msi.clone());
            ctrl.set_interrupt(Box::new(move |vector| {
                lock(&msix).notify(vector, msi.as_ref());
            }));
        }
        let completion_fd = ctrl.completion_fd();
        let ctrl = Arc::new(Mutex::new(ctrl));
        let completer = match completion_fd {
            Some(fd) => Some(Completer::spawn(ctrl.clone(), fd)?),
            None => None,
        };
        Ok(NvmeDevice {
            config,
            msix_cap,
            ctrl,
            msix,
            msi,
            bar_exits: Arc::default(),
            completer,
        })
    }

    /// Exits taken on this device's BARs, readable while the guest runs.
    pub fn exit_counter(&self) -> Arc<AtomicU64> {
        self.bar_exits.clone()
    }

    /// The controller, for statistics.
    pub fn controller(&self) -> Arc<Mutex<Controller>> {
        self.ctrl.clone()
    }
}

impl PciDevice for NvmeDevice {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_written(&mut self, reg: usize) {
        if reg == self.msix_cap / 4 {
            let ctrl = (self.config.read(reg) >> 16) as u16;
            lock(&self.msix).set_message_control(ctrl, self.msi.as_ref());
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        self.bar_exits.fetch_add(1, Ordering::Relaxed);
        match bar {
            BAR_REGS => lock(&self.ctrl).bar_read(offset, data),
            BAR_MSIX if offset < MSIX_PBA_OFFSET => lock(&self.msix).table_read(offset, data),
            BAR_MSIX => lock(&self.msix).pba_read(offset - MSIX_PBA_OFFSET, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.bar_exits.fetch_add(1, Ordering::Relaxed);
        match bar {
            BAR_REGS => {
                let mut c = lock(&self.ctrl);
                c.bar_write(offset, data);
                // Engines without a completion eventfd (null) finish at submit: post now.
                c.process_completions();
            }
            BAR_MSIX if offset < MSIX_PBA_OFFSET => {
                lock(&self.msix).table_write(offset, data, self.msi.as_ref())
            }
            _ => {}
        }
    }
}

impl Completer {
    fn spawn(ctrl: Arc<Mutex<Controller>>, fd: RawFd) -> Result<Completer, Error> {
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let stop_fd = stop.as_raw_fd();
        let handle = thread::Builder::new()
            .name("nvme-completion".into())
            .spawn(move || completion_loop(&ctrl, fd, stop_fd))
            .map_err(Error::Spawn)?;
        Ok(Completer { stop, handle })
    }
}

fn completion_loop(ctrl: &Mutex<Controller>, fd: RawFd, stop: RawFd) {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!(
                "nvme completion thread: poll: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into `v` from the engine's non-blocking eventfd.
            unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
            lock(ctrl).process_completions();
        }
    }
}

impl Drop for NvmeDevice {
    fn drop(&mut self) {
        if let Some(c) = self.completer.take() {
            let _ = c.stop.write(1);
            let _ = c.handle.join();
        }
    }
}
