//! The PVH entry: lets a VMM that boots PVH ELF kernels (QEMU's `-kernel`) start the bench
//! guest. Our VMM never comes here: it builds the same state from the host and enters `_start`
//! directly (vmm/src/boot/long_mode.rs).
//!
//! A PVH loader jumps to the address in the XEN_ELFNOTE_PHYS32_ENTRY note in 32-bit protected
//! mode at CPL0 with paging off, flat segments and `ebx` pointing at its start_info (ignored:
//! the job comes from the mailbox and the guest's memory layout is fixed). The code below
//! builds what long_mode.rs builds, at the same addresses: GDT with DPL3 segments and a TSS,
//! a TSS with an all-allowed I/O permission bitmap, identity page tables with the user bit;
//! then turns on long mode and `iretq`s to CPL3 with IOPL=3 and interrupts off.
//!
//! One difference in how the job arrives: PC firmware clears the mailbox's page range before
//! it boots, so the VMM stages the mailbox at `PVH_MAILBOX_GPA` and this code copies it to
//! `MAILBOX_GPA`, where `_start` reads it and the VMM reads the results back.
//!
//! On PVM every CPL0 instruction is emulated (about 1000x slower), so this stays short, uses
//! only instructions any x86 emulator has, and hands over to CPL3 as soon as it can.

use core::arch::global_asm;

use iopath_mailbox::layout::{
    GDT_GPA, IDENTITY_MAP_SIZE, MAILBOX_GPA, PDPT_GPA, PD_GPA, PML4_GPA, PVH_MAILBOX_GPA,
    STACK_TOP, TSS_GPA,
};
use iopath_mailbox::Mailbox;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_HUGE: u64 = 1 << 7;
/// A table entry that points at the next level; every level carries the user bit.
const PTE_TABLE: u64 = PTE_PRESENT | PTE_WRITE | PTE_USER;
/// A 2 MiB or 1 GiB page.
const PTE_LEAF: u64 = PTE_TABLE | PTE_HUGE;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const MSR_EFER: u64 = 0xc000_0080;
const EFER_LME: u64 = 1 << 8;
const RFLAGS_RESERVED: u64 = 1 << 1;
const RFLAGS_IOPL3: u64 = 3 << 12;
/// CPUID 0x8000_0001 EDX: 1 GiB pages.
const CPUID_PDPE1GB_BIT: u64 = 26;
/// MXCSR with every SSE exception masked, as our VMM's `fpu()` sets it.
const MXCSR_DEFAULT: u32 = 0x1f80;

/// GDT slots, as long_mode.rs lays them out.
const GDT_KERNEL_CODE: usize = 1;
const GDT_KERNEL_DATA: usize = 2;
const GDT_USER_DATA: usize = 3;
const GDT_USER_CODE: usize = 4;
const GDT_TSS: usize = 5;
const GDT_ENTRIES: usize = 7;
const TSS_SIZE: u64 = 0x68;
/// One bit per port, all clear, plus the all-ones byte the CPU reads past the last port.
const IO_BITMAP_SIZE: u64 = 65536 / 8 + 1;
const TSS_LIMIT: u64 = TSS_SIZE + IO_BITMAP_SIZE - 1;
/// First byte past the I/O bitmap: the GDT/TSS area is [GDT_GPA, TABLES_END).
const TABLES_END: u64 = TSS_GPA + TSS_LIMIT + 1;

/// Page directories (2 MiB pages) cover the identity map, exactly as our VMM's.
const PD_COUNT: u64 = IDENTITY_MAP_SIZE >> 30;
/// Where the CPU has 1 GiB pages, the map goes on to here, because firmware may place 64-bit
/// BARs above 4 GiB (SeaBIOS 1.16.2 with little RAM does not). Our VMM maps 4 GiB only, as it
/// places every BAR below; pci.rs still refuses BARs past `IDENTITY_MAP_SIZE` either way.
const HIGH_MAP_GIB: u64 = 64;

const fn selector(index: usize, rpl: u16) -> u16 {
    (index as u16) << 3 | rpl
}

/// A legacy descriptor: `flags` is the access byte in bits 0-7 and the flags nibble in 12-15
/// (the same encoding as long_mode.rs's `seg_desc`).
const fn seg_desc(flags: u16, base: u64, limit: u64) -> u64 {
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
        | ((limit & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// Copied to GDT_GPA. The TSS is "available" (type 9) here because `ltr` faults on a busy one;
/// `ltr` marks it busy, which leaves the GDT byte for byte as our VMM writes it.
static PVH_GDT: [u64; GDT_ENTRIES] = [
    0,
    seg_desc(0xa09b, 0, 0xfffff),
    seg_desc(0xc093, 0, 0xfffff),
    seg_desc(0xc0f3, 0, 0xfffff),
    seg_desc(0xa0fb, 0, 0xfffff),
    seg_desc(0x0089, TSS_GPA, TSS_LIMIT),
    TSS_GPA >> 32,
];

// The tables this code zeroes must be the ones it fills, and everything must sit where 32-bit
// code can address it.
const _: () = assert!(PDPT_GPA == PML4_GPA + 0x1000);
const _: () = assert!(TABLES_END <= PML4_GPA && PD_GPA >= PDPT_GPA + 0x1000);
const _: () = assert!(PD_COUNT <= 4 && PD_COUNT * 512 * (2 << 20) == IDENTITY_MAP_SIZE);
const _: () = assert!(PD_GPA + PD_COUNT * 0x1000 <= MAILBOX_GPA);
// 32-bit addresses, all of them.
const _: () = assert!((STACK_TOP | PVH_MAILBOX_GPA | MAILBOX_GPA) >> 32 == 0);

global_asm!(
    // The note QEMU (and linux-loader) look for. The descriptor is 8 bytes because QEMU reads
    // a pointer-sized value from ELF64 notes; linux-loader reads its low 4 bytes.
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 8",
    ".long {xen_elfnote_phys32_entry}",
    ".asciz \"Xen\"",
    ".balign 4",
    ".quad pvh_start",
    ".balign 4",
    ".popsection",
    //
    ".pushsection .text.pvh, \"ax\", @progbits",
    ".code32",
    ".globl pvh_start",
    "pvh_start:",
    "cli",
    "cld",
    // The PVH ABI leaves esp undefined; the iretq frame below needs a stack.
    "movl ${stack_top}, %esp",
    // Zero the GDT/TSS area and the PML4 and PDPT pages: firmware may have left anything there.
    "xorl %eax, %eax",
    "movl ${gdt}, %edi",
    "movl ${tables_dwords}, %ecx",
    "rep stosl",
    "movl ${pml4}, %edi",
    "movl $2048, %ecx",
    "rep stosl",
    // The mailbox, from where the VMM staged it.
    "movl ${mailbox_staged}, %esi",
    "movl ${mailbox}, %edi",
    "movl ${mailbox_dwords}, %ecx",
    "rep movsl",
    // GDT.
    "movl ${gdt_template}, %esi",
    "movl ${gdt}, %edi",
    "movl ${gdt_dwords}, %ecx",
    "rep movsl",
    // TSS: the I/O bitmap follows the 0x68-byte TSS; its terminator is all ones.
    "movw ${tss_size}, {iomap_base_field}",
    "movb $0xff, {bitmap_last}",
    // PML4[0] -> PDPT; PDPT[0..PD_COUNT] -> page directories.
    "movl ${pdpt_entry}, {pml4}",
    "movl ${pd_entry}, %eax",
    "movl ${pdpt}, %edi",
    "movl ${pd_count}, %ecx",
    "1:",
    "movl %eax, (%edi)",
    "addl $0x1000, %eax",
    "addl $8, %edi",
    "decl %ecx",
    "jnz 1b",
    // 2 MiB pages over the identity map; 4 GiB wraps eax to the flags, harmlessly, at the end.
    "movl ${leaf}, %eax",
    "movl ${pd}, %edi",
    "movl ${pd_entries}, %ecx",
    "2:",
    "movl %eax, (%edi)",
    "movl $0, 4(%edi)",
    "addl $0x200000, %eax",
    "addl $8, %edi",
    "decl %ecx",
    "jnz 2b",
    // 1 GiB pages from the end of the identity map to HIGH_MAP_GIB, if the CPU has them.
    "movl $0x80000000, %eax",
    "cpuid",
    "cmpl $0x80000001, %eax",
    "jb 4f",
    "movl $0x80000001, %eax",
    "cpuid",
    "btl ${pdpe1gb_bit}, %edx",
    "jnc 4f",
    "movl ${pd_count}, %ecx",
    "movl ${pdpt_high}, %edi",
    "3:",
    "movl %ecx, %eax",
    "shll $30, %eax",
    "orl ${leaf}, %eax",
    "movl %eax, (%edi)",
    "movl %ecx, %eax",
    "shrl $2, %eax",
    "movl %eax, 4(%edi)",
    "addl $8, %edi",
    "incl %ecx",
    "cmpl ${high_map_gib}, %ecx",
    "jb 3b",
    "4:",
    // Long mode: PAE, CR3, EFER.LME, then paging (which sets EFER.LMA).
    "movl ${cr4}, %eax",
    "movl %eax, %cr4",
    "movl ${pml4}, %eax",
    "movl %eax, %cr3",
    "movl ${msr_efer}, %ecx",
    "movl ${efer}, %eax",
    "xorl %edx, %edx",
    "wrmsr",
    "lgdt pvh_gdtr",
    "movl ${cr0}, %eax",
    "movl %eax, %cr0",
    "ljmp ${kernel_code}, $pvh_long",
    ".code64",
    "pvh_long:",
    "movl ${kernel_data}, %eax",
    "movl %eax, %ss",
    "movl ${tss_sel}, %eax",
    "ltr %ax",
    // DPL3 data segments survive the return to CPL3, as our VMM sets them.
    "movl ${user_data}, %eax",
    "movl %eax, %ds",
    "movl %eax, %es",
    "movl %eax, %fs",
    "movl %eax, %gs",
    // To CPL3 at pvh_user with RSP as if `_start` had been called (long_mode.rs `regs`).
    "pushq ${user_data}",
    "pushq ${user_rsp}",
    "pushq ${rflags}",
    "pushq ${user_code}",
    "pushq $pvh_user",
    "iretq",
    // CPL3 from here, native on PVM: x87 and SSE in the state our VMM's `fpu()` sets, then the
    // guest proper. A jump, not a call, so `_start` sees the same RSP as under our VMM.
    "pvh_user:",
    "fninit",
    "ldmxcsr pvh_mxcsr(%rip)",
    "jmp {start}",
    ".popsection",
    //
    ".pushsection .rodata.pvh, \"a\", @progbits",
    ".balign 8",
    "pvh_mxcsr:",
    ".long {mxcsr}",
    ".balign 8",
    // The 32-bit lgdt operand: limit, then base.
    "pvh_gdtr:",
    ".word {gdt_limit}",
    ".long {gdt}",
    ".popsection",
    xen_elfnote_phys32_entry = const 18,
    stack_top = const STACK_TOP,
    gdt = const GDT_GPA,
    tables_dwords = const (TABLES_END - GDT_GPA).div_ceil(4),
    pml4 = const PML4_GPA,
    mailbox_staged = const PVH_MAILBOX_GPA,
    mailbox = const MAILBOX_GPA,
    mailbox_dwords = const core::mem::size_of::<Mailbox>().div_ceil(4),
    gdt_template = sym PVH_GDT,
    gdt_dwords = const GDT_ENTRIES * 2,
    tss_size = const TSS_SIZE,
    iomap_base_field = const TSS_GPA + 0x66,
    bitmap_last = const TABLES_END - 1,
    pdpt_entry = const PDPT_GPA | PTE_TABLE,
    pd_entry = const PD_GPA | PTE_TABLE,
    pdpt = const PDPT_GPA,
    pd_count = const PD_COUNT,
    leaf = const PTE_LEAF,
    pd = const PD_GPA,
    pd_entries = const PD_COUNT * 512,
    pdpe1gb_bit = const CPUID_PDPE1GB_BIT,
    pdpt_high = const PDPT_GPA + PD_COUNT * 8,
    high_map_gib = const HIGH_MAP_GIB,
    cr4 = const CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
    msr_efer = const MSR_EFER,
    efer = const EFER_LME,
    cr0 = const CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
    kernel_code = const selector(GDT_KERNEL_CODE, 0),
    kernel_data = const selector(GDT_KERNEL_DATA, 0),
    tss_sel = const selector(GDT_TSS, 0),
    user_data = const selector(GDT_USER_DATA, 3),
    user_code = const selector(GDT_USER_CODE, 3),
    user_rsp = const STACK_TOP - 8,
    rflags = const RFLAGS_RESERVED | RFLAGS_IOPL3,
    mxcsr = const MXCSR_DEFAULT,
    gdt_limit = const GDT_ENTRIES * 8 - 1,
    start = sym crate::_start,
    options(att_syntax),
);
