//! The QEMU command line for one bench-guest run. Pure, so it can be checked without QEMU.

use std::path::{Path, PathBuf};

use backends::engine::BackendSpec;
use iopath_mailbox::io::DONE_PORT;
use iopath_mailbox::layout::PVH_MAILBOX_GPA;

use super::QemuDisk;

/// The files of one run, all in one private directory.
#[derive(Clone, Debug)]
pub struct RunFiles {
    /// The bench guest ELF, booted through its PVH note.
    pub kernel: PathBuf,
    /// Guest RAM: QEMU maps it shared, so the mailbox can be read back after QEMU exits.
    pub ram: PathBuf,
    /// The mailbox bytes, loaded at `PVH_MAILBOX_GPA` before the firmware runs.
    pub mailbox: PathBuf,
    /// COM1.
    pub console: PathBuf,
}

/// Arguments after the program name. `memory` is guest RAM in bytes (a whole number of MiB).
pub fn qemu_args(files: &RunFiles, memory: u64, disk: &QemuDisk) -> Vec<String> {
    let mib = memory >> 20;
    let mut a: Vec<String> = [
        "-accel",
        "kvm",
        // arch-capabilities: KVM on some hosts (PVM among them) cannot set the MSR QEMU would
        // pass through, and the guest never reads it.
        "-cpu",
        "host,-arch-capabilities",
        // q35: PCIe, and still configuration mechanism #1 (CF8/CFC), which the guest uses.
        "-machine",
        "q35",
        "-smp",
        "1",
        // No default NIC, VGA or CD-ROM: fewer devices for the firmware to set up (and on PVM
        // every firmware instruction is emulated).
        "-nodefaults",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-m".into());
    a.push(format!("{mib}M"));
    a.push("-object".into());
    a.push(format!(
        "memory-backend-file,id=mem,size={mib}M,mem-path={},share=on",
        escape(&files.ram)
    ));
    a.push("-machine".into());
    a.push("memory-backend=mem".into());
    a.push("-kernel".into());
    a.push(files.kernel.display().to_string());
    a.push("-device".into());
    a.push(format!(
        "loader,file={},addr={PVH_MAILBOX_GPA:#x},force-raw=on",
        escape(&files.mailbox)
    ));
    // The guest's done write ends QEMU with exit code (status << 1) | 1.
    a.push("-device".into());
    a.push(format!("isa-debug-exit,iobase={DONE_PORT:#x},iosize=4"));
    a.push("-serial".into());
    a.push(format!("file:{}", files.console.display()));
    a.extend(disk_args(disk));
    a
}

fn disk_args(disk: &QemuDisk) -> Vec<String> {
    match disk {
        QemuDisk::Nvme(backend) => vec![
            "-drive".into(),
            drive(backend),
            "-device".into(),
            "nvme,drive=d0,serial=iopath".into(),
        ],
        QemuDisk::VirtioBlk(backend) => vec![
            "-object".into(),
            "iothread,id=io0".into(),
            "-drive".into(),
            drive(backend),
            "-device".into(),
            // Modern only: the guest looks for device ID 0x1042.
            "virtio-blk-pci,drive=d0,disable-legacy=on,iothread=io0".into(),
        ],
        QemuDisk::VhostUserBlk { socket } => vec![
            "-chardev".into(),
            format!("socket,id=c0,path={}", escape(socket)),
            "-device".into(),
            "vhost-user-blk-pci,chardev=c0,disable-legacy=on".into(),
        ],
    }
}

/// A `-drive` for QEMU's block layer, with the io_uring engine our backends use too.
fn drive(backend: &BackendSpec) -> String {
    match backend {
        // Like our null engine: completes without moving data.
        BackendSpec::Null { size } => {
            format!("if=none,id=d0,driver=null-co,size={size},read-zeroes=off")
        }
        BackendSpec::File {
            path,
            direct,
            read_only,
        } => {
            let cache = if *direct { "none" } else { "writeback" };
            let mut d = format!(
                "if=none,id=d0,format=raw,cache={cache},aio=io_uring,file={}",
                escape(path)
            );
            if *read_only {
                d.push_str(",readonly=on");
            }
            d
        }
    }
}

/// QEMU option values split at commas; a literal comma is written twice.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> RunFiles {
        RunFiles {
            kernel: "/run/g.elf".into(),
            ram: "/run/ram".into(),
            mailbox: "/run/mb.bin".into(),
            console: "/run/console.log".into(),
        }
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn ram_is_a_shared_file_of_the_requested_size() {
        let a = qemu_args(&files(), 256 << 20, &QemuDisk::Nvme(null()));
        assert_eq!(after(&a, "-m"), ["256M"]);
        assert!(after(&a, "-object")
            .contains(&"memory-backend-file,id=mem,size=256M,mem-path=/run/ram,share=on"));
        assert!(after(&a, "-machine").contains(&"memory-backend=mem"));
        assert_eq!(after(&a, "-kernel"), ["/run/g.elf"]);
        assert!(
            after(&a, "-device").contains(&"loader,file=/run/mb.bin,addr=0x100000,force-raw=on")
        );
        assert!(after(&a, "-device").contains(&"isa-debug-exit,iobase=0xf4,iosize=4"));
    }

    fn null() -> BackendSpec {
        BackendSpec::Null { size: 1 << 30 }
    }

    #[test]
    fn files_map_direct_to_cache_none_and_escape_commas() {
        let d = drive(&BackendSpec::File {
            path: "/d/a,b.img".into(),
            direct: true,
            read_only: true,
        });
        assert_eq!(
            d,
            "if=none,id=d0,format=raw,cache=none,aio=io_uring,file=/d/a,,b.img,readonly=on"
        );
        let d = drive(&BackendSpec::File {
            path: "/d/x".into(),
            direct: false,
            read_only: false,
        });
        assert!(d.contains("cache=writeback") && !d.contains("readonly"));
    }

    #[test]
    fn each_interface_names_its_device() {
        let nvme = qemu_args(&files(), 128 << 20, &QemuDisk::Nvme(null()));
        assert!(after(&nvme, "-device").contains(&"nvme,drive=d0,serial=iopath"));
        assert!(after(&nvme, "-drive")[0].contains("driver=null-co,size=1073741824"));
        let vblk = qemu_args(&files(), 128 << 20, &QemuDisk::VirtioBlk(null()));
        assert!(after(&vblk, "-device")
            .contains(&"virtio-blk-pci,drive=d0,disable-legacy=on,iothread=io0"));
        assert!(after(&vblk, "-object").contains(&"iothread,id=io0"));
        let vu = qemu_args(
            &files(),
            128 << 20,
            &QemuDisk::VhostUserBlk {
                socket: "/s/blk.sock".into(),
            },
        );
        assert_eq!(after(&vu, "-chardev"), ["socket,id=c0,path=/s/blk.sock"]);
        assert!(after(&vu, "-drive").is_empty());
    }
}
