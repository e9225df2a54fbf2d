#!/usr/bin/env bash
# Binds PCI devices to vfio-pci for `iopath-vmm --device vfio=BDF` (lab servers with an IOMMU).
#
#   scripts/vfio-bind.sh 0000:03:00.0 [BDF...]   bind (run as root)
#   scripts/vfio-bind.sh --list                  list every IOMMU group and its devices
#
# VFIO hands a whole IOMMU group to one user: the group is usable only when every device in it
# is bound to vfio-pci (PCI bridges excepted). So this refuses, before changing anything,
# unless each other device of the group is already bound to vfio-pci, is a bridge, or is named
# on the command line too. Binding uses driver_override, so the host driver comes back with
# scripts/vfio-unbind.sh.
set -euo pipefail

readonly NAME=vfio-bind
# shellcheck source=scripts/lib/pci.sh
source "$(dirname "$0")/lib/pci.sh"
readonly SYSFS_GROUPS=$SYSFS/kernel/iommu_groups

is_bridge() {
    # Class 0x0604xx: PCI-to-PCI bridge.
    [[ $(cat "$SYSFS_PCI/$1/class") == 0x0604* ]]
}

group_of() {
    local link=$SYSFS_PCI/$1/iommu_group
    [[ -L $link ]] ||
        die "$1 has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)"
    basename "$(readlink -f "$link")"
}

describe() {
    local bdf=$1
    printf '  %s  class %s  %s:%s  driver %s\n' "$bdf" "$(cat "$SYSFS_PCI/$bdf/class")" \
        "$(cat "$SYSFS_PCI/$bdf/vendor")" "$(cat "$SYSFS_PCI/$bdf/device")" "$(driver_of "$bdf")"
}

list_groups() {
    compgen -G "$SYSFS_GROUPS/*" >/dev/null ||
        die "no IOMMU groups: the IOMMU is off or absent (intel_iommu=on / amd_iommu=on)"
    local group dev
    for group in $(find "$SYSFS_GROUPS" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n); do
        echo "IOMMU group $group"
        for dev in "$SYSFS_GROUPS/$group"/devices/*; do
            describe "$(basename "$dev")"
        done
    done
}

bind() {
    local bdf=$1
    local current
    current=$(driver_of "$bdf")
    if [[ $current == vfio-pci ]]; then
        echo "$bdf: already bound to vfio-pci"
        return
    fi
    echo vfio-pci >"$SYSFS_PCI/$bdf/driver_override"
    if [[ $current != none ]]; then
        echo "$bdf" >"$SYSFS_PCI/$bdf/driver/unbind"
    fi
    echo "$bdf" >"$SYSFS/bus/pci/drivers_probe"
    [[ $(driver_of "$bdf") == vfio-pci ]] ||
        die "$bdf: vfio-pci did not take the device (see dmesg; scripts/vfio-unbind.sh $bdf undoes the override)"
    echo "$bdf: $current -> vfio-pci"
}

main() {
    [[ $# -gt 0 ]] || die "usage: $0 BDF [BDF...] | --list"
    if [[ $1 == --list || $1 == -l ]]; then
        list_groups
        return
    fi
    [[ $(id -u) -eq 0 ]] || die "needs root (it writes to /sys/bus/pci)"

    local -a wanted=()
    local arg bdf
    for arg in "$@"; do
        bdf=$(normalize "$arg")
        [[ -e $SYSFS_PCI/$bdf ]] || die "no PCI device $bdf"
        wanted+=("$bdf")
    done

    # Check every group before touching anything.
    local group member name ok=1
    local -A groups=()
    for bdf in "${wanted[@]}"; do
        group=$(group_of "$bdf")
        groups[$group]=1
    done
    for group in "${!groups[@]}"; do
        echo "IOMMU group $group:"
        for member in "$SYSFS_GROUPS/$group"/devices/*; do
            name=$(basename "$member")
            describe "$name"
            if [[ " ${wanted[*]} " == *" $name "* ]] || is_bridge "$name" ||
                [[ $(driver_of "$name") == vfio-pci ]]; then
                continue
            fi
            echo "$NAME: $name shares IOMMU group $group and is bound to $(driver_of "$name"):" \
                "name it too (the whole group goes to the VM) or move the device" >&2
            ok=0
        done
    done
    [[ $ok -eq 1 ]] || die "refusing: the group would not be viable"

    if [[ ! -d $SYSFS/bus/pci/drivers/vfio-pci ]]; then
        modprobe vfio-pci || die "cannot load vfio-pci"
    fi
    for bdf in "${wanted[@]}"; do
        bind "$bdf"
    done
    for group in "${!groups[@]}"; do
        [[ -e /dev/vfio/$group ]] || die "/dev/vfio/$group did not appear"
        echo "ready: /dev/vfio/$group (iopath-vmm --device vfio=${wanted[0]})"
    done
}

main "$@"
