//! The zero page (`struct boot_params`): the kernel's setup header with what the loader decided
//! (command line, initramfs, e820 map), and the rules those decisions follow.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::cmdline::{self, Cmdline};

use super::e820::E820Entry;

/// "Undefined" boot loader (boot protocol `type_of_loader` 0xff): we have no assigned id.
pub const LOADER_UNDEFINED: u8 = 0xff;
/// `vid_mode` "normal": no mode change, which a loader that skips the real-mode setup code
/// must not ask for anyway.
pub const VID_MODE_NORMAL: u16 = 0xffff;
const BOOT_FLAG: u16 = 0xaa55;
const HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
/// A vmlinux has no setup header; say what a 2.15 bzImage would (the x86 kernel's
/// COMMAND_LINE_SIZE is 2048 with the NUL).
const DEFAULT_CMDLINE_SIZE: u32 = 2047;
/// Before boot protocol 2.06 the command line is limited to 255 characters.
const LEGACY_CMDLINE_SIZE: u32 = 255;
const PROTOCOL_2_06: u16 = 0x0206;
/// Before 2.03 `initrd_addr_max` is not in the header and is this.
const LEGACY_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
const PROTOCOL_2_03: u16 = 0x0203;
const PAGE: u64 = 4096;
/// The kernel's default alignment for a relocatable kernel (16 MiB on x86_64).
const KERNEL_ALIGNMENT: u32 = 0x100_0000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("kernel command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line {0:?} is invalid")]
    Cmdline(String, #[source] cmdline::Error),
    #[error(
        "initramfs of {size} bytes does not fit in guest RAM between the kernel (ending at \
         {kernel_end:#x}) and {limit:#x}; give the guest more --memory"
    )]
    InitramfsTooLarge {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("the e820 map has {0} entries, the zero page holds 128")]
    TooManyE820(usize),
}

/// The longest command line the kernel accepts, without the terminating NUL.
pub fn cmdline_max(hdr: Option<&setup_header>) -> usize {
    let max = match hdr {
        None => DEFAULT_CMDLINE_SIZE,
        Some(h) if h.version < PROTOCOL_2_06 => LEGACY_CMDLINE_SIZE,
        Some(h) => h.cmdline_size,
    };
    max as usize
}

/// Checks `raw` against the kernel's limit and linux-loader's rules.
pub fn cmdline(raw: &str, hdr: Option<&setup_header>) -> Result<Cmdline, Error> {
    let max = cmdline_max(hdr);
    if raw.len() > max {
        return Err(Error::CmdlineTooLong {
            len: raw.len(),
            max,
        });
    }
    // Capacity counts the NUL.
    Cmdline::try_from(raw, max + 1).map_err(|e| Error::Cmdline(raw.to_string(), e))
}

/// The highest address the kernel lets an initramfs reach (inclusive).
pub fn initrd_addr_max(hdr: Option<&setup_header>) -> u64 {
    match hdr {
        Some(h) if h.version >= PROTOCOL_2_03 => u64::from(h.initrd_addr_max),
        _ => LEGACY_INITRD_ADDR_MAX,
    }
}

/// Where an initramfs of `size` bytes goes: as high as it can, page aligned, ending below
/// both `addr_max` (inclusive, the kernel's limit) and `ram_end` (the end of RAM below the
/// MMIO hole), and starting at or above `kernel_end`, so the kernel's decompression cannot
/// overwrite it.
pub fn place_initramfs(
    size: u64,
    kernel_end: u64,
    ram_end: u64,
    addr_max: u64,
) -> Result<u64, Error> {
    let limit = ram_end.min(addr_max.saturating_add(1));
    let too_large = || Error::InitramfsTooLarge {
        size,
        kernel_end,
        limit,
    };
    let start = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE - 1);
    if start < kernel_end || size > u64::from(u32::MAX) {
        return Err(too_large());
    }
    Ok(start)
}

/// What the loader decided, for the zero page.
pub struct Placement<'a> {
    pub cmdline_addr: u64,
    /// Without the NUL.
    pub cmdline_len: usize,
    /// Address and size.
    pub initramfs: Option<(u64, u64)>,
    pub e820: &'a [E820Entry],
}

/// The zero page: the bzImage's own header (a vmlinux gets a minimal one) with the loader's
/// fields set.
pub fn boot_params(hdr: Option<&setup_header>, p: &Placement) -> Result<boot_params, Error> {
    let mut bp = boot_params::default();
    match hdr {
        Some(h) => bp.hdr = *h,
        None => {
            bp.hdr.boot_flag = BOOT_FLAG;
            bp.hdr.header = HDR_MAGIC;
            bp.hdr.kernel_alignment = KERNEL_ALIGNMENT;
            bp.hdr.cmdline_size = DEFAULT_CMDLINE_SIZE;
        }
    }
    bp.hdr.type_of_loader = LOADER_UNDEFINED;
    bp.hdr.vid_mode = VID_MODE_NORMAL;
    // Both sit below 4 GiB, so the ext_* high halves stay zero.
    bp.hdr.cmd_line_ptr = p.cmdline_addr as u32;
    bp.hdr.cmdline_size = p.cmdline_len as u32;
    if let Some((addr, size)) = p.initramfs {
        bp.hdr.ramdisk_image = addr as u32;
        bp.hdr.ramdisk_size = size as u32;
    }
    if p.e820.len() > bp.e820_table.len() {
        return Err(Error::TooManyE820(p.e820.len()));
    }
    for (slot, e) in bp.e820_table.iter_mut().zip(p.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    bp.e820_entries = p.e820.len() as u8;
    Ok(bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::linux::e820;
    use crate::memory::MMIO_HOLE_START;

    const MIB: u64 = 1 << 20;

    fn header(version: u16) -> setup_header {
        setup_header {
            version,
            cmdline_size: 2047,
            initrd_addr_max: 0x7fff_ffff,
            boot_flag: BOOT_FLAG,
            header: HDR_MAGIC,
            code32_start: 0x10_0000,
            ..Default::default()
        }
    }

    #[test]
    fn cmdline_limit_follows_the_boot_protocol() {
        assert_eq!(cmdline_max(Some(&header(0x020f))), 2047);
        assert_eq!(cmdline_max(Some(&header(0x0205))), 255);
        assert_eq!(cmdline_max(None), 2047);
        let h = setup_header {
            cmdline_size: 100,
            ..header(0x020f)
        };
        assert_eq!(cmdline_max(Some(&h)), 100);
    }

    #[test]
    fn too_long_a_cmdline_is_a_clear_error() {
        let h = header(0x020f);
        let fits = "a".repeat(2047);
        assert!(cmdline(&fits, Some(&h)).is_ok());
        let long = "a".repeat(2048);
        let e = cmdline(&long, Some(&h)).unwrap_err();
        assert_eq!(
            e,
            Error::CmdlineTooLong {
                len: 2048,
                max: 2047
            }
        );
        assert_eq!(
            e.to_string(),
            "kernel command line is 2048 bytes; this kernel takes at most 2047"
        );
        assert!(cmdline(&"b".repeat(256), Some(&header(0x0204))).is_err());
    }

    #[test]
    fn cmdline_keeps_the_text_exactly() {
        let c = cmdline("console=ttyS0 iopath.test=xyz -- init-arg", None).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().as_bytes(),
            b"console=ttyS0 iopath.test=xyz -- init-arg"
        );
    }

    #[test]
    fn initramfs_goes_high_page_aligned_and_below_both_limits() {
        let ram_end = 512 * MIB;
        let a = place_initramfs(10 * MIB + 123, 64 * MIB, ram_end, 0x7fff_ffff).unwrap();
        assert_eq!(a % PAGE, 0);
        assert!(a + 10 * MIB + 123 <= ram_end);
        assert!(ram_end - (a + 10 * MIB + 123) < PAGE, "as high as it fits");
        // initrd_addr_max is inclusive and lower than RAM here.
        let a = place_initramfs(MIB, 64 * MIB, 2048 * MIB, 0x37ff_ffff).unwrap();
        assert_eq!(a + MIB, 0x3800_0000);
        assert!(a >= 64 * MIB);
    }

    #[test]
    fn initramfs_too_large_for_ram_is_a_clear_error() {
        let e = place_initramfs(500 * MIB, 68 * MIB, 512 * MIB, 0x7fff_ffff).unwrap_err();
        assert!(matches!(e, Error::InitramfsTooLarge { .. }));
        assert!(e.to_string().contains("--memory"), "{e}");
        assert!(place_initramfs(u64::MAX, 0, 512 * MIB, u64::MAX).is_err());
        // Exactly the room between the kernel and the end of RAM fits.
        assert_eq!(
            place_initramfs(448 * MIB, 64 * MIB, 512 * MIB, 0x7fff_ffff),
            Ok(64 * MIB)
        );
    }

    #[test]
    fn zero_page_carries_the_loader_decisions() {
        let map = e820::map(4096 * MIB).unwrap();
        let h = header(0x020f);
        let bp = boot_params(
            Some(&h),
            &Placement {
                cmdline_addr: 0x20000,
                cmdline_len: 42,
                initramfs: Some((0x3000_0000, 0x1234)),
                e820: &map,
            },
        )
        .unwrap();
        assert_eq!({ bp.hdr.type_of_loader }, LOADER_UNDEFINED);
        assert_eq!({ bp.hdr.vid_mode }, VID_MODE_NORMAL);
        assert_eq!({ bp.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ bp.hdr.cmdline_size }, 42);
        assert_eq!({ bp.hdr.ramdisk_image }, 0x3000_0000);
        assert_eq!({ bp.hdr.ramdisk_size }, 0x1234);
        assert_eq!({ bp.ext_ramdisk_image }, 0);
        assert_eq!({ bp.hdr.header }, HDR_MAGIC);
        assert_eq!(
            { bp.hdr.version },
            0x020f,
            "the kernel's own header is kept"
        );
        assert_eq!(bp.e820_entries as usize, map.len());
        for (e, m) in bp.e820_table.iter().zip(&map) {
            assert_eq!(
                ({ e.addr }, { e.size }, { e.r#type }),
                (m.addr, m.size, m.kind)
            );
        }
        // RAM below the hole ends at the hole, RAM above starts at 4 GiB.
        let ram: Vec<_> = bp.e820_table[..map.len()]
            .iter()
            .filter(|e| e.r#type == e820::E820_RAM)
            .map(|e| ({ e.addr }, { e.addr } + { e.size }))
            .collect();
        assert_eq!(
            ram,
            vec![
                (0, 0x9fc00),
                (MIB, MMIO_HOLE_START),
                (4096 * MIB, 5120 * MIB)
            ]
        );
    }

    #[test]
    fn vmlinux_gets_a_minimal_header() {
        let map = e820::map(256 * MIB).unwrap();
        let bp = boot_params(
            None,
            &Placement {
                cmdline_addr: 0x20000,
                cmdline_len: 0,
                initramfs: None,
                e820: &map,
            },
        )
        .unwrap();
        assert_eq!({ bp.hdr.boot_flag }, BOOT_FLAG);
        assert_eq!({ bp.hdr.header }, HDR_MAGIC);
        assert_eq!({ bp.hdr.kernel_alignment }, KERNEL_ALIGNMENT);
        assert_eq!(({ bp.hdr.ramdisk_image }, { bp.hdr.ramdisk_size }), (0, 0));
        assert_eq!(bp.e820_entries, 3);
    }
}
