//! The few instructions the guest needs, and the memory functions the compiler calls.

use core::arch::asm;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O at CPL3 is permitted by RFLAGS.IOPL=3; it has no memory effects.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in `outb`.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads the TSC, ordered after earlier loads (lfence) like kvm-unit-tests' `rdtsc_ordered`.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc is allowed at CPL3 (CR4.TSD clear); lfence only orders.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

pub fn cpuid(leaf: u32) -> u32 {
    let eax: u32;
    // SAFETY: cpuid has no memory effects; rbx is saved around it because LLVM reserves it.
    unsafe {
        asm!("mov {tmp}, rbx", "cpuid", "mov rbx, {tmp}", tmp = out(reg) _,
             inout("eax") leaf => eax, inout("ecx") 0 => _, out("edx") _, options(nostack))
    };
    eax
}

/// Volatile 32-bit MMIO load.
///
/// # Safety
/// `addr` must be identity mapped (the VMM maps all of the low 4 GiB).
pub unsafe fn mmio_read32(addr: u64) -> u32 {
    core::ptr::read_volatile(addr as *const u32)
}

/// Volatile 32-bit MMIO store.
///
/// # Safety
/// As for [`mmio_read32`].
pub unsafe fn mmio_write32(addr: u64, value: u32) {
    core::ptr::write_volatile(addr as *mut u32, value)
}

/// Volatile 8-bit MMIO load.
///
/// # Safety
/// As for [`mmio_read32`].
pub unsafe fn mmio_read8(addr: u64) -> u8 {
    core::ptr::read_volatile(addr as *const u8)
}

/// Volatile 8-bit MMIO store.
///
/// # Safety
/// As for [`mmio_read32`].
pub unsafe fn mmio_write8(addr: u64, value: u8) {
    core::ptr::write_volatile(addr as *mut u8, value)
}

/// Volatile 16-bit MMIO load.
///
/// # Safety
/// As for [`mmio_read32`], and `addr` is 2-byte aligned.
pub unsafe fn mmio_read16(addr: u64) -> u16 {
    core::ptr::read_volatile(addr as *const u16)
}

/// Volatile 16-bit MMIO store.
///
/// # Safety
/// As for [`mmio_read16`].
pub unsafe fn mmio_write16(addr: u64, value: u16) {
    core::ptr::write_volatile(addr as *mut u16, value)
}

// The guest links no libc: these are the symbols compiler-generated code calls. They use string
// instructions so the compiler cannot turn their bodies back into calls to themselves.

/// # Safety
/// Standard `memcpy` contract.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
    dst
}

/// # Safety
/// Standard `memmove` contract.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize + n) {
        return memcpy(dst, src, n);
    }
    // Overlapping with dst above src: copy backwards.
    asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
         inout("rsi") src.add(n - 1) => _, options(nostack));
    dst
}

/// # Safety
/// Standard `memset` contract.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags));
    dst
}

/// # Safety
/// Standard `memcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = (
            core::ptr::read_volatile(a.add(i)),
            core::ptr::read_volatile(b.add(i)),
        );
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard `bcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
