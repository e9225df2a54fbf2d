//! Linux's 64-bit boot protocol (Documentation/arch/x86/boot.rst): the kernel (bzImage or ELF
//! vmlinux) and initramfs in guest RAM, the command line, the zero page with the e820 map, an MP
//! table for the CPUs and interrupt routing, and CPL0 long-mode tables for the boot vCPU.

pub mod cpu;
pub mod e820;
pub mod kernel;
pub mod mptable;
pub mod params;

use std::fs::File;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::load_cmdline;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::MMIO_HOLE_START;

/// Where the VMM puts what it writes for Linux, all in base memory below the EBDA (Firecracker's
/// layout, with room for a 4 GiB identity map).
pub mod layout {
    pub const GDT: u64 = 0x500;
    pub const TSS: u64 = 0x600;
    pub const ZERO_PAGE: u64 = 0x7000;
    /// The stack the entry code starts on (startup_64 switches to its own at once).
    pub const BOOT_STACK: u64 = 0x8ff0;
    pub const PML4: u64 = 0x9000;
    pub const PDPT: u64 = 0xa000;
    /// Four page directories, 0xb000..0xf000.
    pub const PD: u64 = 0xb000;
    pub const CMDLINE: u64 = 0x2_0000;
    /// Base memory ends here; the EBDA, VGA hole and BIOS area follow up to 1 MiB.
    pub const EBDA_START: u64 = 0x9_fc00;
    /// The MP floating pointer and table, in the BIOS area Linux scans.
    pub const MPTABLE_START: u64 = 0xf_0000;
    /// The first MiB ends; kernels load above it.
    pub const HIGH_MEMORY: u64 = 0x10_0000;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("memory map")]
    E820(#[source] e820::Error),
    #[error("kernel")]
    Kernel(#[source] kernel::Error),
    #[error(
        "the kernel needs {need} MiB of guest RAM below 3 GiB to start, the VM has {have} MiB"
    )]
    KernelTooLarge { need: u64, have: u64 },
    #[error("boot parameters")]
    Params(#[source] params::Error),
    #[error("writing the command line to guest memory failed")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
    #[error("reading the initramfs failed")]
    Initramfs(#[source] std::io::Error),
    #[error("loading the initramfs into guest memory failed")]
    InitramfsWrite(#[source] vm_memory::GuestMemoryError),
    #[error("writing the zero page failed")]
    ZeroPage(#[source] linux_loader::configurator::Error),
    #[error("MP table")]
    MpTable(#[source] mptable::Error),
    #[error("boot page tables")]
    Tables(#[source] cpu::Error),
}

/// What to boot.
pub struct LinuxBoot<'a> {
    pub kernel: &'a mut File,
    pub initramfs: Option<&'a mut File>,
    pub cmdline: &'a str,
    pub cpus: u8,
    /// PCI slots in use on bus 0 (the host bridge included): each gets INTx routing.
    pub pci_slots: u8,
}

/// Where the boot vCPU starts, and what was loaded where.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub rip: u64,
    pub format: kernel::Format,
    /// Address and size.
    pub initramfs: Option<(u64, u64)>,
}

/// Loads the kernel, initramfs and command line, and writes the zero page, MP table and boot
/// tables. The tables are written after the kernel, so an image cannot leave its own behind.
pub fn load(mem: &GuestMemoryMmap, ram_size: u64, boot: LinuxBoot) -> Result<Entry, Error> {
    let map = e820::map(ram_size).map_err(Error::E820)?;
    let low_ram_end = ram_size.min(MMIO_HOLE_START);
    let k = kernel::load(mem, boot.kernel).map_err(Error::Kernel)?;
    if k.end > low_ram_end {
        return Err(Error::KernelTooLarge {
            need: k.end.div_ceil(1 << 20),
            have: low_ram_end >> 20,
        });
    }
    let hdr = k.header.as_ref();
    let cmdline = params::cmdline(boot.cmdline, hdr).map_err(Error::Params)?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE), &cmdline).map_err(Error::CmdlineWrite)?;

    let initramfs = match boot.initramfs {
        Some(f) => {
            let size = f.metadata().map_err(Error::Initramfs)?.len();
            let addr =
                params::place_initramfs(size, k.end, low_ram_end, params::initrd_addr_max(hdr))
                    .map_err(Error::Params)?;
            // `place_initramfs` keeps the size below 4 GiB.
            mem.read_exact_volatile_from(GuestAddress(addr), f, size as usize)
                .map_err(Error::InitramfsWrite)?;
            Some((addr, size))
        }
        None => None,
    };

    let zero_page = params::boot_params(
        hdr,
        &params::Placement {
            cmdline_addr: layout::CMDLINE,
            cmdline_len: boot.cmdline.len(),
            initramfs,
            e820: &map,
        },
    )
    .map_err(Error::Params)?;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new(&zero_page, GuestAddress(layout::ZERO_PAGE)),
        mem,
    )
    .map_err(Error::ZeroPage)?;
    mptable::write(mem, boot.cpus, boot.pci_slots).map_err(Error::MpTable)?;
    cpu::write_tables(mem).map_err(Error::Tables)?;
    Ok(Entry {
        rip: k.entry,
        format: k.format,
        initramfs,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, Write};

    use linux_loader::bootparam::boot_params;
    use vm_memory::Bytes;

    use super::*;
    use crate::memory::{GuestRam, RamConfig};

    fn ram(size: u64) -> GuestRam {
        GuestRam::new(RamConfig {
            size,
            hugepages: false,
        })
        .unwrap()
    }

    fn file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    fn bzimage() -> File {
        file(&kernel::tests::bzimage(0x020f, 1, &[0xf4; 8192]))
    }

    #[test]
    fn a_bzimage_boot_writes_the_zero_page_and_tables() {
        let ram = ram(256 << 20);
        let mut k = bzimage();
        let mut initrd = file(&[0x5a; 10_000]);
        let e = load(
            ram.memory(),
            ram.size(),
            LinuxBoot {
                kernel: &mut k,
                initramfs: Some(&mut initrd),
                cmdline: "console=ttyS0 iopath.test=1",
                cpus: 2,
                pci_slots: 1,
            },
        )
        .unwrap();
        assert_eq!(e.rip, 0x10_0200);
        let bp: boot_params = ram
            .memory()
            .read_obj(GuestAddress(layout::ZERO_PAGE))
            .unwrap();
        let (addr, size) = e.initramfs.unwrap();
        assert_eq!(
            ({ bp.hdr.ramdisk_image }, { bp.hdr.ramdisk_size }),
            (addr as u32, 10_000)
        );
        assert_eq!(addr % 4096, 0);
        assert!(
            addr >= 0x100_0000 + 0x200_0000,
            "above the decompressed kernel"
        );
        assert!(addr + size <= 256 << 20);
        let mut b = [0u8; 4];
        ram.memory().read_slice(&mut b, GuestAddress(addr)).unwrap();
        assert_eq!(b, [0x5a; 4]);
        let mut c = [0u8; 28];
        ram.memory()
            .read_slice(&mut c, GuestAddress({ bp.hdr.cmd_line_ptr } as u64))
            .unwrap();
        assert_eq!(&c, b"console=ttyS0 iopath.test=1\0");
        assert_eq!({ bp.hdr.cmdline_size }, 27);
        assert_eq!(bp.e820_entries, 3);
        ram.memory()
            .read_slice(&mut b, GuestAddress(layout::MPTABLE_START))
            .unwrap();
        assert_eq!(&b, b"_MP_");
    }

    #[test]
    fn a_kernel_that_does_not_fit_is_a_clear_error() {
        // 32 MiB of RAM: the image loads, but decompression needs up to 48 MiB.
        let ram = ram(32 << 20);
        let e = load(
            ram.memory(),
            ram.size(),
            LinuxBoot {
                kernel: &mut bzimage(),
                initramfs: None,
                cmdline: "",
                cpus: 1,
                pci_slots: 1,
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::KernelTooLarge { need: 48, have: 32 }),
            "{e}"
        );
    }

    #[test]
    fn an_initramfs_larger_than_ram_is_a_clear_error() {
        let ram = ram(64 << 20);
        let mut initrd = tempfile::tempfile().unwrap();
        initrd.set_len(40 << 20).unwrap();
        let e = load(
            ram.memory(),
            ram.size(),
            LinuxBoot {
                kernel: &mut bzimage(),
                initramfs: Some(&mut initrd),
                cmdline: "",
                cpus: 1,
                pci_slots: 1,
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Params(params::Error::InitramfsTooLarge { .. })),
            "{e}"
        );
    }
}
