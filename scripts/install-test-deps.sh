#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent; run as root.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-test-deps: cargo not found; install a Rust toolchain (1.85 or newer) first" >&2
    exit 1
fi

# Debian packages the tests use as peers and clients (extra ones may be passed as arguments):
# qemu-storage-daemon (a vhost-user-blk backend nobody here wrote), QEMU itself (the
# `--peer qemu` VMM, which boots the bench guest through its PVH entry with SeaBIOS), a font
# for the plots, iproute2 (`ip`: the network namespaces, veth pairs and TAP links of the net
# tests and bench) and dpdk-dev (dpdk-testpmd: the `--peer testpmd` vhost-user-net peer, a
# frontend and a backend nobody here wrote). Each is checked first so a machine that has them
# does not touch apt at all.
wanted=(qemu-utils qemu-system-x86 fonts-dejavu-core iproute2 dpdk-dev "$@")
packages=()
for pkg in "${wanted[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || packages+=("$pkg")
done
if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: need root to install: ${packages[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
