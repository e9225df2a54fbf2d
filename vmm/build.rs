//! Builds the bench guest (benches/guest) and hands its ELF to the VMM crate, which embeds it as
//! the default guest. The guest is always built optimised with `panic = "abort"` in a target
//! directory of its own, so the outer build's profile, flags and lock do not reach it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("vmm sits in the workspace root");
    let guest_dir = root.join("benches/guest");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("guest-target");

    for p in ["src", "guest.ld", "build.rs", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", guest_dir.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("mailbox/src").display()
    );

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the host crates (coverage, sanitizers, clippy's wrapper) would break or
    // slow a freestanding guest.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the bench guest");
    if !status.success() {
        panic!("building the bench guest failed: {status}");
    }
    let elf = target_dir.join("release/iopath-guest");
    assert!(
        Path::new(&elf).exists(),
        "bench guest not found at {}",
        elf.display()
    );
    println!("cargo:rustc-env=IOPATH_GUEST_ELF={}", elf.display());
}
