//! vCPU state for Linux's 64-bit boot protocol: a GDT with __BOOT_CS/__BOOT_DS, an identity map
//! of the low 4 GiB, CPL0 long mode with RSI at the zero page; and what each vCPU needs besides
//! (CPUID naming its APIC id, boot MSRs, LAPIC LINT0/LINT1), as Firecracker and Cloud Hypervisor
//! set them up.

use kvm_bindings::{kvm_cpuid_entry2, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{BOOT_STACK, GDT, PD, PDPT, PML4, TSS, ZERO_PAGE};
use crate::boot::long_mode::{
    seg_desc, segment, CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, PTE_HUGE, PTE_PRESENT,
    PTE_WRITE, RFLAGS_RESERVED,
};

/// GDT slots: the boot protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18.
const GDT_CODE: usize = 2;
const GDT_DATA: usize = 3;
const GDT_TSS: usize = 4; // 16 bytes: slots 4 and 5
const GDT_ENTRIES: usize = 6;
const CODE64: u16 = 0xa09b;
const DATA: u16 = 0xc093;
const TSS64: u16 = 0x008b;
const TSS_LIMIT: u64 = 0x67;
/// The identity map covers everything below 4 GiB: kernel, zero page, command line, initramfs.
const IDENTITY_GIB: u64 = 4;
// The page directories end below the command line.
const _: () = assert!(PD + IDENTITY_GIB * 0x1000 <= super::layout::CMDLINE);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the boot GDT and page tables failed")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Writes the GDT, an empty TSS and identity page tables (2 MiB pages) for the low 4 GiB.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).map_err(Error::Write);
    w(PML4, PDPT | PTE_PRESENT | PTE_WRITE)?;
    for g in 0..IDENTITY_GIB {
        let pd = PD + g * 0x1000;
        w(PDPT + g * 8, pd | PTE_PRESENT | PTE_WRITE)?;
        for i in 0..512u64 {
            let phys = (g << 30) | (i << 21);
            w(pd + i * 8, phys | PTE_PRESENT | PTE_WRITE | PTE_HUGE)?;
        }
    }
    for (i, d) in gdt().iter().enumerate() {
        w(GDT + i as u64 * 8, *d)?;
    }
    mem.write_slice(&[0u8; TSS_LIMIT as usize + 1], GuestAddress(TSS))
        .map_err(Error::Write)
}

fn gdt() -> [u64; GDT_ENTRIES] {
    let mut g = [0u64; GDT_ENTRIES];
    g[GDT_CODE] = seg_desc(CODE64, 0, 0xfffff);
    g[GDT_DATA] = seg_desc(DATA, 0, 0xfffff);
    g[GDT_TSS] = seg_desc(TSS64, TSS, TSS_LIMIT);
    g[GDT_TSS + 1] = TSS >> 32;
    g
}

/// Special registers for the 64-bit entry at CPL0.
pub fn sregs(mut s: kvm_sregs) -> kvm_sregs {
    let data = segment(GDT_DATA, DATA, 0, 0xffff_ffff);
    s.cs = segment(GDT_CODE, CODE64, 0, 0xffff_ffff);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = segment(GDT_TSS, TSS64, TSS, TSS_LIMIT as u32);
    s.gdt.base = GDT;
    s.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    // No IDT: interrupts are off until Linux loads its own.
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_ET | CR0_PG;
    s.cr3 = PML4;
    s.cr4 = CR4_PAE;
    s.efer = EFER_LME | EFER_LMA;
    s
}

/// General registers: the entry point, RSI at the zero page, a boot stack, interrupts off.
pub fn regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: ZERO_PAGE,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back: firmware leaves RAM cacheable.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// MSRs a BIOS would leave set (Firecracker's `create_boot_msr_entries`).
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_TSC, 0),
        msr(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        msr(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LINT0 takes the 8259's interrupts (ExtINT, virtual wire mode), LINT1 NMIs: the state a BIOS
/// leaves, which the MP table also describes.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let mut set_mode = |off: usize, mode: u32| {
        let v = lapic_reg(lapic, off);
        let v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *b as _;
        }
    };
    set_mode(APIC_LVT0, APIC_MODE_EXTINT);
    set_mode(APIC_LVT1, APIC_MODE_NMI);
}

fn lapic_reg(lapic: &kvm_lapic_state, off: usize) -> u32 {
    let b = |i: usize| lapic.regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

const CPUID_HYPERVISOR: u32 = 1 << 31;
const CPUID_HTT: u32 = 1 << 28;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Fits the supported CPUID to vCPU `apic_id` of `cpus`: one package of `cpus` single-thread
/// cores, the APIC id where Linux reads it (leaf 1, the x2APIC topology leaves 0xb/0x1f, AMD's
/// 0x8000001e), and the hypervisor bit. Leaves KVM did not report are left absent.
pub fn patch_cpuid(entries: &mut [kvm_cpuid_entry2], apic_id: u8, cpus: u8) {
    let id = u32::from(apic_id);
    let n = u32::from(cpus.max(1));
    // Bits of the APIC id that number cores within the package.
    let core_bits = n.next_power_of_two().trailing_zeros();
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (id << 24) | (n << 16) | (e.ebx & 0xffff);
                e.ecx |= CPUID_HYPERVISOR;
                if n > 1 {
                    e.edx |= CPUID_HTT;
                } else {
                    e.edx &= !CPUID_HTT;
                }
            }
            4 => {
                // Cores per package less one, in bits 31:26.
                let cores = (n.next_power_of_two() - 1).min(63);
                e.eax = (e.eax & 0x03ff_ffff) | (cores << 26);
            }
            0xb | 0x1f => {
                let (shift, count, level) = match e.index {
                    0 => (0, 1, LEVEL_SMT),
                    1 => (core_bits, n, LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = shift;
                e.ebx = count;
                e.ecx = (level << 8) | e.index;
                e.edx = id;
            }
            0x8000_0008 => {
                // NC (cores less one) in bits 7:0, the APIC id bits for cores in 15:12.
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (n - 1);
            }
            0x8000_001e => {
                e.eax = id;
                e.ebx = (e.ebx & !0xffff) | id; // core id, one thread per core
                e.ecx &= !0xff; // node 0
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0008_0800, // clflush line size 8, a brand index
            edx: CPUID_HTT,
            ..Default::default()
        }
    }

    #[test]
    fn gdt_has_the_boot_protocol_selectors() {
        let s = sregs(kvm_sregs::default());
        assert_eq!(s.cs.selector, 0x10, "__BOOT_CS");
        assert_eq!(s.ds.selector, 0x18, "__BOOT_DS");
        assert_eq!((s.ss.selector, s.es.selector), (0x18, 0x18));
        assert_eq!((s.cs.dpl, s.cs.l, s.cs.db), (0, 1, 0), "64-bit CPL0 code");
        assert_eq!(gdt()[GDT_CODE], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt()[GDT_DATA], 0x00cf_9300_0000_ffff);
        assert_eq!(s.efer & EFER_LMA, EFER_LMA);
        assert_eq!(s.cr0 & CR0_PG, CR0_PG);
    }

    #[test]
    fn entry_registers_point_rsi_at_the_zero_page() {
        let r = regs(0x10_0200);
        assert_eq!((r.rip, r.rsi), (0x10_0200, ZERO_PAGE));
        assert_eq!(r.rflags & (1 << 9), 0, "interrupts off");
        assert_eq!(r.rflags & (3 << 12), 0, "IOPL 0: the kernel runs at CPL0");
    }

    #[test]
    fn identity_map_covers_4g_at_cpl0() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_tables(&mem).unwrap();
        let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        for va in [0x10_0000u64, 0x3fff_f000, 0xbfe0_0000, 0xffe0_0000] {
            let pml4e = read(PML4 + ((va >> 39) & 511) * 8);
            let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 511) * 8);
            let pde = read((pdpte & !0xfff) + ((va >> 21) & 511) * 8);
            assert_eq!(pde & (PTE_PRESENT | PTE_HUGE), PTE_PRESENT | PTE_HUGE);
            assert_eq!(pde & (1 << 2), 0, "supervisor only");
            assert_eq!((pde & !0x1f_ffff & ((1 << 52) - 1)) | (va & 0x1f_ffff), va);
        }
    }

    #[test]
    fn cpuid_names_each_vcpu_by_its_apic_id() {
        let mut e = vec![
            entry(1, 0),
            entry(4, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_001e, 0),
        ];
        patch_cpuid(&mut e, 3, 6);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 6);
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(e[0].ecx & CPUID_HYPERVISOR, 0);
        assert_ne!(e[0].edx & CPUID_HTT, 0);
        assert_eq!(e[1].eax >> 26, 7);
        assert_eq!((e[2].ebx, e[2].ecx >> 8, e[2].edx), (1, LEVEL_SMT, 3));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx >> 8), (3, 6, LEVEL_CORE));
        assert_eq!((e[4].ebx, e[4].ecx, e[4].edx), (0, 2, 3), "invalid level");
        assert_eq!(e[5].eax, 3);
        patch_cpuid(&mut e, 0, 1);
        assert_eq!(e[0].edx & CPUID_HTT, 0, "one CPU: no HTT");
        assert_eq!(e[3].eax, 0);
    }

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi() {
        let mut l = kvm_lapic_state::default();
        // A masked LVT with some other delivery mode, as after reset.
        l.regs[APIC_LVT0 + 2] = 1;
        l.regs[APIC_LVT0 + 1] = 0x02;
        set_lint(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x1_0700);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x400);
    }

    #[test]
    fn boot_msrs_enable_fast_strings_and_write_back_mtrrs() {
        let m = boot_msrs();
        let get = |i| m.iter().find(|e| e.index == i).map(|e| e.data);
        assert_eq!(get(MSR_IA32_MISC_ENABLE), Some(1));
        assert_eq!(get(MSR_MTRR_DEF_TYPE), Some(0x806));
        assert_eq!(get(MSR_LSTAR), Some(0));
    }
}
