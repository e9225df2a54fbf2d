//! Loads the bench guest ELF and prepares the memory it expects: boot tables and the mailbox.

use std::io::Cursor;

use iopath_mailbox::layout::{IMAGE_GPA, MAILBOX_GPA, RAM_MIN, STACK_TOP};
use iopath_mailbox::Mailbox;
use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::long_mode;

/// Room left for the stack below STACK_TOP.
const STACK_SIZE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a loadable bench guest ELF")]
    Elf(#[source] linux_loader::loader::Error),
    #[error("guest image spans {start:#x}..{end:#x}, outside {IMAGE_GPA:#x}..{limit:#x}")]
    Placement { start: u64, end: u64, limit: u64 },
    #[error("guest RAM of {0} MiB is below the bench guest's minimum of {min} MiB", min = RAM_MIN >> 20)]
    TooLittleRam(u64),
    #[error("writing boot structures failed")]
    Tables(#[source] long_mode::Error),
    #[error("writing the mailbox failed")]
    Mailbox(#[source] vm_memory::GuestMemoryError),
}

/// Where the vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub rip: u64,
    pub stack_top: u64,
}

/// Loads `image` and writes the page tables, GDT and `mailbox`. The tables are written after
/// the image so a hostile image cannot leave its own tables behind.
pub fn load(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    image: &[u8],
    mailbox: &Mailbox,
) -> Result<Entry, Error> {
    if ram_size < RAM_MIN {
        return Err(Error::TooLittleRam(ram_size >> 20));
    }
    let limit = STACK_TOP - STACK_SIZE;
    let loaded = Elf::load(mem, None, &mut Cursor::new(image), None).map_err(Error::Elf)?;
    let entry = loaded.kernel_load.0;
    let end = loaded.kernel_end;
    if entry < IMAGE_GPA || entry >= end || end > limit {
        return Err(Error::Placement {
            start: entry,
            end,
            limit,
        });
    }
    long_mode::write_tables(mem).map_err(Error::Tables)?;
    mem.write_slice(mailbox.as_bytes(), GuestAddress(MAILBOX_GPA))
        .map_err(Error::Mailbox)?;
    Ok(Entry {
        rip: entry,
        stack_top: STACK_TOP,
    })
}

/// Reads the mailbox back (the guest's results).
pub fn read_mailbox(mem: &GuestMemoryMmap) -> Result<Mailbox, Error> {
    let mut buf = [0u8; core::mem::size_of::<Mailbox>()];
    mem.read_slice(&mut buf, GuestAddress(MAILBOX_GPA))
        .map_err(Error::Mailbox)?;
    // The buffer has exactly the mailbox's size, so this cannot fail.
    Mailbox::from_bytes(&buf).ok_or(Error::Mailbox(vm_memory::GuestMemoryError::PartialBuffer {
        expected: buf.len(),
        completed: 0,
    }))
}

#[cfg(test)]
mod tests {
    use iopath_mailbox::Job;

    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM_MIN as usize)]).unwrap()
    }

    #[test]
    fn garbage_is_not_an_elf() {
        let m = Mailbox::new(Job::default());
        let e = load(
            &mem(),
            RAM_MIN,
            b"definitely not an ELF file, just text",
            &m,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Elf(_)), "{e}");
    }

    #[test]
    fn small_ram_is_refused() {
        let m = Mailbox::new(Job::default());
        assert!(matches!(
            load(&mem(), 1 << 20, &[], &m),
            Err(Error::TooLittleRam(1))
        ));
    }

    #[test]
    fn mailbox_is_written_where_the_guest_reads_it() {
        let mem = mem();
        let m = Mailbox::new(Job {
            seed: 42,
            ..Job::default()
        });
        mem.write_slice(m.as_bytes(), GuestAddress(MAILBOX_GPA))
            .unwrap();
        assert_eq!(read_mailbox(&mem).unwrap(), m);
    }
}
