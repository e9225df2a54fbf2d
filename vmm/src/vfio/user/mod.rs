//! The vfio-user transport: a PCI function served by another process over a Unix socket
//! (`--device vfio-user=SOCKET`). Configuration space and trapped BAR accesses are
//! REGION_READ / REGION_WRITE messages; mmappable areas (the NVMe server's doorbell page) come
//! with a file descriptor the VMM maps straight into the guest; guest RAM is shared with
//! DMA_MAP, passing the RAM memfd; MSI-X vectors are eventfds sent with SET_IRQS.
//!
//! The few messages needed are spoken by [`client`] rather than the vfio_user crate's
//! `Client` (see there for why).

pub mod client;
pub mod wire;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_IRQ_INFO_EVENTFD,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vmm_sys_util::eventfd::EventFd;

use self::client::Client;
use self::wire::Command;
use super::transport::{self, Area, DmaWindow, RegionInfo, Transport};

/// DMA_MAP flags: the device may read and write guest RAM.
const DMA_READ_WRITE: u32 = 0b11;
/// The most region-info bytes accepted when the server asks for more room.
const MAX_REGION_INFO: u32 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the vfio-user server")]
    Connect(#[source] client::Error),
    #[error("request failed")]
    Call(#[source] client::Error),
    #[error("bad reply to {0:?}")]
    Reply(Command, #[source] wire::Error),
    #[error("the server's device is not a PCI function")]
    NotPci,
    #[error("the server reports {0} regions; a PCI function has {VFIO_PCI_NUM_REGIONS}")]
    Regions(u32),
    #[error("asked for region {want}, the server described region {got}")]
    RegionIndex { want: u32, got: u32 },
    #[error("region {0}'s description needs {1} bytes")]
    RegionInfoSize(u32, u32),
}

impl Error {
    /// Whether the server is gone (see [`client::Error::connection_lost`]).
    pub fn connection_lost(&self) -> bool {
        match self {
            Error::Connect(e) | Error::Call(e) => e.connection_lost(),
            _ => false,
        }
    }
}

impl From<Error> for transport::Error {
    fn from(e: Error) -> transport::Error {
        transport::Error::User(e)
    }
}

/// A region and, when it may be mmapped, the file it is mapped from and its offset there.
struct Region {
    info: RegionInfo,
    mmap: Option<(File, u64)>,
}

pub struct VfioUser {
    client: Client,
    socket: PathBuf,
    regions: Vec<Region>,
    msix_vectors: u32,
    resettable: bool,
    /// File descriptors the server takes in one message.
    max_fds: usize,
}

impl VfioUser {
    /// Connects, negotiates the version and reads the device's regions and MSI-X vectors.
    pub fn connect(socket: &Path) -> Result<VfioUser, Error> {
        let mut client = Client::connect(socket).map_err(Error::Connect)?;
        let reply = client
            .call(Command::Version, &wire::version(), &[])
            .map_err(Error::Connect)?;
        let max_fds =
            wire::parse_version(&reply.payload).map_err(|e| Error::Reply(Command::Version, e))?;
        let reply = client
            .call(Command::DeviceGetInfo, &wire::device_get_info(), &[])
            .map_err(Error::Call)?;
        let info = wire::parse_device_info(&reply.payload)
            .map_err(|e| Error::Reply(Command::DeviceGetInfo, e))?;
        if info.flags & VFIO_DEVICE_FLAGS_PCI == 0 {
            return Err(Error::NotPci);
        }
        if info.num_regions < VFIO_PCI_NUM_REGIONS {
            return Err(Error::Regions(info.num_regions));
        }
        // Device-specific regions past the PCI ones are not used.
        let regions = (0..VFIO_PCI_NUM_REGIONS)
            .map(|index| region(&mut client, index))
            .collect::<Result<Vec<_>, _>>()?;
        let msix_vectors = if info.num_irqs > VFIO_PCI_MSIX_IRQ_INDEX {
            let reply = client
                .call(
                    Command::GetIrqInfo,
                    &wire::irq_info(VFIO_PCI_MSIX_IRQ_INDEX),
                    &[],
                )
                .map_err(Error::Call)?;
            let (flags, count) = wire::parse_irq_info(&reply.payload)
                .map_err(|e| Error::Reply(Command::GetIrqInfo, e))?;
            if flags & VFIO_IRQ_INFO_EVENTFD != 0 {
                count
            } else {
                0
            }
        } else {
            0
        };
        Ok(VfioUser {
            client,
            socket: socket.into(),
            regions,
            msix_vectors,
            resettable: info.flags & VFIO_DEVICE_FLAGS_RESET != 0,
            max_fds: max_fds as usize,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn checked(&self, index: u32, offset: u64, len: usize) -> Result<(), transport::Error> {
        match self.region(index) {
            Some(r) if r.contains(offset, len) => Ok(()),
            _ => Err(transport::Error::OutOfRange { index, offset, len }),
        }
    }

    fn call(&mut self, command: Command, body: &[u8], fds: &[RawFd]) -> Result<Vec<u8>, Error> {
        self.client
            .call(command, body, fds)
            .map(|r| r.payload)
            .map_err(Error::Call)
    }
}

/// Asks for region `index`, again with more room if its capabilities did not fit.
fn region(client: &mut Client, index: u32) -> Result<Region, Error> {
    let mut argsz = wire::REGION_INFO_ARGSZ;
    loop {
        let reply = client
            .call(
                Command::DeviceGetRegionInfo,
                &wire::region_info(index, argsz),
                &[],
            )
            .map_err(Error::Call)?;
        let r = wire::parse_region_info(&reply.payload)
            .map_err(|e| Error::Reply(Command::DeviceGetRegionInfo, e))?;
        if r.index != index {
            return Err(Error::RegionIndex {
                want: index,
                got: r.index,
            });
        }
        if r.argsz > argsz {
            if r.argsz > MAX_REGION_INFO {
                return Err(Error::RegionInfoSize(index, r.argsz));
            }
            argsz = r.argsz;
            continue;
        }
        let mmap = match (r.flags & VFIO_REGION_INFO_FLAG_MMAP != 0, reply.fd) {
            (true, Some(fd)) => Some((fd, r.offset)),
            _ => None,
        };
        return Ok(Region {
            info: RegionInfo {
                size: r.size,
                readable: r.flags & VFIO_REGION_INFO_FLAG_READ != 0,
                writable: r.flags & VFIO_REGION_INFO_FLAG_WRITE != 0,
                mmappable: mmap.is_some(),
                areas: r
                    .areas
                    .iter()
                    .map(|&(offset, size)| Area { offset, size })
                    .collect(),
            },
            mmap,
        });
    }
}

impl Transport for VfioUser {
    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), transport::Error> {
        self.region_read(transport::CONFIG_REGION, offset, data)
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), transport::Error> {
        self.region_write(transport::CONFIG_REGION, offset, data)
    }

    fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions
            .get(index as usize)
            .map(|r| &r.info)
            .filter(|r| r.size > 0)
    }

    fn region_read(
        &mut self,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<(), transport::Error> {
        self.checked(index, offset, data.len())?;
        let count = data.len();
        let body = wire::region_access(index, offset, count as u32, &[]);
        let reply = self.call(Command::RegionRead, &body, &[])?;
        let got = wire::region_read_data(&reply, count)
            .map_err(|e| Error::Reply(Command::RegionRead, e))?;
        data.copy_from_slice(got);
        Ok(())
    }

    fn region_write(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), transport::Error> {
        self.checked(index, offset, data.len())?;
        let body = wire::region_access(index, offset, data.len() as u32, data);
        self.call(Command::RegionWrite, &body, &[])?;
        Ok(())
    }

    fn mmap_source(&self, index: u32) -> Option<(BorrowedFd<'_>, u64)> {
        let (file, offset) = self.regions.get(index as usize)?.mmap.as_ref()?;
        Some((file.as_fd(), *offset))
    }

    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.client.socket())
    }

    unsafe fn dma_map(&mut self, w: &DmaWindow<'_>) -> Result<(), transport::Error> {
        // The server maps the file itself; `host` is not needed. The caller keeps the file's
        // bytes as guest RAM until the unmap (the contract).
        let body = wire::dma_map(DMA_READ_WRITE, w.fd_offset, w.gpa, w.len);
        self.call(Command::DmaMap, &body, &[w.fd.as_raw_fd()])?;
        Ok(())
    }

    fn dma_unmap(&mut self, gpa: u64, len: u64) -> Result<(), transport::Error> {
        self.call(Command::DmaUnmap, &wire::dma_unmap(gpa, len), &[])?;
        Ok(())
    }

    fn msix_vectors(&self) -> u32 {
        self.msix_vectors
    }

    fn enable_msix(&mut self, fds: &[&EventFd]) -> Result<(), transport::Error> {
        let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        // The server takes `max_fds` descriptors per message: send the vectors in chunks (of
        // at most 16, what servers built on the vfio_user crate receive at once).
        let per_message = self.max_fds.clamp(1, 16);
        for (i, chunk) in fds.chunks(per_message).enumerate() {
            let start = (i * per_message) as u32;
            let raw: Vec<RawFd> = chunk.iter().map(|e| e.as_raw_fd()).collect();
            let body = wire::set_irqs(flags, VFIO_PCI_MSIX_IRQ_INDEX, start, chunk.len() as u32);
            self.call(Command::SetIrqs, &body, &raw)?;
        }
        Ok(())
    }

    fn disable_msix(&mut self) -> Result<(), transport::Error> {
        let flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
        let body = wire::set_irqs(flags, VFIO_PCI_MSIX_IRQ_INDEX, 0, 0);
        self.call(Command::SetIrqs, &body, &[])?;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), transport::Error> {
        if self.resettable {
            self.call(Command::DeviceReset, &[], &[])?;
        }
        Ok(())
    }
}

impl Drop for VfioUser {
    fn drop(&mut self) {
        self.client.shutdown();
    }
}
