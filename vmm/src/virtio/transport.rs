//! The virtio-pci modern transport (virtio 1.x section 4.1): a PCI function whose vendor
//! capabilities point into BAR0 (common configuration, ISR, device configuration, notify) and
//! whose MSI-X table and PBA sit in BAR2. Device logic stays behind [`VirtioDevice`].
//!
//! BAR0 layout (16 KiB): common @0, ISR @0x1000, device cfg @0x2000, notify @0x3000 with a
//! notify_off_multiplier of 4 (queue n notifies at 0x3000 + 4n).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::call_relay::{Call, CallRelay, Route};
use super::common_cfg::{self, Action, CommonConfig};
use super::device::{Activation, QueueActivation, VirtioDevice};
use super::notify::{self, IoEventRegistrar, NotifyEvents};
use crate::lock;
use crate::pci::config::COMMAND_MEMORY;
use crate::pci::msix::{MsiSink, Msix};
use crate::pci::{Bar, BarKind, ConfigSpace, PciDevice, PciIds};

const BAR_VIRTIO: usize = 0;
const BAR_MSIX: usize = 2;
const BAR_VIRTIO_SIZE: u64 = 0x4000;
const BAR_MSIX_SIZE: u64 = 0x2000;
const MSIX_PBA_OFFSET: u64 = 0x1000;

const COMMON_OFFSET: u64 = 0;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
/// Each region gets a page: the notify region holds at most this many queues.
const REGION_SIZE: u64 = 0x1000;
const MAX_QUEUES: usize = (REGION_SIZE / NOTIFY_MULTIPLIER as u64) as usize;

/// virtio_pci_cap cfg_type values (section 4.1.4).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_VENDOR: u8 = 0x09;

/// ISR bit 1: configuration changed (here: the device needs a reset).
const ISR_CONFIG: u8 = 2;

const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + the virtio device type.
const MODERN_DEVICE_BASE: u16 = 0x1040;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PCI configuration")]
    Config(#[source] crate::pci::config::Error),
    #[error(
        "a virtio device with {0} queues does not fit the notify region (at most {MAX_QUEUES})"
    )]
    TooManyQueues(usize),
    #[error("device configuration of {0} bytes does not fit its {REGION_SIZE}-byte region")]
    ConfigTooBig(usize),
    #[error("queue notifications")]
    Notify(#[source] notify::Error),
    #[error("creating queue {0}'s call eventfd failed")]
    CallEventFd(u16, #[source] std::io::Error),
}

pub struct VirtioPciDevice {
    config: ConfigSpace,
    msix_cap: usize,
    common: CommonConfig,
    device: Box<dyn VirtioDevice>,
    notify: NotifyEvents,
    calls: Vec<EventFd>,
    msix: Arc<Mutex<Msix>>,
    msi: Arc<dyn MsiSink>,
    relay: Option<CallRelay>,
    isr: u8,
    active: bool,
    /// Trapped BAR accesses: each is one exit to the VMM. Notifies caught by an ioeventfd
    /// never show up here.
    bar_exits: Arc<AtomicU64>,
}

impl VirtioPciDevice {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        ioevents: Arc<dyn IoEventRegistrar>,
        msi: Arc<dyn MsiSink>,
    ) -> Result<VirtioPciDevice, Error> {
        let queues = device.queue_max_sizes().len();
        if queues > MAX_QUEUES {
            return Err(Error::TooManyQueues(queues));
        }
        if device.config_len() as u64 > REGION_SIZE {
            return Err(Error::ConfigTooBig(device.config_len()));
        }
        let kind = device.device_type();
        let (class, subclass) = match kind {
            super::DEVICE_TYPE_BLOCK => (0x01, 0x80),
            super::DEVICE_TYPE_NET => (0x02, 0x00),
            _ => (0xff, 0x00),
        };
        let mut config = ConfigSpace::new(PciIds {
            vendor: VIRTIO_VENDOR,
            device: MODERN_DEVICE_BASE + kind,
            class,
            subclass,
            prog_if: 0,
            // Revision 1 marks a modern-only (non-transitional) device.
            revision: 1,
            subsystem_vendor: VIRTIO_VENDOR,
            subsystem: 0x1100,
        });
        let bar = |size| Bar {
            kind: BarKind::Mem64 {
                prefetchable: false,
            },
            size,
        };
        config
            .add_bar(BAR_VIRTIO, bar(BAR_VIRTIO_SIZE))
            .map_err(Error::Config)?;
        config
            .add_bar(BAR_MSIX, bar(BAR_MSIX_SIZE))
            .map_err(Error::Config)?;
        // One vector per queue and one for configuration changes.
        let msix = Msix::new(queues as u16 + 1);
        let (body, writable) =
            msix.capability(BAR_MSIX as u8, 0, BAR_MSIX as u8, MSIX_PBA_OFFSET as u32);
        let msix_cap = config
            .add_capability(&body, &writable)
            .map_err(Error::Config)?;
        let notify_len = queues as u32 * NOTIFY_MULTIPLIER;
        for (kind, offset, len) in [
            (CAP_COMMON, COMMON_OFFSET, common_cfg::LEN as u32),
            (CAP_ISR, ISR_OFFSET, 1),
            (CAP_DEVICE, DEVICE_OFFSET, device.config_len() as u32),
        ] {
            let body = vendor_cap(kind, offset as u32, len, None);
            config
                .add_capability(&body, &[0; 16])
                .map_err(Error::Config)?;
        }
        let body = vendor_cap(
            CAP_NOTIFY,
            NOTIFY_OFFSET as u32,
            notify_len,
            Some(NOTIFY_MULTIPLIER),
        );
        config
            .add_capability(&body, &[0; 20])
            .map_err(Error::Config)?;

        let notify = NotifyEvents::new(
            queues as u16,
            ioevents,
            NOTIFY_OFFSET,
            NOTIFY_MULTIPLIER.into(),
        )
        .map_err(Error::Notify)?;
        let calls = (0..queues as u16)
            .map(|q| EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::CallEventFd(q, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VirtioPciDevice {
            config,
            msix_cap,
            common: CommonConfig::new(
                device.features(),
                device.queue_max_sizes(),
                msix.vectors() as u16,
            ),
            device,
            notify,
            calls,
            msix: Arc::new(Mutex::new(msix)),
            msi,
            relay: None,
            isr: 0,
            active: false,
            bar_exits: Arc::default(),
        })
    }

    /// Exits taken on this device's BARs, readable while the guest runs.
    pub fn exit_counter(&self) -> Arc<AtomicU64> {
        self.bar_exits.clone()
    }

    /// Where BAR0 decodes now, if it does.
    fn bar_base(&self) -> Option<u64> {
        let decoding = self.config.command() & COMMAND_MEMORY != 0;
        let base = self.config.bar_address(BAR_VIRTIO).unwrap_or(0);
        (decoding && base != 0).then_some(base)
    }

    fn activate(&mut self) {
        if self.active {
            return;
        }
        match self.start() {
            Ok(relay) => {
                self.relay = Some(relay);
                self.active = true;
            }
            Err(e) => {
                log::error!("virtio: {}", crate::error_chain(e.as_ref()));
                // The driver sees DEVICE_NEEDS_RESET; with a config vector it is also told.
                self.common.set_needs_reset();
                self.isr |= ISR_CONFIG;
                let v = self.common.config_vector();
                lock(&self.msix).notify(v, self.msi.as_ref());
            }
        }
    }

    /// Activates the device and starts relaying its calls; on failure the device is reset, so
    /// queues a failed activation had already started do not keep running.
    fn start(&mut self) -> Result<CallRelay, Box<dyn std::error::Error + Send + Sync>> {
        let mut queues = Vec::new();
        let mut calls = Vec::new();
        for (i, q) in self.common.queues().iter().enumerate() {
            if !q.enabled {
                continue;
            }
            let index = i as u16;
            let call = &self.calls[i];
            queues.push(QueueActivation {
                index,
                size: q.size,
                desc: q.desc,
                driver: q.driver,
                device: q.device,
                kick: self.notify.kick_fd(index)?,
                call: call.try_clone()?,
            });
            calls.push(Call {
                queue: index,
                fd: call.try_clone()?,
            });
        }
        let activation = Activation {
            features: self.common.driver_features(),
            queues,
        };
        if let Err(e) = self.device.activate(activation) {
            self.device.reset();
            return Err(Box::new(e));
        }
        let route = Route {
            vectors: self.common.queue_vectors(),
            msix: self.msix.clone(),
            sink: self.msi.clone(),
        };
        CallRelay::spawn(calls, route).map_err(|e| {
            self.device.reset();
            Box::new(e) as Box<_>
        })
    }

    /// After the driver wrote 0 to device_status (the common configuration has reset itself).
    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.relay = None;
        self.active = false;
        self.isr = 0;
        // Notifications and signals from before the reset mean nothing to the next driver.
        self.notify.drain();
        for c in &self.calls {
            let _ = c.read();
        }
    }

    fn virtio_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match region(offset, data.len()) {
            Some((COMMON_OFFSET, at)) => self.common.read(at, data),
            Some((ISR_OFFSET, 0)) => {
                // Reading the ISR clears it (section 4.1.4.5).
                data[0] = std::mem::take(&mut self.isr);
            }
            Some((DEVICE_OFFSET, at)) if fits(at, data.len(), self.device.config_len()) => {
                self.device.read_config(at, data)
            }
            _ => {}
        }
    }

    fn virtio_write(&mut self, offset: u64, data: &[u8]) {
        match region(offset, data.len()) {
            Some((COMMON_OFFSET, at)) => match self.common.write(at, data) {
                Action::None => {}
                Action::Reset => self.reset(),
                Action::Activate => self.activate(),
            },
            Some((DEVICE_OFFSET, at)) if fits(at, data.len(), self.device.config_len()) => {
                self.device.write_config(at, data)
            }
            // Reached only while no ioeventfd covers the address (or for a misaligned write).
            Some((NOTIFY_OFFSET, at)) if at.is_multiple_of(NOTIFY_MULTIPLIER.into()) => {
                let q = at / u64::from(NOTIFY_MULTIPLIER);
                if q < self.calls.len() as u64 {
                    self.notify.kick(q as u16);
                }
            }
            _ => {}
        }
    }
}

/// A virtio_pci_cap (16 bytes) or virtio_pci_notify_cap (20 bytes) body.
fn vendor_cap(kind: u8, offset: u32, len: u32, multiplier: Option<u32>) -> Vec<u8> {
    let mut b = vec![CAP_VENDOR, 0, 0, kind, BAR_VIRTIO as u8, 0, 0, 0];
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    if let Some(m) = multiplier {
        b.extend_from_slice(&m.to_le_bytes());
    }
    b[2] = b.len() as u8;
    b
}

/// The region (its start) and the offset inside it of an access that stays within one region.
fn region(offset: u64, len: usize) -> Option<(u64, u64)> {
    let start = offset - offset % REGION_SIZE;
    let at = offset - start;
    fits(at, len, REGION_SIZE as usize).then_some((start, at))
}

fn fits(at: u64, len: usize, size: usize) -> bool {
    at.checked_add(len as u64)
        .is_some_and(|end| end <= size as u64)
}

impl PciDevice for VirtioPciDevice {
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
        // The root has just (un)mapped the BARs for a command or BAR write: the ioeventfds
        // follow BAR0 to wherever it decodes now.
        if reg == 1 || ConfigSpace::is_bar_reg(reg) {
            let base = self.bar_base();
            self.notify.follow(base);
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        self.bar_exits.fetch_add(1, Ordering::Relaxed);
        match bar {
            BAR_VIRTIO => self.virtio_read(offset, data),
            BAR_MSIX if offset < MSIX_PBA_OFFSET => lock(&self.msix).table_read(offset, data),
            BAR_MSIX => lock(&self.msix).pba_read(offset - MSIX_PBA_OFFSET, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.bar_exits.fetch_add(1, Ordering::Relaxed);
        match bar {
            BAR_VIRTIO => self.virtio_write(offset, data),
            BAR_MSIX if offset < MSIX_PBA_OFFSET => {
                lock(&self.msix).table_write(offset, data, self.msi.as_ref())
            }
            _ => {}
        }
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        // Stop the relay before the device: it reads eventfds the device's backend signals.
        self.relay = None;
        if self.active {
            self.device.reset();
        }
    }
}

#[cfg(test)]
mod tests;
