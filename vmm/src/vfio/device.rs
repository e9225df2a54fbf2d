//! The passthrough PCI function: a [`Transport`] behind our PCI root.
//!
//! - Configuration space: the shadow ([`super::shadow`]); BAR sizing and placement are the
//!   VMM's, the command register is forwarded to the device (INTx kept disabled), MSI-X
//!   message control drives interrupt routing ([`super::irq`]).
//! - BARs: mmappable pieces are KVM memory slots ([`super::maps`]) that follow the BAR; the
//!   rest exits and is forwarded as region reads and writes, except the MSI-X table and PBA,
//!   which the VMM emulates so the guest never programs the device's vectors.
//! - DMA: all guest RAM is mapped for the device at creation (IOVA = GPA) and unmapped at
//!   [`VfioPciDevice::shutdown`].
//! - Loss: an access that finds the device gone (or [`VfioPciDevice::fail`], from the hangup
//!   watch) marks it failed ([`super::health`]); from then on it reads as a surprise-removed
//!   function: all ones, writes dropped, no BAR pages mapped into the guest.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::health::Health;
use super::irq::MsixRouting;
use super::maps::{self, BarMaps};
use super::plan::{self, Piece};
use super::shadow::{self, BarInfo, MsixLayout};
use super::slots::MemorySlots;
use super::transport::{self, DmaWindow, Transport};
use crate::pci::config::{COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_IO, COMMAND_MEMORY};
use crate::pci::msix::MsiSink;
use crate::pci::{BarKind, ConfigSpace, PciDevice};

/// The command register's byte offset and dword index.
const COMMAND_OFFSET: u64 = 0x04;
const COMMAND_REG: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("resetting the device failed")]
    Reset(#[source] transport::Error),
    #[error("reading the device's configuration failed")]
    Probe(#[source] shadow::Error),
    #[error("writing the device's command register failed")]
    Command(#[source] transport::Error),
    #[error("mapping the device's BARs failed")]
    Maps(#[source] maps::Error),
    #[error("guest RAM at {0:#x} is not backed by a file the device could map")]
    RamNotShared(u64),
    #[error("mapping guest RAM {gpa:#x}+{len:#x} for the device's DMA failed")]
    Dma {
        gpa: u64,
        len: u64,
        #[source]
        source: transport::Error,
    },
}

/// What the device gets from the VM.
pub struct Resources {
    pub slots: Arc<dyn MemorySlots>,
    pub msi: Arc<dyn MsiSink>,
    /// Guest RAM, mapped for the device's DMA; the device keeps this clone (and so the RAM
    /// mapping) until it has unmapped it.
    pub ram: GuestMemoryMmap,
}

pub struct VfioPciDevice {
    name: String,
    /// `None` once shut down.
    transport: Option<Box<dyn Transport>>,
    config: ConfigSpace,
    bars: [Option<BarInfo>; 6],
    msix: Option<MsixRouting>,
    maps: Option<BarMaps>,
    /// Guest RAM windows mapped for DMA: (gpa, len).
    dma: Vec<(u64, u64)>,
    ram: Option<GuestMemoryMmap>,
    /// Trapped BAR accesses: each is one exit to the VMM.
    exits: Arc<AtomicU64>,
    health: Arc<Health>,
}

impl VfioPciDevice {
    /// Resets the device, builds the guest's view of it, maps its mmappable BAR pieces and
    /// guest RAM for its DMA. `name` says which device in logs and errors.
    pub fn new(
        name: String,
        mut transport: Box<dyn Transport>,
        res: Resources,
    ) -> Result<VfioPciDevice, Error> {
        transport.reset().map_err(Error::Reset)?;
        let shadow = shadow::probe(transport.as_mut()).map_err(Error::Probe)?;
        // Quiet until the guest enables it: no decoding, no DMA, never INTx.
        transport
            .config_write(COMMAND_OFFSET, &COMMAND_INTX_DISABLE.to_le_bytes())
            .map_err(Error::Command)?;
        let plans = plans(transport.as_ref(), &shadow.bars, shadow.msix.as_ref());
        let maps = BarMaps::new(transport.as_ref(), &plans, res.slots).map_err(Error::Maps)?;
        let mut dev = VfioPciDevice {
            health: Health::new(name.clone()),
            name,
            transport: Some(transport),
            config: shadow.config,
            bars: shadow.bars,
            msix: shadow.msix.map(|l| MsixRouting::new(l, res.msi)),
            maps: Some(maps),
            dma: Vec::new(),
            ram: Some(res.ram),
            exits: Arc::default(),
        };
        // On failure `dev` is dropped, which unmaps what was mapped.
        dev.map_ram()?;
        Ok(dev)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Exits taken on this device's trapped BAR ranges, readable while the guest runs.
    pub fn exit_counter(&self) -> Arc<AtomicU64> {
        self.exits.clone()
    }

    /// Whether (and why) the device failed, readable while the guest runs.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// See [`Transport::hangup_fd`] (none once shut down).
    pub fn hangup_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.transport.as_ref()?.hangup_fd()
    }

    /// Marks the device failed (logged once) and takes its BAR pages out of the guest, so
    /// that every access traps and reads as a removed function.
    pub fn fail(&mut self, reason: &str) {
        self.health.fail(reason);
        self.maps = None;
    }

    /// Fails the device if `e` says it is gone; returns whether it did.
    fn check_lost(&mut self, e: &transport::Error) -> bool {
        let lost = e.device_lost();
        if lost {
            self.fail(&crate::error_chain(e));
        }
        lost
    }

    /// BAR pieces mapped into the guest now: (BAR, guest address, length).
    pub fn mapped(&self) -> Vec<(usize, u64, u64)> {
        self.maps.as_ref().map_or_else(Vec::new, BarMaps::mapped)
    }

    fn map_ram(&mut self) -> Result<(), Error> {
        let (Some(t), Some(ram)) = (self.transport.as_mut(), self.ram.as_ref()) else {
            return Ok(());
        };
        for region in ram.iter() {
            let gpa = region.start_addr().0;
            let fo = region.file_offset().ok_or(Error::RamNotShared(gpa))?;
            let w = DmaWindow {
                gpa,
                len: region.len(),
                host: region.as_ptr(),
                fd: fo.file().as_fd(),
                fd_offset: fo.start(),
            };
            // SAFETY: `self.ram` is a clone of guest memory: its mappings and files live as
            // long as it does, and `shutdown` unmaps every window before letting it go.
            unsafe { t.dma_map(&w) }.map_err(|source| Error::Dma {
                gpa,
                len: w.len,
                source,
            })?;
            self.dma.push((gpa, w.len));
        }
        Ok(())
    }

    /// Where each memory BAR decodes now (none while memory decoding is off).
    fn bases(&self) -> [Option<u64>; 6] {
        let mem = self.config.command() & COMMAND_MEMORY != 0;
        let mut bases = [None; 6];
        for (i, base) in bases.iter_mut().enumerate() {
            let is_mem = self.bars[i].is_some_and(|b| b.kind != BarKind::Io);
            if mem && is_mem {
                *base = self.config.bar_address(i).filter(|&a| a != 0);
            }
        }
        bases
    }

    fn forward_command(&mut self) {
        if self.health.failed() {
            return;
        }
        let keep = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER;
        let value = (self.config.command() & keep) | COMMAND_INTX_DISABLE;
        let Some(t) = self.transport.as_mut() else {
            return;
        };
        if let Err(e) = t.config_write(COMMAND_OFFSET, &value.to_le_bytes()) {
            if !self.check_lost(&e) {
                log::warn!(
                    "{}: command register: {}",
                    self.name,
                    crate::error_chain(&e)
                );
            }
        }
    }

    fn follow_bars(&mut self) {
        if self.health.failed() {
            return;
        }
        let bases = self.bases();
        if let Some(maps) = self.maps.as_mut() {
            maps.follow(&bases);
        }
    }

    fn msix_control(&mut self) {
        if self.health.failed() {
            return;
        }
        let (Some(m), Some(t)) = (self.msix.as_mut(), self.transport.as_mut()) else {
            return;
        };
        let ctrl = (self.config.read(m.layout().cap / 4) >> 16) as u16;
        m.control(ctrl, t.as_mut(), &self.name);
    }

    /// Releases everything, in an order that never leaves the device or the guest pointing at
    /// freed memory: guest slots and BAR mmaps, interrupts, a reset (which stops the device's
    /// DMA), the DMA maps, then the connection or device fd. A failed device gets no
    /// messages: its server is gone, and with it its mappings. Idempotent.
    pub fn shutdown(&mut self) {
        self.maps = None;
        let Some(mut t) = self.transport.take() else {
            return;
        };
        if self.health.failed() {
            self.msix = None;
            self.dma.clear();
            drop(t);
            self.ram = None;
            return;
        }
        if let Some(m) = self.msix.as_mut() {
            m.release(t.as_mut(), &self.name);
        }
        if let Err(e) = t.reset() {
            log::warn!(
                "{}: reset at teardown: {}",
                self.name,
                crate::error_chain(&e)
            );
        }
        for (gpa, len) in self.dma.drain(..) {
            if let Err(e) = t.dma_unmap(gpa, len) {
                log::warn!(
                    "{}: unmapping guest RAM {gpa:#x}+{len:#x}: {}",
                    self.name,
                    crate::error_chain(&e)
                );
            }
        }
        drop(t);
        self.ram = None;
    }
}

/// The pieces of each memory BAR to map into the guest.
fn plans(
    t: &dyn Transport,
    bars: &[Option<BarInfo>; 6],
    msix: Option<&MsixLayout>,
) -> Vec<(usize, Vec<Piece>)> {
    (0..6)
        .filter_map(|i| {
            let bar = bars[i]?;
            if bar.kind == BarKind::Io || t.mmap_source(i as u32).is_none() {
                return None;
            }
            let region = t.region(i as u32)?;
            let trapped = msix.map(|m| m.trapped_in(i)).unwrap_or_default();
            Some((i, plan::plan(region, &trapped)))
        })
        .collect()
}

impl PciDevice for VfioPciDevice {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_written(&mut self, reg: usize) {
        if reg == COMMAND_REG {
            // The guest must never reach the device's BAR pages while the device does not
            // decode them (kernel VFIO faults such accesses): slots come after decoding is on
            // and go before it is off.
            if self.config.command() & COMMAND_MEMORY != 0 {
                self.forward_command();
                self.follow_bars();
            } else {
                self.follow_bars();
                self.forward_command();
            }
        } else if ConfigSpace::is_bar_reg(reg) {
            self.follow_bars();
        }
        if self
            .msix
            .as_ref()
            .is_some_and(|m| reg == m.layout().cap / 4)
        {
            self.msix_control();
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        self.exits.fetch_add(1, Ordering::Relaxed);
        if self.health.failed() {
            data.fill(0xff);
            return;
        }
        if self
            .msix
            .as_ref()
            .is_some_and(|m| m.read(bar, offset, data))
        {
            return;
        }
        let result = match self.transport.as_mut() {
            Some(t) => t.region_read(bar as u32, offset, data),
            None => Err(transport::Error::Other("shut down".into())),
        };
        if let Err(e) = result {
            if !self.check_lost(&e) {
                log::debug!("{}: BAR {bar} read at {offset:#x}: {e}", self.name);
            }
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.exits.fetch_add(1, Ordering::Relaxed);
        if self.health.failed() {
            return;
        }
        if self
            .msix
            .as_ref()
            .is_some_and(|m| m.write(bar, offset, data))
        {
            return;
        }
        let Some(t) = self.transport.as_mut() else {
            return;
        };
        if let Err(e) = t.region_write(bar as u32, offset, data) {
            if !self.check_lost(&e) {
                log::debug!("{}: BAR {bar} write at {offset:#x}: {e}", self.name);
            }
        }
    }
}

impl Drop for VfioPciDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::memory::{GuestRam, RamConfig};
    use crate::pci::msix::MsiMessage;
    use crate::vfio::slots::testing::RecordingSlots;
    use crate::vfio::testing::{FakeDevice, Shared};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MsiMessage>>);

    impl MsiSink for Recorder {
        fn signal(&self, msg: MsiMessage) {
            self.0.lock().unwrap().push(msg);
        }
    }

    struct Setup {
        dev: VfioPciDevice,
        fake: Arc<Mutex<FakeDevice>>,
        slots: Arc<RecordingSlots>,
        msis: Arc<Recorder>,
        _ram: GuestRam,
    }

    fn setup() -> Setup {
        let ram = GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap();
        let (transport, fake) = Shared::new(FakeDevice::nvme());
        let slots = Arc::new(RecordingSlots::new());
        let msis = Arc::new(Recorder::default());
        let dev = VfioPciDevice::new(
            "test".into(),
            Box::new(transport),
            Resources {
                slots: slots.clone(),
                msi: msis.clone(),
                ram: ram.memory().clone(),
            },
        )
        .unwrap();
        Setup {
            dev,
            fake,
            slots,
            msis,
            _ram: ram,
        }
    }

    /// What the root does for a guest config write: the register model, then the hook.
    fn cfg_write(dev: &mut VfioPciDevice, reg: usize, value: u32) {
        dev.config_mut().write(reg, 0, &value.to_le_bytes());
        dev.config_written(reg);
    }

    #[test]
    fn creation_resets_quiesces_and_maps_guest_ram() {
        let s = setup();
        let f = s.fake.lock().unwrap();
        assert_eq!(f.resets, 1);
        assert_eq!(
            f.config_writes,
            [(4, vec![0x00, 0x04])],
            "INTx off, no decode"
        );
        assert_eq!(f.dma, [(0, 1 << 20)], "all guest RAM, IOVA = GPA");
        assert!(s.slots.mapped().is_empty(), "BARs not decoding yet");
    }

    #[test]
    fn command_register_is_passed_through_with_intx_disabled() {
        let mut s = setup();
        s.fake.lock().unwrap().config_writes.clear();
        // Memory, bus master, and status bits in the same dword (write-1-to-clear).
        cfg_write(&mut s.dev, 1, 0xffff_0006);
        assert_eq!(s.dev.config().command(), 0x0006);
        assert_eq!(
            s.fake.lock().unwrap().config_writes,
            [(4, vec![0x06, 0x04])],
            "only the command word reaches the device, INTx disable forced on"
        );
    }

    #[test]
    fn bar_sizing_and_moves_stay_local_and_remap_the_doorbells() {
        let mut s = setup();
        s.dev.config_mut().set_bar_address(0, 0xc000_0000);
        s.dev.config_mut().set_bar_address(4, 0xc000_4000);
        s.fake.lock().unwrap().config_writes.clear();
        cfg_write(&mut s.dev, 4, u32::MAX);
        cfg_write(&mut s.dev, 5, u32::MAX);
        assert_eq!(s.dev.config().read(4), 0xffff_c004, "answered by the VMM");
        cfg_write(&mut s.dev, 4, 0xc000_0000);
        cfg_write(&mut s.dev, 5, 0);
        assert!(s.slots.mapped().is_empty(), "decode is off");
        cfg_write(&mut s.dev, 1, 0x2);
        assert_eq!(
            s.slots.mapped(),
            [(0xc000_1000, 0x1000)],
            "only the doorbell page is a slot"
        );
        // The guest moves BAR0 while decoding.
        cfg_write(&mut s.dev, 4, 0xc800_0000);
        assert_eq!(s.slots.mapped(), [(0xc800_1000, 0x1000)]);
        cfg_write(&mut s.dev, 1, 0x0);
        assert!(s.slots.mapped().is_empty());
        let writes = s.fake.lock().unwrap().config_writes.clone();
        assert!(
            writes.iter().all(|(o, _)| *o == 4),
            "nothing but the command register reaches the device: {writes:?}"
        );
    }

    #[test]
    fn trapped_accesses_are_forwarded_and_counted() {
        let mut s = setup();
        let mut d = [0u8; 4];
        s.dev.bar_read(0, 0x1c, &mut d);
        assert_eq!(d, [0x1c, 0x1d, 0x1e, 0x1f]);
        s.dev.bar_write(0, 0x14, &[1, 0, 0, 0]);
        // Past the region: all ones, not forwarded.
        s.dev.bar_read(0, 0x3ffe, &mut d);
        assert_eq!(d, [0xff; 4]);
        let f = s.fake.lock().unwrap();
        assert_eq!(f.region_reads, [(0, 0x1c, 4)]);
        assert_eq!(f.region_writes, [(0, 0x14, vec![1, 0, 0, 0])]);
        assert_eq!(s.dev.exit_counter().load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_msix_table_is_emulated_and_vectors_are_relayed() {
        let mut s = setup();
        // Program vector 2 and unmask it: the table lives in the VMM.
        s.dev.bar_write(4, 32, &0xfee0_1000u32.to_le_bytes());
        s.dev.bar_write(4, 40, &0x45u32.to_le_bytes());
        s.dev.bar_write(4, 44, &0u32.to_le_bytes());
        let mut d = [0u8; 4];
        s.dev.bar_read(4, 40, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x45);
        s.dev.bar_read(4, 0x1000, &mut d);
        assert_eq!(d, [0; 4], "PBA");
        // Past the PBA, BAR4 is the device's again.
        s.dev.bar_read(4, 0x1800, &mut d);
        {
            let f = s.fake.lock().unwrap();
            assert!(
                f.region_writes.is_empty(),
                "table writes never reach the device"
            );
            assert_eq!(f.region_reads, [(4, 0x1800, 4)]);
        }
        // Enable MSI-X through the capability's message control.
        let cap = s.dev.msix.as_ref().unwrap().layout().cap / 4;
        let ctrl = s.dev.config().read(cap);
        cfg_write(&mut s.dev, cap, ctrl | (1u32 << 15) << 16);
        assert_eq!(s.fake.lock().unwrap().msix_enabled, Some(65));
        s.fake.lock().unwrap().vector_fds[2].write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.msis.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            *s.msis.0.lock().unwrap(),
            [MsiMessage {
                address: 0xfee0_1000,
                data: 0x45
            }]
        );
        cfg_write(&mut s.dev, cap, ctrl);
        assert_eq!(s.fake.lock().unwrap().msix_enabled, None);
    }

    #[test]
    fn shutdown_releases_everything_once() {
        let mut s = setup();
        s.dev.config_mut().set_bar_address(0, 0xc000_0000);
        cfg_write(&mut s.dev, 1, 0x6);
        let cap = s.dev.msix.as_ref().unwrap().layout().cap / 4;
        cfg_write(&mut s.dev, cap, (1u32 << 15) << 16);
        assert_eq!(s.slots.mapped().len(), 1);
        s.dev.shutdown();
        s.dev.shutdown();
        assert!(s.slots.mapped().is_empty(), "slots removed");
        let f = s.fake.lock().unwrap();
        assert!(f.dma.is_empty(), "DMA unmapped");
        assert_eq!(f.dma_unmaps, [(0, 1 << 20)]);
        assert_eq!(f.msix_enabled, None);
        assert_eq!(f.resets, 2, "reset at creation and at teardown");
        drop(f);
        assert!(s.dev.mapped().is_empty());
        // Accesses after teardown read as an absent device.
        let mut d = [0u8; 2];
        s.dev.bar_read(0, 0, &mut d);
        assert_eq!(d, [0xff; 2]);
    }

    #[test]
    fn a_lost_connection_fails_the_device_and_it_reads_as_removed() {
        let mut s = setup();
        s.dev.config_mut().set_bar_address(0, 0xc000_0000);
        cfg_write(&mut s.dev, 1, 0x6);
        assert_eq!(s.slots.mapped().len(), 1);
        s.fake.lock().unwrap().lost = true;
        let mut d = [0u8; 4];
        s.dev.bar_read(0, 0x1c, &mut d);
        assert_eq!(d, [0xff; 4]);
        let failure = s.dev.health().failure().cloned().expect("failed");
        assert_eq!(failure.device, "test");
        assert!(
            failure.reason.contains("closed"),
            "names the cause: {failure}"
        );
        assert!(s.slots.mapped().is_empty(), "doorbell page unmapped");
        // Nothing reaches the device any more, even with the connection back.
        let mut f = s.fake.lock().unwrap();
        f.lost = false;
        f.region_reads.clear();
        drop(f);
        s.dev.bar_read(0, 0x1c, &mut d);
        s.dev.bar_read(4, 0, &mut d);
        assert_eq!(d, [0xff; 4], "even the emulated MSI-X table");
        s.dev.bar_write(0, 0x14, &[1, 0, 0, 0]);
        cfg_write(&mut s.dev, 1, 0x0);
        cfg_write(&mut s.dev, 1, 0x6);
        assert!(s.slots.mapped().is_empty(), "not remapped");
        s.dev.shutdown();
        let f = s.fake.lock().unwrap();
        assert!(f.region_reads.is_empty() && f.region_writes.is_empty());
        assert_eq!(f.config_writes.len(), 2, "only the ones before the loss");
        assert!(
            f.dma_unmaps.is_empty(),
            "no teardown messages to a dead server"
        );
        assert_eq!(f.resets, 1);
    }

    #[test]
    fn a_refused_access_does_not_fail_the_device() {
        let mut s = setup();
        s.fake.lock().unwrap().broken = true;
        let mut d = [0u8; 4];
        s.dev.bar_read(0, 0x1c, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert!(!s.dev.health().failed());
        s.fake.lock().unwrap().broken = false;
        s.dev.bar_read(0, 0x1c, &mut d);
        assert_eq!(d, [0x1c, 0x1d, 0x1e, 0x1f]);
    }
}
