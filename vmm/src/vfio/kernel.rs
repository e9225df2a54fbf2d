//! The kernel VFIO transport (`--device vfio=BDF`): the device's group joins a type1 container
//! (vfio-ioctls), guest RAM is pinned and mapped for DMA through the iommu crate's
//! [`VfioContainerMapper`] (IOVA = GPA), regions are read and written with pread/pwrite on the
//! device fd and mmapped from it.
//!
//! Needs a host with an IOMMU and the device bound to vfio-pci (scripts/vfio-bind.sh); the
//! checks in [`preflight`] say which of those is missing before anything is opened.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iommu::{Mapper, RamRegion, VfioContainerMapper};
use kvm_ioctls::VmFd;
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioOps, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use super::transport::{self, Area, DmaWindow, RegionInfo, Transport};

/// The container node; absent when the host has no VFIO (no IOMMU, module not loaded).
pub const VFIO_CONTAINER: &str = "/dev/vfio/vfio";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "kernel VFIO is not available on this host: {VFIO_CONTAINER} does not exist (it needs \
         an IOMMU and the vfio-pci module; use vfio-user=SOCKET on hosts without)"
    )]
    NoVfio,
    #[error("no PCI device at {}", .0.display())]
    NoDevice(PathBuf),
    #[error("{} has no IOMMU group: is the IOMMU on (intel_iommu=on or amd_iommu=on)?", .0.display())]
    NoIommuGroup(PathBuf),
    #[error("/dev/vfio/{group} does not exist: bind the device to vfio-pci first (scripts/vfio-bind.sh)")]
    NotBound { group: String },
    #[error("opening the VFIO container failed")]
    Container(#[source] VfioError),
    #[error("opening the VFIO device failed")]
    Device(#[source] VfioError),
    #[error("{what} region {index} at {offset:#x} failed")]
    Access {
        what: &'static str,
        index: u32,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("mapping guest RAM for DMA failed")]
    Dma(#[source] iommu::MapError),
    #[error("routing MSI-X vectors failed")]
    Irq(#[source] VfioError),
}

impl From<Error> for transport::Error {
    fn from(e: Error) -> transport::Error {
        transport::Error::Kernel(e)
    }
}

/// Checks, without opening anything, that `sysfs` (a PCI device directory) can be passed
/// through: VFIO exists, the device exists, it has an IOMMU group and the group is bound.
pub fn preflight(sysfs: &Path) -> Result<(), Error> {
    if !Path::new(VFIO_CONTAINER).exists() {
        return Err(Error::NoVfio);
    }
    if !sysfs.join("config").exists() {
        return Err(Error::NoDevice(sysfs.into()));
    }
    let group = std::fs::read_link(sysfs.join("iommu_group"))
        .ok()
        .and_then(|g| Some(g.file_name()?.to_string_lossy().into_owned()))
        .ok_or_else(|| Error::NoIommuGroup(sysfs.into()))?;
    if !Path::new("/dev/vfio").join(&group).exists() {
        return Err(Error::NotBound { group });
    }
    Ok(())
}

pub struct KernelVfio {
    // Drop order matters: the mapper unmaps guest RAM while the group still holds the
    // container's IOMMU, then the device (and with it the group) goes.
    mapper: VfioContainerMapper,
    device: VfioDevice,
    regions: Vec<RegionInfo>,
    /// Each region's offset in the device fd.
    offsets: Vec<u64>,
    /// Borrowed view of the device fd for pread/pwrite (never closed through this).
    fd: ManuallyDrop<File>,
}

impl KernelVfio {
    /// Opens the device at `sysfs` in a fresh container tied to the VM (the KVM VFIO device
    /// lets KVM know about the group, for cache coherency of non-snooped DMA).
    pub fn open(sysfs: &Path, vm: &VmFd) -> Result<KernelVfio, Error> {
        preflight(sysfs)?;
        let mut create = kvm_bindings::kvm_create_device {
            type_: kvm_bindings::kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let kvm_device = match vm.create_device(&mut create) {
            Ok(fd) => Some(Arc::new(VfioDeviceFd::new_from_kvm(fd))),
            Err(e) => {
                log::warn!("KVM VFIO device unavailable ({e}); continuing without it");
                None
            }
        };
        let container = Arc::new(VfioContainer::new(kvm_device).map_err(Error::Container)?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(sysfs, ops, false).map_err(Error::Device)?;
        let mut regions = Vec::new();
        let mut offsets = Vec::new();
        for index in 0..VFIO_PCI_NUM_REGIONS {
            let flags = device.get_region_flags(index);
            let areas = device
                .get_region_caps(index)
                .into_iter()
                .flat_map(|cap| match cap {
                    VfioRegionInfoCap::SparseMmap(s) => s.areas,
                    _ => Vec::new(),
                })
                .map(|a| Area {
                    offset: a.offset,
                    size: a.size,
                })
                .collect();
            regions.push(RegionInfo {
                size: device.get_region_size(index),
                readable: flags & VFIO_REGION_INFO_FLAG_READ != 0,
                writable: flags & VFIO_REGION_INFO_FLAG_WRITE != 0,
                mmappable: flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
                areas,
            });
            offsets.push(device.get_region_offset(index));
        }
        // SAFETY: the fd belongs to `device`, which outlives this view (both are fields of
        // the same struct and the view is never dropped as a File).
        let fd = ManuallyDrop::new(unsafe { File::from_raw_fd(device.as_raw_fd()) });
        Ok(KernelVfio {
            mapper: VfioContainerMapper::new(container),
            device,
            regions,
            offsets,
            fd,
        })
    }

    fn at(&self, index: u32, offset: u64, len: usize) -> Result<u64, transport::Error> {
        match self.region(index) {
            Some(r) if r.contains(offset, len) => Ok(self.offsets[index as usize] + offset),
            _ => Err(transport::Error::OutOfRange { index, offset, len }),
        }
    }
}

impl Transport for KernelVfio {
    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), transport::Error> {
        self.region_read(transport::CONFIG_REGION, offset, data)
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), transport::Error> {
        self.region_write(transport::CONFIG_REGION, offset, data)
    }

    fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(index as usize).filter(|r| r.size > 0)
    }

    fn region_read(
        &mut self,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<(), transport::Error> {
        let at = self.at(index, offset, data.len())?;
        self.fd.read_exact_at(data, at).map_err(|source| {
            Error::Access {
                what: "reading",
                index,
                offset,
                source,
            }
            .into()
        })
    }

    fn region_write(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), transport::Error> {
        let at = self.at(index, offset, data.len())?;
        self.fd.write_all_at(data, at).map_err(|source| {
            Error::Access {
                what: "writing",
                index,
                offset,
                source,
            }
            .into()
        })
    }

    fn mmap_source(&self, index: u32) -> Option<(BorrowedFd<'_>, u64)> {
        let region = self.region(index)?;
        if !region.mmappable {
            return None;
        }
        Some((self.fd.as_fd(), self.offsets[index as usize]))
    }

    unsafe fn dma_map(&mut self, w: &DmaWindow<'_>) -> Result<(), transport::Error> {
        let region = RamRegion {
            gpa: w.gpa,
            len: w.len,
            host: w.host,
        };
        // SAFETY: the caller keeps `host..host+len` mapped until the unmap (our contract is
        // the mapper's).
        unsafe { self.mapper.map(&region) }.map_err(|e| Error::Dma(e).into())
    }

    fn dma_unmap(&mut self, gpa: u64, len: u64) -> Result<(), transport::Error> {
        self.mapper
            .unmap(gpa, len)
            .map_err(|e| Error::Dma(e).into())
    }

    fn msix_vectors(&self) -> u32 {
        self.device
            .get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
            .map_or(0, |i| i.count)
    }

    fn enable_msix(&mut self, fds: &[&EventFd]) -> Result<(), transport::Error> {
        self.device
            .enable_msix(fds.to_vec())
            .map_err(|e| Error::Irq(e).into())
    }

    fn disable_msix(&mut self) -> Result<(), transport::Error> {
        self.device.disable_msix().map_err(|e| Error::Irq(e).into())
    }

    fn reset(&mut self) -> Result<(), transport::Error> {
        self.device.reset();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_names_what_is_missing() {
        let e = preflight(Path::new("/nonexistent")).unwrap_err();
        let msg = e.to_string();
        if Path::new(VFIO_CONTAINER).exists() {
            assert!(matches!(e, Error::NoDevice(_)), "{msg}");
        } else {
            assert!(matches!(e, Error::NoVfio), "{msg}");
            assert!(msg.contains("/dev/vfio/vfio"), "{msg}");
        }
    }
}
