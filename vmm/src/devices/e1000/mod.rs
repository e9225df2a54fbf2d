//! The emulated Intel 82540EM (PCI 8086:100e), what QEMU calls `e1000`: BAR0 registers
//! ([`nic`]), the EEPROM and PHY Linux probes, legacy and TCP/IP-context TX descriptors, legacy
//! RX descriptors. Every register access is a trapped MMIO exit; a TDT write runs the TX ring
//! on the vCPU thread, so each doorbell costs one exit plus the frame's trip to the backend.
//! Received frames come from an RX thread that waits on the backend and fills the RX ring
//! under the device lock.
//!
//! Interrupts: ICR & IMS drive an INTx line (pin A), delivered as an irqfd edge on
//! [`INTX_GSI`] when it asserts. The bench guest masks everything and polls; a Linux guest
//! would also need the line routed in the MP table, which the VMM does not describe yet.

mod backend;
mod eeprom;
mod nic;
mod phy;
mod regs;
mod ring;
mod rx;
mod stats;
mod tx;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

pub use self::backend::{FrameBackend, Reflector, REFLECT_QUEUE_FRAMES};
pub use self::nic::{InterruptLine, Nic};
pub use self::regs::BAR0_SIZE;
pub use self::stats::Counters;
use crate::lock;
use crate::net::{NetBackend, NetConfig, DEFAULT_MAC};
use crate::pci::{Bar, BarKind, ConfigSpace, PciDevice, PciIds};
use crate::vm::Vm;

/// The GSI the INTx line is wired to (a PCI line on a PC's IOAPIC).
pub const INTX_GSI: u32 = 11;
const BAR_REGS: usize = 0;
/// The RX thread's pause after a backend error, so a broken TAP does not spin it.
const RX_ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PCI configuration")]
    Config(#[source] crate::pci::config::Error),
    #[error("opening TAP device {0:?}")]
    Tap(String, #[source] backends::net::tap::Error),
    #[error("the e1000 carries frames of a TAP device or the reflector, not {0}")]
    Backend(String),
    #[error("creating an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("guest RAM as a DMA space")]
    Dma(#[source] crate::memory::Error),
    #[error("wiring the interrupt line")]
    Irq(#[source] crate::vm::Error),
    #[error("spawning the RX thread")]
    Spawn(#[source] std::io::Error),
}

pub struct E1000Device {
    config: ConfigSpace,
    nic: Arc<Mutex<Nic>>,
    /// Trapped BAR accesses: each is one exit to the VMM.
    bar_exits: Arc<AtomicU64>,
    rx: Option<RxThread>,
}

impl E1000Device {
    /// The NIC `cfg` describes in `vm`: its backend opened, DMA through guest RAM, INTx wired.
    pub fn attach(cfg: &NetConfig, vm: &Vm) -> Result<E1000Device, Error> {
        let backend: Arc<dyn FrameBackend> = match &cfg.backend {
            NetBackend::Tap(name) => {
                let mut taps = backends::net::Tap::open(name, 1, false)
                    .map_err(|e| Error::Tap(name.clone(), e))?;
                Arc::new(taps.remove(0))
            }
            NetBackend::Reflect => Arc::new(Reflector::new().map_err(Error::EventFd)?),
            other => return Err(Error::Backend(other.to_string())),
        };
        let dma = Arc::new(vm.ram().dma_space().map_err(Error::Dma)?);
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm.register_irqfd(&irq, INTX_GSI).map_err(Error::Irq)?;
        let nic = Nic::new(cfg.mac.unwrap_or(DEFAULT_MAC), dma, backend);
        E1000Device::new(nic, Some(Arc::new(EdgeIrq(irq))))
    }

    /// A device around `nic`, with its RX thread running.
    pub fn new(mut nic: Nic, irq: Option<Arc<dyn InterruptLine>>) -> Result<E1000Device, Error> {
        let mut config = ConfigSpace::new(PciIds {
            vendor: 0x8086,
            device: 0x100e,
            class: 0x02,
            subclass: 0x00,
            prog_if: 0,
            revision: 3,
            subsystem_vendor: 0x8086,
            subsystem: 0x001e,
        });
        config
            .add_bar(
                BAR_REGS,
                Bar {
                    kind: BarKind::Mem32,
                    size: BAR0_SIZE,
                },
            )
            .map_err(Error::Config)?;
        if let Some(irq) = irq {
            nic.set_interrupt_line(irq);
            config.set_interrupt(1, INTX_GSI as u8);
        }
        let backend = nic.backend();
        let nic = Arc::new(Mutex::new(nic));
        let rx = RxThread::spawn(nic.clone(), backend)?;
        Ok(E1000Device {
            config,
            nic,
            bar_exits: Arc::default(),
            rx: Some(rx),
        })
    }

    /// Exits taken on this device's BAR, readable while the guest runs.
    pub fn exit_counter(&self) -> Arc<AtomicU64> {
        self.bar_exits.clone()
    }

    /// The model, for its drop counters.
    pub fn nic(&self) -> Arc<Mutex<Nic>> {
        self.nic.clone()
    }
}

impl PciDevice for E1000Device {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        self.bar_exits.fetch_add(1, Ordering::Relaxed);
        if bar != BAR_REGS || data.len() > 4 {
            data.fill(0);
            return;
        }
        // Narrow reads see their bytes of the dword (with its read side effects).
        let v = lock(&self.nic).read(offset & !3).to_le_bytes();
        let at = (offset & 3) as usize;
        let n = data.len().min(4 - at);
        data.fill(0);
        data[..n].copy_from_slice(&v[at..at + n]);
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.bar_exits.fetch_add(1, Ordering::Relaxed);
        // The 82540EM's registers take 32-bit writes; drivers issue nothing else.
        let Ok(v) = <[u8; 4]>::try_from(data) else {
            log::debug!("e1000: ignored {}-byte write at {offset:#x}", data.len());
            return;
        };
        if bar == BAR_REGS && offset & 3 == 0 {
            lock(&self.nic).write(offset, u32::from_le_bytes(v));
        }
    }
}

impl Drop for E1000Device {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            let _ = rx.stop.write(1);
            let _ = rx.handle.join();
        }
        let c = lock(&self.nic).counters();
        log::info!("e1000: {c:?}");
    }
}

/// The INTx line as an irqfd: one edge each time it asserts.
struct EdgeIrq(EventFd);

impl InterruptLine for EdgeIrq {
    fn set_level(&self, asserted: bool) {
        if asserted {
            let _ = self.0.write(1);
        }
    }
}

/// Waits on the backend and moves frames into the RX ring.
struct RxThread {
    stop: EventFd,
    handle: JoinHandle<()>,
}

impl RxThread {
    fn spawn(nic: Arc<Mutex<Nic>>, backend: Arc<dyn FrameBackend>) -> Result<RxThread, Error> {
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let stop_fd = stop.as_raw_fd();
        let handle = thread::Builder::new()
            .name("e1000-rx".into())
            .spawn(move || rx_loop(&nic, backend.as_ref(), stop_fd))
            .map_err(Error::Spawn)?;
        Ok(RxThread { stop, handle })
    }
}

fn rx_loop(nic: &Mutex<Nic>, backend: &dyn FrameBackend, stop: RawFd) {
    let mut fds = [
        libc::pollfd {
            fd: backend.rx_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // One byte more than the longest frame the NIC takes: a frame that fills it is oversized.
    let mut buf = vec![0u8; rx::MAX_LONG_FRAME + 1];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("e1000 RX thread: poll: {e}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        loop {
            match backend.recv(&mut buf) {
                Ok(Some(n)) => {
                    lock(nic).receive(&buf[..n]);
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("e1000 RX: backend: {e}");
                    thread::sleep(RX_ERROR_PAUSE);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
