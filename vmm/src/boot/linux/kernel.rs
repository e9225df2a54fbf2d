//! Loads a Linux kernel: a bzImage (what distributions ship as /boot/vmlinuz) or an ELF vmlinux,
//! and finds its 64-bit entry point.

use std::io::{Read, Seek};

use linux_loader::bootparam::setup_header;
use linux_loader::loader::bzimage::{self, BzImage};
use linux_loader::loader::elf::Elf;
use linux_loader::loader::{self as ll, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryMmap, ReadVolatile};

use super::layout::HIGH_MEMORY;

/// The 64-bit entry of a bzImage's protected-mode code (boot protocol 2.12+, XLF_KERNEL_64).
const BZIMAGE_ENTRY_64: u64 = 0x200;
const XLF_KERNEL_64: u16 = 1 << 0;
const PROTOCOL_2_12: u16 = 0x020c;
/// Boot protocol versions before 2.10 have no `init_size`/`pref_address`.
const PROTOCOL_2_10: u16 = 0x020a;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the kernel image failed")]
    Read(#[source] std::io::Error),
    #[error("the kernel is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat,
    #[error("loading the bzImage failed")]
    BzImage(#[source] ll::Error),
    #[error("loading the ELF vmlinux failed")]
    Elf(#[source] ll::Error),
    #[error("the bzImage has no 64-bit entry point (boot protocol {0:#x}, needs 2.12 or later)")]
    No64BitEntry(u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    BzImage,
    Elf,
}

/// A kernel in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub format: Format,
    /// Where the boot vCPU starts, in 64-bit mode.
    pub entry: u64,
    /// The bzImage's setup header: the zero page starts from it.
    pub header: Option<setup_header>,
    /// The end of the memory the kernel occupies while it starts (a bzImage decompresses into
    /// `init_size` bytes at its preferred address): nothing else may go below it.
    pub end: u64,
}

/// Loads `image` into `mem` at the address the kernel asks for.
pub fn load<F>(mem: &GuestMemoryMmap, image: &mut F) -> Result<Kernel, Error>
where
    F: Read + ReadVolatile + Seek,
{
    let mut magic = [0u8; 4];
    image.rewind().map_err(Error::Read)?;
    let got = read_up_to(image, &mut magic)?;
    if got == 4 && &magic == b"\x7fELF" {
        return load_elf(mem, image);
    }
    load_bzimage(mem, image)
}

fn read_up_to<F: Read>(image: &mut F, buf: &mut [u8]) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        match image.read(&mut buf[n..]).map_err(Error::Read)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn load_elf<F>(mem: &GuestMemoryMmap, image: &mut F) -> Result<Kernel, Error>
where
    F: Read + ReadVolatile + Seek,
{
    // vmlinux's entry is the physical address of startup_64 (ENTRY(phys_startup_64)), and its
    // segments load at their physical addresses, above the first MiB.
    let r = Elf::load(mem, None, image, Some(GuestAddress(HIGH_MEMORY))).map_err(Error::Elf)?;
    Ok(Kernel {
        format: Format::Elf,
        entry: r.kernel_load.0,
        header: None,
        end: r.kernel_end,
    })
}

fn load_bzimage<F>(mem: &GuestMemoryMmap, image: &mut F) -> Result<Kernel, Error>
where
    F: Read + ReadVolatile + Seek,
{
    let r = match BzImage::load(mem, None, image, Some(GuestAddress(HIGH_MEMORY))) {
        Ok(r) => r,
        Err(ll::Error::Bzimage(bzimage::Error::InvalidBzImage))
        | Err(ll::Error::Bzimage(bzimage::Error::ReadBzImageHeader)) => {
            return Err(Error::UnknownFormat)
        }
        Err(e) => return Err(Error::BzImage(e)),
    };
    // The loader only returns Ok with the header it read.
    let hdr = r.setup_header.ok_or(Error::UnknownFormat)?;
    let version = hdr.version;
    if version < PROTOCOL_2_12 || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(Error::No64BitEntry(version));
    }
    Ok(Kernel {
        format: Format::BzImage,
        entry: r.kernel_load.0 + BZIMAGE_ENTRY_64,
        header: Some(hdr),
        end: r.kernel_end.max(decompression_end(&hdr)),
    })
}

/// Where a bzImage's decompressed kernel ends when it decompresses at its preferred address
/// (it moves there when loaded lower), per the boot protocol's `init_size` rule.
fn decompression_end(hdr: &setup_header) -> u64 {
    if hdr.version < PROTOCOL_2_10 {
        return 0;
    }
    let start = u64::from(hdr.code32_start).max(hdr.pref_address);
    start.saturating_add(u64::from(hdr.init_size))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Cursor;

    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    /// A minimal bzImage: one setup sector plus the boot sector, then `payload` as the
    /// protected-mode kernel.
    pub(crate) fn bzimage(version: u16, xloadflags: u16, payload: &[u8]) -> Vec<u8> {
        let setup_sects = 1u8;
        let mut img = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        img[0x1f1] = setup_sects;
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
        img[0x260..0x264].copy_from_slice(&0x200_0000u32.to_le_bytes()); // init_size
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn bzimage_enters_at_the_64_bit_entry_and_reserves_init_size() {
        let img = bzimage(0x020f, XLF_KERNEL_64, &[0x90; 4096]);
        let k = load(&mem(), &mut Cursor::new(img)).unwrap();
        assert_eq!(k.format, Format::BzImage);
        assert_eq!(k.entry, 0x10_0200);
        assert_eq!(k.end, 0x100_0000 + 0x200_0000);
        assert_eq!({ k.header.unwrap().cmdline_size }, 2047);
    }

    #[test]
    fn bzimage_without_a_64_bit_entry_is_refused() {
        let img = bzimage(0x020b, XLF_KERNEL_64, &[0x90; 16]);
        let e = load(&mem(), &mut Cursor::new(img)).unwrap_err();
        assert!(matches!(e, Error::No64BitEntry(0x020b)), "{e}");
        let img = bzimage(0x020f, 0, &[0x90; 16]);
        assert!(matches!(
            load(&mem(), &mut Cursor::new(img)),
            Err(Error::No64BitEntry(_))
        ));
    }

    #[test]
    fn garbage_and_empty_files_are_an_unknown_format() {
        for junk in [&b""[..], b"MZ", &[0u8; 4096]] {
            let e = load(&mem(), &mut Cursor::new(junk.to_vec())).unwrap_err();
            assert!(matches!(e, Error::UnknownFormat), "{e}");
        }
    }

    #[test]
    fn a_broken_elf_is_an_elf_error() {
        let e = load(&mem(), &mut Cursor::new(b"\x7fELF\x02\x01".to_vec())).unwrap_err();
        assert!(matches!(e, Error::Elf(_)), "{e}");
    }
}
