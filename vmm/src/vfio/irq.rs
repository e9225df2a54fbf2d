//! MSI-X for a passthrough function, owned by the VMM as kernel VFIO expects: the guest
//! programs an emulated table and PBA (`pci::msix`), never the device's. When the guest enables
//! MSI-X, every vector gets an eventfd the device signals (SET_IRQS / VFIO_DEVICE_SET_IRQS),
//! and a relay thread raises the vector through the emulated table, which applies masking and
//! delivers with KVM_SIGNAL_MSI. A polling guest (the bench guest) never enables it.

use std::sync::atomic::AtomicU16;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::shadow::MsixLayout;
use super::transport::{self, Transport};
use crate::lock;
use crate::pci::msix::{MsiSink, Msix};
use crate::virtio::call_relay::{Call, CallRelay, Route};

const MSIX_ENABLE: u16 = 1 << 15;

pub struct MsixRouting {
    layout: MsixLayout,
    table: Arc<Mutex<Msix>>,
    sink: Arc<dyn MsiSink>,
    /// Present while the guest has MSI-X enabled and the device's vectors are routed.
    relay: Option<CallRelay>,
}

impl MsixRouting {
    pub fn new(layout: MsixLayout, sink: Arc<dyn MsiSink>) -> MsixRouting {
        MsixRouting {
            layout,
            table: Arc::new(Mutex::new(Msix::new(layout.vectors))),
            sink,
            relay: None,
        }
    }

    pub fn layout(&self) -> &MsixLayout {
        &self.layout
    }

    /// Serves a trapped read if it falls in the table or PBA; `false` otherwise.
    pub fn read(&self, bar: usize, offset: u64, data: &mut [u8]) -> bool {
        let l = &self.layout;
        if bar == l.table_bar && l.table().contains(&offset) {
            lock(&self.table).table_read(offset - l.table_offset, data);
        } else if bar == l.pba_bar && l.pba().contains(&offset) {
            lock(&self.table).pba_read(offset - l.pba_offset, data);
        } else {
            return false;
        }
        true
    }

    /// Serves a trapped write if it falls in the table or the (read-only) PBA.
    pub fn write(&self, bar: usize, offset: u64, data: &[u8]) -> bool {
        let l = &self.layout;
        if bar == l.table_bar && l.table().contains(&offset) {
            lock(&self.table).table_write(offset - l.table_offset, data, self.sink.as_ref());
            true
        } else {
            bar == l.pba_bar && l.pba().contains(&offset)
        }
    }

    /// Takes a new message control word: routes the device's vectors when the guest enables
    /// MSI-X, releases them when it disables it. Failures leave the guest without interrupts
    /// (logged), never the VMM without a device.
    pub fn control(&mut self, ctrl: u16, t: &mut dyn Transport, name: &str) {
        lock(&self.table).set_message_control(ctrl, self.sink.as_ref());
        match (ctrl & MSIX_ENABLE != 0, self.relay.is_some()) {
            (true, false) => {
                if let Err(e) = self.route(t) {
                    log::warn!("{name}: MSI-X vectors: {}", crate::error_chain(&e));
                }
            }
            (false, true) => self.release(t, name),
            _ => {}
        }
    }

    fn route(&mut self, t: &mut dyn Transport) -> Result<(), transport::Error> {
        let n = u32::from(self.layout.vectors).min(t.msix_vectors());
        let fds = (0..n)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| transport::Error::Other(format!("eventfd: {e}")))?;
        t.enable_msix(&fds.iter().collect::<Vec<_>>())?;
        let calls = fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| Call {
                queue: i as u16,
                fd,
            })
            .collect();
        // Eventfd i raises vector i.
        let route = Route {
            vectors: (0..n).map(|v| AtomicU16::new(v as u16)).collect(),
            msix: self.table.clone(),
            sink: self.sink.clone(),
        };
        match CallRelay::spawn(calls, route) {
            Ok(relay) => self.relay = Some(relay),
            Err(e) => {
                let _ = t.disable_msix();
                return Err(transport::Error::Other(format!("relay thread: {e}")));
            }
        }
        Ok(())
    }

    /// Stops the relay and takes the eventfds back from the device.
    pub fn release(&mut self, t: &mut dyn Transport, name: &str) {
        if self.relay.take().is_some() {
            if let Err(e) = t.disable_msix() {
                log::warn!("{name}: disabling MSI-X: {}", crate::error_chain(&e));
            }
        }
    }
}
