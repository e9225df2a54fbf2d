//! Guest RAM mapped for a kernel VFIO device: VFIO_IOMMU_MAP_DMA through a type1 container.
//!
//! The kernel pins every page it maps, charging them to RLIMIT_MEMLOCK; a too-low limit is the
//! usual failure, so it gets its own error that says what to raise.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use vfio_ioctls::{VfioContainer, VfioError};

use crate::mapper::{Error, Ledger, MapStats, Mapper, RamRegion};

/// Maps guest RAM into a VFIO container's IOMMU domain (IOVA = GPA); whatever is still mapped
/// is unmapped on drop.
pub struct VfioContainerMapper {
    container: Arc<VfioContainer>,
    ledger: Ledger,
}

impl VfioContainerMapper {
    /// The container must already have a group attached (the IOMMU type is set then).
    pub fn new(container: Arc<VfioContainer>) -> Self {
        VfioContainerMapper {
            container,
            ledger: Ledger::default(),
        }
    }

    pub fn container(&self) -> &Arc<VfioContainer> {
        &self.container
    }
}

impl Mapper for VfioContainerMapper {
    unsafe fn map(&mut self, region: &RamRegion) -> Result<(), Error> {
        let (gpa, len) = (region.gpa, region.len);
        self.ledger.check_map(gpa, len)?;
        let size = usize::try_from(len).map_err(|_| Error::BadWindow { gpa, len })?;
        let started = Instant::now();
        // SAFETY: the caller keeps `host..host+len` mapped until it is unmapped here (the
        // `Mapper::map` contract), which is `vfio_dma_map`'s contract too.
        unsafe { self.container.vfio_dma_map(gpa, size, region.host) }
            .map_err(|e| map_error(gpa, len, self.ledger.stats().pinned_bytes + len, e))?;
        self.ledger.mapped(gpa, len, started);
        Ok(())
    }

    fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), Error> {
        self.ledger.check_unmap(gpa, len)?;
        let size = usize::try_from(len).map_err(|_| Error::BadWindow { gpa, len })?;
        let started = Instant::now();
        self.container
            .vfio_dma_unmap(gpa, size)
            .map_err(|e| Error::VfioUnmap {
                gpa,
                len,
                source: vfio_io_error(e),
            })?;
        self.ledger.unmapped(gpa, len, started);
        Ok(())
    }

    fn stats(&self) -> MapStats {
        self.ledger.stats()
    }
}

impl Drop for VfioContainerMapper {
    fn drop(&mut self) {
        for (gpa, len) in self.ledger.windows().to_vec() {
            if let Err(e) = self.unmap(gpa, len) {
                log::warn!("{e}");
            }
        }
    }
}

/// Classifies a failed VFIO_IOMMU_MAP_DMA: ENOMEM and EPERM mean the pin would exceed
/// RLIMIT_MEMLOCK (type1 answers ENOMEM; some kernels EPERM without CAP_IPC_LOCK).
fn map_error(gpa: u64, len: u64, pinned_after: u64, e: VfioError) -> Error {
    let source = vfio_io_error(e);
    match source.raw_os_error() {
        Some(libc::ENOMEM | libc::EPERM) => Error::MemlockLimit {
            gpa,
            len,
            pinned_after,
            limit: memlock_limit(),
            source,
        },
        _ => Error::VfioMap { gpa, len, source },
    }
}

/// The errno inside a VFIO ioctl error, or the error itself as text.
fn vfio_io_error(e: VfioError) -> io::Error {
    match e {
        VfioError::IommuDmaMap(errno) | VfioError::IommuDmaUnmap(errno) => {
            io::Error::from_raw_os_error(errno.errno())
        }
        other => io::Error::other(other.to_string()),
    }
}

/// The soft RLIMIT_MEMLOCK, for the error message.
fn memlock_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    match unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } {
        0 if lim.rlim_cur == libc::RLIM_INFINITY => "unlimited".into(),
        0 => format!("{} bytes", lim.rlim_cur),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::errno;

    use super::*;

    #[test]
    fn pin_failures_point_at_rlimit_memlock() {
        for errno in [libc::ENOMEM, libc::EPERM] {
            let e = map_error(
                0x1000,
                0x2000,
                0x3000,
                VfioError::IommuDmaMap(errno::Error::new(errno)),
            );
            let msg = e.to_string();
            assert!(
                matches!(
                    e,
                    Error::MemlockLimit {
                        pinned_after: 0x3000,
                        ..
                    }
                ),
                "{msg}"
            );
            assert!(msg.contains("RLIMIT_MEMLOCK"), "{msg}");
            assert!(msg.contains("0x1000+0x2000"), "{msg}");
        }
    }

    #[test]
    fn other_map_failures_keep_their_errno() {
        let e = map_error(
            0,
            0x1000,
            0x1000,
            VfioError::IommuDmaMap(errno::Error::new(libc::EINVAL)),
        );
        match e {
            Error::VfioMap { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EINVAL)),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn memlock_limit_is_readable() {
        let l = memlock_limit();
        assert!(l == "unlimited" || l.ends_with(" bytes"), "{l}");
    }
}
