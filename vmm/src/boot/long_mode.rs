//! 64-bit long mode at CPL3 for the bench guest: identity page tables with the user bit, a GDT
//! with DPL3 segments and a TSS, and the vCPU registers that enter it.
//!
//! CPL3 because that is what PVM (software virtualization) runs natively; VT-x and AMD-V run it
//! natively too, so the guest is the same constant on every host.

use iopath_mailbox::layout::{GDT_GPA, IDENTITY_MAP_SIZE, PDPT_GPA, PD_GPA, PML4_GPA, TSS_GPA};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub(crate) const PTE_PRESENT: u64 = 1 << 0;
pub(crate) const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
pub(crate) const PTE_HUGE: u64 = 1 << 7;

pub(crate) const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
pub(crate) const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
pub(crate) const CR0_PG: u64 = 1 << 31;
pub(crate) const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
pub(crate) const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;

pub(crate) const RFLAGS_RESERVED: u64 = 1 << 1;
const RFLAGS_IOPL3: u64 = 3 << 12;

/// GDT slots.
const GDT_KERNEL_CODE: usize = 1;
const GDT_KERNEL_DATA: usize = 2;
const GDT_USER_DATA: usize = 3;
const GDT_USER_CODE: usize = 4;
const GDT_TSS: usize = 5; // 16 bytes: slots 5 and 6
const GDT_ENTRIES: usize = 7;
const TSS_SIZE: u64 = 0x68;
/// An I/O permission bitmap follows the TSS: one bit per port, all clear (allowed), and the
/// terminating all-ones byte the CPU reads past the last port.
const IO_BITMAP_SIZE: u64 = 65536 / 8 + 1;
const TSS_LIMIT: u64 = TSS_SIZE + IO_BITMAP_SIZE - 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing boot structures to guest memory failed")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Writes the identity map (2 MiB pages, user accessible, 4 GiB) and the GDT/TSS.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let pdpts = IDENTITY_MAP_SIZE >> 30;
    let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).map_err(Error::Write);
    w(PML4_GPA, PDPT_GPA | PTE_PRESENT | PTE_WRITE | PTE_USER)?;
    for g in 0..pdpts {
        let pd = PD_GPA + g * 0x1000;
        w(PDPT_GPA + g * 8, pd | PTE_PRESENT | PTE_WRITE | PTE_USER)?;
        for i in 0..512u64 {
            let phys = (g << 30) | (i << 21);
            w(
                pd + i * 8,
                phys | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_HUGE,
            )?;
        }
    }
    for (i, d) in gdt().iter().enumerate() {
        w(GDT_GPA + i as u64 * 8, *d)?;
    }
    // An empty TSS (no ring transitions happen, but VT-x requires a usable TR) with an
    // all-allowed I/O bitmap. IOPL=3 alone grants port access on VT-x and AMD-V, but PVM keeps
    // the real IOPL at 0 while the guest runs and checks the bitmap instead.
    mem.write_obj(TSS_SIZE as u16, GuestAddress(TSS_GPA + 0x66))
        .map_err(Error::Write)?;
    let bitmap = TSS_GPA + TSS_SIZE;
    mem.write_slice(&[0u8; (IO_BITMAP_SIZE - 1) as usize], GuestAddress(bitmap))
        .map_err(Error::Write)?;
    mem.write_obj(0xffu8, GuestAddress(bitmap + IO_BITMAP_SIZE - 1))
        .map_err(Error::Write)?;
    Ok(())
}

fn gdt() -> [u64; GDT_ENTRIES] {
    let mut g = [0u64; GDT_ENTRIES];
    g[GDT_KERNEL_CODE] = seg_desc(0xa09b, 0, 0xfffff);
    g[GDT_KERNEL_DATA] = seg_desc(0xc093, 0, 0xfffff);
    g[GDT_USER_DATA] = seg_desc(0xc0f3, 0, 0xfffff);
    g[GDT_USER_CODE] = seg_desc(0xa0fb, 0, 0xfffff);
    g[GDT_TSS] = seg_desc(0x008b, TSS_GPA, TSS_LIMIT);
    g[GDT_TSS + 1] = TSS_GPA >> 32;
    g
}

/// A legacy descriptor: `flags` is the access byte in bits 0-7 and the flags nibble in 12-15.
pub(crate) fn seg_desc(flags: u16, base: u64, limit: u64) -> u64 {
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
        | ((limit & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

pub(crate) fn segment(index: usize, flags: u16, base: u64, limit: u32) -> kvm_segment {
    let rpl = (flags >> 5) & 3;
    kvm_segment {
        base,
        limit,
        selector: (index as u16) << 3 | rpl,
        type_: (flags & 0xf) as u8,
        present: ((flags >> 7) & 1) as u8,
        dpl: rpl as u8,
        db: ((flags >> 14) & 1) as u8,
        s: ((flags >> 4) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        g: ((flags >> 15) & 1) as u8,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Special registers for 64-bit mode at CPL3.
pub fn sregs(mut s: kvm_sregs) -> kvm_sregs {
    let code = segment(GDT_USER_CODE, 0xa0fb, 0, 0xffff_ffff);
    let data = segment(GDT_USER_DATA, 0xc0f3, 0, 0xffff_ffff);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = segment(GDT_TSS, 0x008b, TSS_GPA, TSS_LIMIT as u32);
    s.ldt = kvm_segment {
        unusable: 1,
        type_: 2,
        present: 1,
        ..Default::default()
    };
    s.gdt.base = GDT_GPA;
    s.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = PML4_GPA;
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    s.efer = EFER_LME | EFER_LMA;
    s
}

/// General registers: entry point, stack, IOPL=3 with interrupts off.
pub fn regs(entry: u64, stack_top: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        // As if the entry had been called: RSP+8 is 16-byte aligned, as the ABI expects.
        rsp: stack_top - 8,
        rflags: RFLAGS_RESERVED | RFLAGS_IOPL3,
        ..Default::default()
    }
}

/// x87 and SSE in their reset state, with all exceptions masked.
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryBackend;

    use super::*;

    #[test]
    fn descriptors_encode_as_the_sdm_says() {
        // Known values (Linux GDT_ENTRY_INIT): 64-bit user code and data, flat.
        assert_eq!(seg_desc(0xa0fb, 0, 0xfffff), 0x00af_fb00_0000_ffff);
        assert_eq!(seg_desc(0xc0f3, 0, 0xfffff), 0x00cf_f300_0000_ffff);
        assert_eq!(seg_desc(0x008b, 0x1800, 0x67), 0x0000_8b00_1800_0067);
        assert_eq!(gdt()[GDT_TSS], 0x0000_8b00_1800_2068);
    }

    #[test]
    fn user_segments_are_dpl3_and_long() {
        let s = sregs(kvm_sregs::default());
        assert_eq!((s.cs.dpl, s.cs.l, s.cs.db, s.cs.selector), (3, 1, 0, 0x23));
        assert_eq!((s.ss.dpl, s.ss.selector), (3, 0x1b));
        assert_eq!(s.tr.selector, 0x28);
        assert_eq!(s.efer & EFER_LMA, EFER_LMA);
    }

    #[test]
    fn page_tables_identity_map_with_the_user_bit() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_tables(&mem).unwrap();
        let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let pml4e = read(PML4_GPA);
        assert_eq!(pml4e & !0xfff, PDPT_GPA);
        // Walk 0xd000_1000 (an MMIO probe address) by hand.
        let va = 0xd000_1000u64;
        let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 511) * 8);
        let pde = read((pdpte & !0xfff) + ((va >> 21) & 511) * 8);
        assert_eq!(
            pde & (PTE_USER | PTE_HUGE | PTE_PRESENT),
            PTE_USER | PTE_HUGE | PTE_PRESENT
        );
        assert_eq!((pde & !0x1f_ffff & ((1 << 52) - 1)) | (va & 0x1f_ffff), va);
        assert!(mem.address_in_range(GuestAddress(PD_GPA + 4 * 4096 - 1)));
    }

    #[test]
    fn entry_registers_grant_port_io_and_align_the_stack() {
        let r = regs(0x200000, 0x100_0000);
        assert_eq!(r.rflags & RFLAGS_IOPL3, RFLAGS_IOPL3);
        assert_eq!(r.rflags & (1 << 9), 0, "interrupts stay off");
        assert_eq!((r.rsp + 8) % 16, 0);
    }
}
