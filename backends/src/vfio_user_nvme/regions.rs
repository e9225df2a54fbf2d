//! What the function advertises: its regions (config space, BAR0 with the sparse doorbell
//! page, BAR4) and interrupts (MSI-X only).

use std::mem::size_of;
use std::os::fd::RawFd;

use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_NORESIZE,
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{IrqInfo, ServerRegion, SparseArea};

use super::{config_space, doorbells, msix};
use crate::nvme::{Controller, DOORBELL_BASE};

pub const CONFIG: u32 = VFIO_PCI_CONFIG_REGION_INDEX;
pub const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
pub const BAR4: u32 = msix::BAR_INDEX;

const RW: u32 = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;

/// Every PCI region index; the ones the function does not implement have size 0.
/// `doorbell_fd` backs BAR0 with file offset = BAR0 offset.
pub fn regions(doorbell_fd: RawFd) -> Vec<ServerRegion> {
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let (size, flags) = match index {
                BAR0 => (Controller::BAR0_SIZE, RW | VFIO_REGION_INFO_FLAG_MMAP),
                BAR4 => (msix::BAR_SIZE, RW),
                CONFIG => (config_space::SIZE as u64, RW),
                _ => (0, 0),
            };
            let (sparse_areas, mmap_fd) = match index {
                BAR0 => (
                    vec![SparseArea {
                        area: vfio_region_sparse_mmap_area {
                            offset: DOORBELL_BASE,
                            size: doorbells::PAGE_SIZE,
                        },
                    }],
                    Some(doorbell_fd),
                ),
                _ => (Vec::new(), None),
            };
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: size_of::<vfio_region_info>() as u32,
                    flags,
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                sparse_areas,
                mmap_fd,
            }
        })
        .collect()
}

/// Every PCI interrupt index: MSI-X with `vectors` eventfd-capable vectors; no INTx, MSI, or
/// error/request interrupts.
pub fn irqs(vectors: u16) -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| match index {
            VFIO_PCI_MSIX_IRQ_INDEX => IrqInfo {
                index,
                flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
                count: u32::from(vectors),
            },
            _ => IrqInfo {
                index,
                flags: 0,
                count: 0,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar0_has_the_doorbell_page_as_its_only_mmappable_area() {
        let r = regions(42);
        assert_eq!(r.len(), 9);
        let bar0 = &r[BAR0 as usize];
        assert_eq!(bar0.region_info.size, 0x4000);
        assert_ne!(bar0.region_info.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
        assert_eq!(bar0.mmap_fd, Some(42));
        let areas: Vec<(u64, u64)> = bar0
            .sparse_areas
            .iter()
            .map(|a| (a.area.offset, a.area.size))
            .collect();
        assert_eq!(areas, [(0x1000, 0x1000)]);
        for (i, region) in r.iter().enumerate() {
            assert_eq!(region.region_info.index as usize, i);
            if i != BAR0 as usize {
                assert!(region.mmap_fd.is_none() && region.sparse_areas.is_empty());
            }
        }
        assert_eq!(r[CONFIG as usize].region_info.size, 256);
        assert_eq!(r[BAR4 as usize].region_info.size, 0x2000);
        assert_eq!(r[2].region_info.size, 0);
    }

    #[test]
    fn only_msix_has_vectors() {
        let irqs = irqs(65);
        assert_eq!(irqs.len(), 5);
        let counts: Vec<u32> = irqs.iter().map(|i| i.count).collect();
        assert_eq!(counts, [0, 0, 65, 0, 0]);
    }
}
