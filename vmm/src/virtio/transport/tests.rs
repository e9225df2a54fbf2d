//! The transport driven the way a driver drives it, with a recording device, a recording
//! ioeventfd registrar and a recording MSI sink.

use std::sync::{Arc, Mutex};

use super::*;
use crate::bus::{Bus, BusDevice};
use crate::pci::msix::MsiMessage;
use crate::pci::{PciConfigIo, PciRoot};
use crate::virtio::device::ActivateError;
use crate::virtio::notify::tests::Recorder as IoEvents;

const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;

/// A queue as activated: (index, size, desc, driver, device).
type Ring = (u16, u16, u64, u64, u64);

#[derive(Default)]
struct Seen {
    /// (features, queues) per activation.
    activations: Vec<(u64, Vec<Ring>)>,
    kicks: Vec<EventFd>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    fail: bool,
}

struct FakeDevice(Arc<Mutex<Seen>>);

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u16 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 128]
    }
    fn features(&self) -> u64 {
        VERSION_1 | EVENT_IDX
    }
    fn config_len(&self) -> usize {
        8
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = 0x1122_3344_5566_7788u64.to_le_bytes();
        data.copy_from_slice(&cfg[offset as usize..offset as usize + data.len()]);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let mut s = self.0.lock().unwrap();
        if s.fail {
            return Err(ActivateError("backend went away".into()));
        }
        let qs = a
            .queues
            .iter()
            .map(|q| (q.index, q.size, q.desc, q.driver, q.device))
            .collect();
        s.activations.push((a.features, qs));
        s.kicks = a.queues.into_iter().map(|q| q.kick).collect();
        Ok(())
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().resets += 1;
    }
}

#[derive(Default)]
struct Msis(Mutex<Vec<MsiMessage>>);

impl MsiSink for Msis {
    fn signal(&self, msg: MsiMessage) {
        self.0.lock().unwrap().push(msg);
    }
}

struct Setup {
    dev: VirtioPciDevice,
    seen: Arc<Mutex<Seen>>,
    ioevents: Arc<IoEvents>,
    msis: Arc<Msis>,
}

fn setup() -> Setup {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let ioevents = Arc::new(IoEvents::default());
    let msis = Arc::new(Msis::default());
    let dev = VirtioPciDevice::new(
        Box::new(FakeDevice(seen.clone())),
        ioevents.clone(),
        msis.clone(),
    )
    .unwrap();
    Setup {
        dev,
        seen,
        ioevents,
        msis,
    }
}

fn w(d: &mut VirtioPciDevice, offset: u64, width: usize, v: u64) {
    d.bar_write(BAR_VIRTIO, offset, &v.to_le_bytes()[..width]);
}

fn r(d: &mut VirtioPciDevice, offset: u64, width: usize) -> u64 {
    let mut b = [0u8; 8];
    d.bar_read(BAR_VIRTIO, offset, &mut b[..width]);
    u64::from_le_bytes(b)
}

/// What a driver does up to DRIVER_OK, with queue 0 only.
fn bring_up(d: &mut VirtioPciDevice, features: u64) {
    bring_up_with_config_vector(d, features, crate::virtio::NO_VECTOR);
}

fn bring_up_with_config_vector(d: &mut VirtioPciDevice, features: u64, vector: u16) {
    w(d, 0x14, 1, 0);
    w(d, 0x10, 2, vector.into());
    w(d, 0x14, 1, 1);
    w(d, 0x14, 1, 3);
    w(d, 0x08, 4, 0);
    w(d, 0x0c, 4, features & 0xffff_ffff);
    w(d, 0x08, 4, 1);
    w(d, 0x0c, 4, features >> 32);
    w(d, 0x14, 1, 0xb);
    w(d, 0x16, 2, 0);
    w(d, 0x18, 2, 64);
    w(d, 0x1a, 2, u64::from(crate::virtio::NO_VECTOR));
    w(d, 0x20, 8, 0x20_0000);
    w(d, 0x28, 8, 0x20_1000);
    w(d, 0x30, 8, 0x20_2000);
    w(d, 0x1c, 2, 1);
    w(d, 0x14, 1, 0xf);
}

/// The vendor capabilities: cfg_type -> (bar, offset, length, multiplier if any).
fn vendor_caps(c: &ConfigSpace) -> Vec<(u8, u8, u32, u32, Option<u32>)> {
    let mut out = Vec::new();
    let mut ptr = (c.read(0x34 / 4) & 0xfc) as usize;
    while ptr != 0 {
        let mut b = [0u8; 20];
        c.read_bytes(ptr, &mut b);
        if b[0] == CAP_VENDOR {
            let dw = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let mult = (b[2] >= 20).then(|| dw(16));
            out.push((b[3], b[4], dw(8), dw(12), mult));
        }
        ptr = usize::from(b[1]);
    }
    out
}

#[test]
fn identifies_as_a_modern_virtio_blk_with_its_capabilities() {
    let Setup { dev, .. } = setup();
    let c = dev.config();
    assert_eq!(c.read(0), 0x1042_1af4);
    assert_eq!(c.read(2) & 0xff, 1, "revision 1: modern only");
    assert_eq!(c.bar(0).map(|b| b.size), Some(0x4000));
    assert_eq!(
        vendor_caps(c),
        vec![
            (CAP_COMMON, 0, 0, 0x38, None),
            (CAP_ISR, 0, 0x1000, 1, None),
            (CAP_DEVICE, 0, 0x2000, 8, None),
            (CAP_NOTIFY, 0, 0x3000, 8, Some(4)),
        ]
    );
    // The MSI-X capability comes first and advertises 3 vectors.
    assert_eq!(c.read(0x40 / 4) & 0xff, u32::from(crate::pci::msix::CAP_ID));
    assert_eq!(c.read(0x40 / 4) >> 16 & 0x7ff, 2);
}

#[test]
fn driver_ok_activates_the_device_with_the_rings_and_kicks() {
    let Setup { mut dev, seen, .. } = setup();
    w(&mut dev, 0x00, 4, 1);
    assert_eq!(r(&mut dev, 0x04, 4), 1, "VERSION_1 in the high window");
    assert_eq!(r(&mut dev, 0x12, 2), 2, "num_queues");
    bring_up(&mut dev, VERSION_1 | EVENT_IDX);
    assert_eq!(r(&mut dev, 0x14, 1), 0xf);
    {
        let s = seen.lock().unwrap();
        assert_eq!(
            s.activations,
            vec![(
                VERSION_1 | EVENT_IDX,
                vec![(0, 64, 0x20_0000, 0x20_1000, 0x20_2000)]
            )]
        );
    }
    // A notify that reaches the transport (no ioeventfd) kicks the device's eventfd.
    w(&mut dev, NOTIFY_OFFSET, 2, 0);
    assert_eq!(seen.lock().unwrap().kicks[0].read().unwrap(), 1);
    // Out-of-range and misaligned notifies are ignored.
    w(&mut dev, NOTIFY_OFFSET + 4 * 7, 2, 7);
    w(&mut dev, NOTIFY_OFFSET + 1, 1, 0);
    assert!(seen.lock().unwrap().kicks[0].read().is_err());
    assert_eq!(r(&mut dev, NOTIFY_OFFSET, 2), 0);

    // Reset stops the device; a second bring-up activates again.
    w(&mut dev, 0x14, 1, 0);
    assert_eq!(seen.lock().unwrap().resets, 1);
    assert_eq!(r(&mut dev, 0x14, 1), 0);
    bring_up(&mut dev, VERSION_1);
    assert_eq!(seen.lock().unwrap().activations.len(), 2);
    assert_eq!(
        seen.lock().unwrap().resets,
        1,
        "bring_up's own reset found nothing running"
    );
}

#[test]
fn a_failed_activation_reads_back_as_needs_reset() {
    let Setup { mut dev, seen, .. } = setup();
    seen.lock().unwrap().fail = true;
    bring_up(&mut dev, VERSION_1);
    assert_eq!(r(&mut dev, 0x14, 1), 0x4f, "DEVICE_NEEDS_RESET");
    assert_eq!(r(&mut dev, ISR_OFFSET, 1), 2, "configuration changed");
    assert_eq!(r(&mut dev, ISR_OFFSET, 1), 0, "reading the ISR clears it");
    assert_eq!(
        seen.lock().unwrap().resets,
        1,
        "whatever the failed activation started is stopped"
    );
    w(&mut dev, 0x14, 1, 0);
    assert_eq!(seen.lock().unwrap().resets, 1, "nothing is running");
    assert_eq!(r(&mut dev, 0x14, 1), 0);
}

#[test]
fn a_failed_activation_raises_the_config_vector() {
    let Setup {
        mut dev,
        seen,
        msis,
        ..
    } = setup();
    seen.lock().unwrap().fail = true;
    // MSI-X on, vector 2 programmed and unmasked, configuration changes on vector 2.
    let cap = dev.msix_cap;
    dev.config_mut().write(cap / 4, 2, &0x8000u16.to_le_bytes());
    dev.config_written(cap / 4);
    dev.bar_write(BAR_MSIX, 32, &0xfee0_0000u32.to_le_bytes());
    dev.bar_write(BAR_MSIX, 40, &0x55u32.to_le_bytes());
    dev.bar_write(BAR_MSIX, 44, &0u32.to_le_bytes());
    bring_up_with_config_vector(&mut dev, VERSION_1, 2);
    assert_eq!(msis.0.lock().unwrap().len(), 1);
    assert_eq!(msis.0.lock().unwrap()[0].data, 0x55);
}

#[test]
fn device_configuration_is_forwarded_within_bounds() {
    let Setup { mut dev, seen, .. } = setup();
    assert_eq!(r(&mut dev, DEVICE_OFFSET, 4), 0x5566_7788);
    assert_eq!(r(&mut dev, DEVICE_OFFSET + 4, 4), 0x1122_3344);
    assert_eq!(r(&mut dev, DEVICE_OFFSET + 6, 4), 0, "crosses the end");
    assert_eq!(r(&mut dev, DEVICE_OFFSET + 0x800, 4), 0);
    w(&mut dev, DEVICE_OFFSET + 2, 1, 9);
    w(&mut dev, DEVICE_OFFSET + 8, 1, 9);
    assert_eq!(seen.lock().unwrap().config_writes, vec![(2, vec![9])]);
    // An access straddling two regions touches neither.
    assert_eq!(r(&mut dev, ISR_OFFSET - 2, 4), 0);
    assert_eq!(r(&mut dev, 0x3ffe, 4), 0);
}

#[test]
fn notify_ioeventfds_follow_bar0_through_the_pci_root() {
    let Setup { dev, ioevents, .. } = setup();
    let (mmio, pio) = (Bus::new(), Bus::new());
    let root = Arc::new(Mutex::new(PciRoot::new(mmio, pio)));
    let dev = Arc::new(Mutex::new(dev));
    let slot = root.lock().unwrap().add_device(dev.clone()).unwrap();
    let mut io = PciConfigIo::new(root);
    let mut cfg_write = |reg: u32, v: u32| {
        io.write(
            0,
            &(0x8000_0000 | u32::from(slot) << 11 | reg << 2).to_le_bytes(),
        );
        io.write(4, &v.to_le_bytes());
    };
    let base = crate::pci::MMIO_WINDOW_START;
    assert!(ioevents.take().is_empty(), "nothing before decoding");

    cfg_write(1, 0x6); // memory decode and bus mastering
    let regs: Vec<(bool, u64)> = ioevents.take().iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(regs, vec![(true, base + 0x3000), (true, base + 0x3004)]);

    // The guest moves BAR0 while decoding: the registrations move with it.
    cfg_write(4, 0xc800_0004);
    let regs: Vec<(bool, u64)> = ioevents.take().iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(
        regs,
        vec![
            (false, base + 0x3000),
            (true, 0xc800_3000),
            (false, base + 0x3004),
            (true, 0xc800_3004),
        ]
    );

    // Decoding off: nothing may stay registered; on again: back at the BAR.
    cfg_write(1, 0x4);
    let regs: Vec<(bool, u64)> = ioevents.take().iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(regs, vec![(false, 0xc800_3000), (false, 0xc800_3004)]);
    cfg_write(1, 0x6);
    assert_eq!(ioevents.take().len(), 2);

    // Writes to other registers leave the registrations alone.
    cfg_write(15, 0x0b);
    assert!(ioevents.take().is_empty());
    drop(dev);
}
