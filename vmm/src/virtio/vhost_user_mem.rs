//! Guest memory as a vhost-user backend sees it: the memfd regions it maps (fd, offset, GPA,
//! and our host address, which vhost-user uses as the key for ring addresses), and ring
//! addresses translated from guest-physical to our host addresses after a bounds check.

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::device::QueueActivation;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("guest RAM region at {0:#x} is not backed by a file a backend could map")]
    NotShareable(u64),
    #[error(
        "queue {queue}: the {part} at {gpa:#x} (+{len:#x} bytes) is not inside one guest RAM \
         region"
    )]
    RingOutsideRam {
        queue: u16,
        part: &'static str,
        gpa: u64,
        len: u64,
    },
}

/// Every guest RAM region, for SET_MEM_TABLE / ADD_MEM_REG.
pub fn regions(mem: &GuestMemoryMmap) -> Result<Vec<VhostUserMemoryRegionInfo>, Error> {
    mem.iter()
        .map(|r| {
            VhostUserMemoryRegionInfo::from_guest_region(r)
                .map_err(|_| Error::NotShareable(r.start_addr().0))
        })
        .collect()
}

/// Host addresses of a split ring's descriptor table, driver (avail) and device (used) rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddrs {
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// Translates `q`'s ring addresses, checking each part (with its EVENT_IDX field) lies inside
/// one region: the backend maps regions separately, so a part cannot span two.
pub fn ring_addrs(mem: &GuestMemoryMmap, q: &QueueActivation) -> Result<RingAddrs, Error> {
    let n = u64::from(q.size);
    let host = |part: &'static str, gpa: u64, len: u64| {
        host_range(mem, gpa, len).ok_or(Error::RingOutsideRam {
            queue: q.index,
            part,
            gpa,
            len,
        })
    };
    Ok(RingAddrs {
        desc: host("descriptor table", q.desc, 16 * n)?,
        // flags, idx, ring[n], used_event.
        driver: host("driver ring", q.driver, 6 + 2 * n)?,
        // flags, idx, ring[n] of {id, len}, avail_event.
        device: host("device ring", q.device, 6 + 8 * n)?,
    })
}

/// Our host address of guest range `gpa..gpa + len`, if it lies in one region.
fn host_range(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Option<u64> {
    let (region, offset) = mem.to_region_addr(GuestAddress(gpa))?;
    let end = offset.0.checked_add(len)?;
    if end > region.len() {
        return None;
    }
    Some(region.as_ptr() as u64 + offset.0)
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::memory::{GuestRam, RamConfig};

    fn queue(desc: u64, driver: u64, device: u64) -> QueueActivation {
        QueueActivation {
            index: 0,
            size: 256,
            desc,
            driver,
            device,
            kick: EventFd::new(0).unwrap(),
            call: EventFd::new(0).unwrap(),
        }
    }

    #[test]
    fn regions_share_the_memfd_at_their_offsets() {
        let ram = GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap();
        let r = regions(ram.memory()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].guest_phys_addr, 0);
        assert_eq!(r[0].memory_size, 1 << 20);
        assert_eq!(r[0].mmap_offset, 0);
        assert!(r[0].mmap_handle >= 0);
    }

    #[test]
    fn rings_translate_inside_ram_and_are_refused_outside() {
        let ram = GuestRam::new(RamConfig {
            size: 1 << 20,
            hugepages: false,
        })
        .unwrap();
        let base = ram.memory().iter().next().unwrap().as_ptr() as u64;
        let a = ring_addrs(ram.memory(), &queue(0x1000, 0x2000, 0x3000)).unwrap();
        assert_eq!(
            a,
            RingAddrs {
                desc: base + 0x1000,
                driver: base + 0x2000,
                device: base + 0x3000
            }
        );
        // The used ring of 256 entries needs 2054 bytes: it does not fit 1 KiB before the end.
        let err = ring_addrs(ram.memory(), &queue(0x1000, 0x2000, (1 << 20) - 0x400));
        assert!(matches!(
            err,
            Err(Error::RingOutsideRam {
                part: "device ring",
                ..
            })
        ));
        assert!(ring_addrs(ram.memory(), &queue(u64::MAX - 8, 0x2000, 0x3000)).is_err());
    }
}
