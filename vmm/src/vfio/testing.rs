//! A [`Transport`] double: a function shaped like the vfio-user NVMe server's (1b36:0010,
//! class 01:08:02, BAR0 16 KiB with an mmappable doorbell page, BAR4 MSI-X with 65 vectors),
//! recording what the model asks of it.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::os::unix::fs::FileExt;

use vmm_sys_util::eventfd::EventFd;

use super::transport::{Area, DmaWindow, Error, RegionInfo, Transport, CONFIG_REGION};

pub struct FakeDevice {
    pub config: [u8; 256],
    pub regions: Vec<RegionInfo>,
    /// Backs BAR0 (file offset = BAR0 offset), like the server's doorbell memfd.
    pub mmap_file: Option<File>,
    pub config_writes: Vec<(u64, Vec<u8>)>,
    pub region_writes: Vec<(u32, u64, Vec<u8>)>,
    pub region_reads: Vec<(u32, u64, usize)>,
    pub dma: Vec<(u64, u64)>,
    pub dma_unmaps: Vec<(u64, u64)>,
    pub msix_enabled: Option<usize>,
    pub resets: usize,
    /// The eventfds the model routed the vectors to (kept by [`Shared`]).
    pub vector_fds: Vec<EventFd>,
    /// Fail every region access (a server that went away).
    pub broken: bool,
    /// Fail every access as a connection that is gone (a vfio-user server that died).
    pub lost: bool,
}

fn memfd(len: u64) -> File {
    // SAFETY: a NUL-terminated name; the fd is checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(c"vfio-fake".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).unwrap();
    f
}

impl FakeDevice {
    pub fn nvme() -> FakeDevice {
        let mut c = [0u8; 256];
        c[0..4].copy_from_slice(&0x0010_1b36u32.to_le_bytes());
        c[0x06] = 0x10; // status: capability list
        c[0x08..0x0c].copy_from_slice(&0x0108_0202u32.to_le_bytes());
        c[0x10] = 0x4; // BAR0: 64-bit memory
        c[0x20] = 0x4; // BAR4: 64-bit memory
        c[0x2c..0x30].copy_from_slice(&0x1100_1af4u32.to_le_bytes());
        c[0x34] = 0x40;
        c[0x40] = 0x11; // MSI-X, 65 vectors, table BAR4@0, PBA BAR4@0x1000
        c[0x42..0x44].copy_from_slice(&64u16.to_le_bytes());
        c[0x44..0x48].copy_from_slice(&4u32.to_le_bytes());
        c[0x48..0x4c].copy_from_slice(&0x1004u32.to_le_bytes());
        let rw = |size| RegionInfo {
            size,
            readable: true,
            writable: true,
            mmappable: false,
            areas: Vec::new(),
        };
        let mut regions = vec![RegionInfo::default(); 9];
        regions[0] = RegionInfo {
            mmappable: true,
            areas: vec![Area {
                offset: 0x1000,
                size: 0x1000,
            }],
            ..rw(0x4000)
        };
        regions[4] = rw(0x2000);
        regions[CONFIG_REGION as usize] = rw(256);
        FakeDevice {
            config: c,
            regions,
            mmap_file: Some(memfd(0x2000)),
            config_writes: Vec::new(),
            region_writes: Vec::new(),
            region_reads: Vec::new(),
            dma: Vec::new(),
            dma_unmaps: Vec::new(),
            msix_enabled: None,
            resets: 0,
            vector_fds: Vec::new(),
            broken: false,
            lost: false,
        }
    }

    /// A 32-bit word of the BAR0 file (what the device sees of the doorbell page).
    pub fn bar0_word(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.mmap_file
            .as_ref()
            .unwrap()
            .read_exact_at(&mut b, offset)
            .unwrap();
        u32::from_le_bytes(b)
    }

    fn check(&self, index: u32, offset: u64, len: usize) -> Result<(), Error> {
        if self.lost {
            return Err(Error::User(super::user::Error::Call(
                super::user::client::Error::Closed,
            )));
        }
        match self.region(index) {
            Some(r) if r.contains(offset, len) && !self.broken => Ok(()),
            _ => Err(Error::OutOfRange { index, offset, len }),
        }
    }
}

impl Transport for FakeDevice {
    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        self.check(CONFIG_REGION, offset, data.len())?;
        let o = offset as usize;
        data.copy_from_slice(&self.config[o..o + data.len()]);
        Ok(())
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check(CONFIG_REGION, offset, data.len())?;
        self.config_writes.push((offset, data.to_vec()));
        Ok(())
    }

    fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(index as usize).filter(|r| r.size > 0)
    }

    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        self.check(index, offset, data.len())?;
        self.region_reads.push((index, offset, data.len()));
        // Recognisable contents: each byte is its offset's low byte plus the region index.
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8)
                .wrapping_add(i as u8)
                .wrapping_add(index as u8);
        }
        Ok(())
    }

    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check(index, offset, data.len())?;
        self.region_writes.push((index, offset, data.to_vec()));
        Ok(())
    }

    fn mmap_source(&self, index: u32) -> Option<(BorrowedFd<'_>, u64)> {
        (index == 0)
            .then_some(self.mmap_file.as_ref()?)
            .map(|f| (f.as_fd(), 0))
    }

    unsafe fn dma_map(&mut self, w: &DmaWindow<'_>) -> Result<(), Error> {
        self.dma.push((w.gpa, w.len));
        Ok(())
    }

    fn dma_unmap(&mut self, gpa: u64, len: u64) -> Result<(), Error> {
        self.dma_unmaps.push((gpa, len));
        self.dma.retain(|&w| w != (gpa, len));
        Ok(())
    }

    fn msix_vectors(&self) -> u32 {
        65
    }

    fn enable_msix(&mut self, fds: &[&EventFd]) -> Result<(), Error> {
        self.msix_enabled = Some(fds.len());
        Ok(())
    }

    fn disable_msix(&mut self) -> Result<(), Error> {
        self.msix_enabled = None;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), Error> {
        self.resets += 1;
        Ok(())
    }
}

/// A [`FakeDevice`] shared with the test, so it can be inspected after the model took the
/// transport.
pub struct Shared {
    pub dev: std::sync::Arc<std::sync::Mutex<FakeDevice>>,
    regions: Vec<RegionInfo>,
    file: Option<File>,
}

impl Shared {
    pub fn new(dev: FakeDevice) -> (Shared, std::sync::Arc<std::sync::Mutex<FakeDevice>>) {
        let regions = dev.regions.clone();
        let file = dev.mmap_file.as_ref().map(|f| f.try_clone().unwrap());
        let dev = std::sync::Arc::new(std::sync::Mutex::new(dev));
        (
            Shared {
                dev: dev.clone(),
                regions,
                file,
            },
            dev,
        )
    }
}

impl Transport for Shared {
    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        self.dev.lock().unwrap().config_read(offset, data)
    }
    fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.dev.lock().unwrap().config_write(offset, data)
    }
    fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(index as usize).filter(|r| r.size > 0)
    }
    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        self.dev.lock().unwrap().region_read(index, offset, data)
    }
    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.dev.lock().unwrap().region_write(index, offset, data)
    }
    fn mmap_source(&self, index: u32) -> Option<(BorrowedFd<'_>, u64)> {
        (index == 0)
            .then_some(self.file.as_ref()?)
            .map(|f| (f.as_fd(), 0))
    }
    unsafe fn dma_map(&mut self, w: &DmaWindow<'_>) -> Result<(), Error> {
        // SAFETY: the fake only records the window.
        unsafe { self.dev.lock().unwrap().dma_map(w) }
    }
    fn dma_unmap(&mut self, gpa: u64, len: u64) -> Result<(), Error> {
        self.dev.lock().unwrap().dma_unmap(gpa, len)
    }
    fn msix_vectors(&self) -> u32 {
        self.dev.lock().unwrap().msix_vectors()
    }
    fn enable_msix(&mut self, fds: &[&EventFd]) -> Result<(), Error> {
        let mut d = self.dev.lock().unwrap();
        d.vector_fds = fds.iter().map(|e| e.try_clone().unwrap()).collect();
        d.enable_msix(fds)
    }
    fn disable_msix(&mut self) -> Result<(), Error> {
        let mut d = self.dev.lock().unwrap();
        d.vector_fds.clear();
        d.disable_msix()
    }
    fn reset(&mut self) -> Result<(), Error> {
        self.dev.lock().unwrap().reset()
    }
}
