//! A shared mapping of a range of another process's memory, received as a file descriptor
//! (memfd, hugetlbfs file): owned, unmapped on drop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::space::Perm;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("memory window of {len:#x} bytes at file offset {offset:#x} is empty or too large")]
    BadRange { offset: u64, len: u64 },
    #[error("memory window {offset:#x}+{len:#x} ends beyond the file's {file_size:#x} bytes")]
    BeyondEnd {
        offset: u64,
        len: u64,
        file_size: u64,
    },
    #[error("a DMA window must allow reads, writes or both")]
    NoAccess,
    #[error("cannot stat the memory file descriptor")]
    Stat(#[source] io::Error),
    #[error("cannot mmap {len:#x} bytes at file offset {offset:#x}")]
    Mmap {
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
}

/// `len` bytes of a file from `offset`, mapped MAP_SHARED.
#[derive(Debug)]
pub struct FdMapping {
    /// Start of the mmap (page aligned).
    base: usize,
    map_len: usize,
    /// Offset of the requested range inside the mmap.
    delta: usize,
    len: usize,
}

impl FdMapping {
    /// Maps `fd[offset..offset + len]` with protection matching `perm`. A regular file (memfd,
    /// hugetlbfs) must be at least `offset + len` long: touching a page past its end would
    /// raise SIGBUS in this process.
    pub fn new(fd: BorrowedFd<'_>, offset: u64, len: u64, perm: Perm) -> Result<Self, Error> {
        let bad = || Error::BadRange { offset, len };
        let end = offset.checked_add(len).ok_or_else(bad)?;
        if len == 0 || usize::try_from(len).is_err() {
            return Err(bad());
        }
        if !perm.read && !perm.write {
            return Err(Error::NoAccess);
        }
        if let Some(file_size) = regular_file_size(fd)? {
            if end > file_size {
                return Err(Error::BeyondEnd {
                    offset,
                    len,
                    file_size,
                });
            }
        }
        let page = page_size();
        let map_offset = offset - offset % page;
        let delta = (offset - map_offset) as usize;
        let map_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(delta))
            .ok_or_else(bad)?;
        let file_offset = libc::off_t::try_from(map_offset).map_err(|_| bad())?;
        let mut prot = libc::PROT_READ;
        if perm.write {
            prot |= libc::PROT_WRITE;
        }
        // SAFETY: a fresh shared mapping chosen by the kernel (no MAP_FIXED): it cannot alias
        // anything this process owns. The result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                file_offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::Mmap {
                offset,
                len,
                source: io::Error::last_os_error(),
            });
        }
        Ok(FdMapping {
            base: base as usize,
            map_len,
            delta,
            len: len as usize,
        })
    }

    /// The first byte of the requested range.
    pub fn as_ptr(&self) -> *mut u8 {
        (self.base + self.delta) as *mut u8
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for FdMapping {
    fn drop(&mut self) {
        // SAFETY: `base..base+map_len` is the mapping `new` created, unmapped only here.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.map_len) };
    }
}

/// The size of `fd` if it is a regular file; `None` for anything else (a device node has no
/// meaningful size).
fn regular_file_size(fd: BorrowedFd<'_>) -> Result<Option<u64>, Error> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration of the borrow; fstat writes one `stat`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::Stat(io::Error::last_os_error()));
    }
    Ok((st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(st.st_size as u64))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs::File;
    use std::os::fd::{AsFd, FromRawFd};

    use super::*;

    /// A memfd of `len` bytes.
    pub(crate) fn memfd(len: u64) -> File {
        // SAFETY: a NUL-terminated name; the fd returned is checked and then owned by `File`.
        let fd = unsafe { libc::memfd_create(c"iommu-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: a fresh fd nothing else owns.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn unaligned_offsets_are_mapped() {
        use std::os::unix::fs::FileExt;
        let f = memfd(0x3000);
        f.write_all_at(b"hello", 0x1234).unwrap();
        let m = FdMapping::new(f.as_fd(), 0x1234, 5, Perm::RO).unwrap();
        // SAFETY: the mapping covers 5 readable bytes.
        let got = unsafe { std::slice::from_raw_parts(m.as_ptr(), 5) };
        assert_eq!(got, b"hello");
    }

    #[test]
    fn windows_past_the_end_of_the_file_are_refused() {
        let f = memfd(0x2000);
        let err = FdMapping::new(f.as_fd(), 0x1000, 0x2000, Perm::RW).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BeyondEnd {
                    file_size: 0x2000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            FdMapping::new(f.as_fd(), 0, 0, Perm::RW),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            FdMapping::new(f.as_fd(), u64::MAX, 2, Perm::RW),
            Err(Error::BadRange { .. })
        ));
        let none = Perm {
            read: false,
            write: false,
        };
        assert!(matches!(
            FdMapping::new(f.as_fd(), 0, 0x1000, none),
            Err(Error::NoAccess)
        ));
    }

    #[test]
    fn a_read_only_file_cannot_be_mapped_writable() {
        let f = memfd(0x1000);
        let ro = File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        let err = FdMapping::new(ro.as_fd(), 0, 0x1000, Perm::RW).unwrap_err();
        assert!(matches!(err, Error::Mmap { .. }), "{err}");
        FdMapping::new(ro.as_fd(), 0, 0x1000, Perm::RO).unwrap();
    }
}
