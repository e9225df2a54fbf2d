//! Shared memory playing a guest's RAM (or the doorbell page a client maps): a memfd, or a
//! received file descriptor, mapped MAP_SHARED into the test process.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `len` bytes of a file, mapped read-write.
pub struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through raw pointers with
// explicit volatile or atomic operations.
unsafe impl Send for SharedMap {}

impl SharedMap {
    pub fn new(fd: RawFd, offset: u64, len: usize) -> SharedMap {
        // SAFETY: a fresh shared mapping (no MAP_FIXED); checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        SharedMap {
            ptr: ptr.cast(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn check(&self, offset: u64, len: usize) -> usize {
        let start = offset as usize;
        assert!(start + len <= self.len, "{offset:#x}+{len} outside the map");
        start
    }

    pub fn write(&self, offset: u64, data: &[u8]) {
        let start = self.check(offset, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds (checked); the device may access the memory concurrently, so
            // no reference to it is ever formed.
            unsafe { self.ptr.add(start + i).write_volatile(*b) };
        }
    }

    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let start = self.check(offset, len);
        // SAFETY: as in `write`.
        (0..len)
            .map(|i| unsafe { self.ptr.add(start + i).read_volatile() })
            .collect()
    }

    fn atomic(&self, offset: u64) -> &AtomicU32 {
        let start = self.check(offset, 4);
        assert_eq!(start % 4, 0);
        // SAFETY: in bounds, aligned, and live as long as `self`.
        unsafe { AtomicU32::from_ptr(self.ptr.add(start).cast()) }
    }

    /// A 32-bit load that orders later reads after it (a completion's phase tag).
    pub fn load_acquire(&self, offset: u64) -> u32 {
        self.atomic(offset).load(Ordering::Acquire)
    }

    /// A 32-bit store that orders earlier writes before it (a doorbell).
    pub fn store_release(&self, offset: u64, value: u32) {
        self.atomic(offset).store(value, Ordering::Release)
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` created.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Guest RAM: a memfd of `len` bytes and the test's mapping of it.
pub struct GuestRam {
    pub file: File,
    pub map: SharedMap,
}

impl GuestRam {
    pub fn new(len: usize) -> GuestRam {
        // SAFETY: a NUL-terminated name; the fd is checked, then owned by `File`.
        let fd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64).unwrap();
        let map = SharedMap::new(file.as_raw_fd(), 0, len);
        GuestRam { file, map }
    }
}
