# shellcheck shell=bash
# Shared by vfio-bind.sh and vfio-unbind.sh: sysfs paths, error exit, PCI address and driver
# lookups. The sourcing script sets NAME (its name in messages) first.

# IOPATH_SYSFS points the scripts at a copy of /sys (for testing them).
readonly SYSFS=${IOPATH_SYSFS:-/sys}
readonly SYSFS_PCI=$SYSFS/bus/pci/devices

die() {
    echo "$NAME: $*" >&2
    exit 1
}

# 03:00.0 -> 0000:03:00.0; anything else must already be a full address.
normalize() {
    local bdf=$1
    if [[ $bdf =~ ^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]]; then
        bdf=0000:$bdf
    fi
    [[ $bdf =~ ^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]] ||
        die "$1 is not a PCI address (expected 0000:03:00.0)"
    echo "${bdf,,}"
}

driver_of() {
    local link=$SYSFS_PCI/$1/driver
    if [[ -L $link ]]; then
        basename "$(readlink -f "$link")"
    else
        echo "none"
    fi
}
