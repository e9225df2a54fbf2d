#!/usr/bin/env bash
# Gives PCI devices bound with scripts/vfio-bind.sh back to their host drivers.
#
#   scripts/vfio-unbind.sh 0000:03:00.0 [BDF...]   (run as root)
#
# Clears driver_override and asks the kernel to probe again, so the driver that matches the
# device (nvme, for an SSD) binds it. A device no driver claims is left unbound, and said so.
set -euo pipefail

readonly NAME=vfio-unbind
# shellcheck source=scripts/lib/pci.sh
source "$(dirname "$0")/lib/pci.sh"

unbind() {
    local bdf=$1
    local current
    current=$(driver_of "$bdf")
    if [[ $current != vfio-pci && $current != none ]]; then
        echo "$bdf: bound to $current, not vfio-pci: left alone"
        return
    fi
    local group
    group=/dev/vfio/$(basename "$(readlink -f "$SYSFS_PCI/$bdf/iommu_group")")
    # Unbinding under a running VM blocks until the VM lets go: refuse instead (when fuser,
    # from psmisc, is there to tell).
    if command -v fuser >/dev/null && fuser -s "$group" 2>/dev/null; then
        die "$bdf: $group is open (a VM is using it); stop the VM first"
    fi
    # A device with no driver (a bind that failed half-way) only needs the override cleared.
    if [[ $current == vfio-pci ]]; then
        echo "$bdf" >"$SYSFS_PCI/$bdf/driver/unbind"
    fi
    # An empty write clears the override.
    echo >"$SYSFS_PCI/$bdf/driver_override"
    echo "$bdf" >"$SYSFS/bus/pci/drivers_probe"
    local now
    now=$(driver_of "$bdf")
    if [[ $now == none ]]; then
        echo "$bdf: $current -> no driver (none claimed it; is its module loaded?)"
    else
        echo "$bdf: $current -> $now"
    fi
}

main() {
    [[ $# -gt 0 ]] || die "usage: $0 BDF [BDF...]"
    [[ $(id -u) -eq 0 ]] || die "needs root (it writes to /sys/bus/pci)"
    local arg bdf
    for arg in "$@"; do
        bdf=$(normalize "$arg")
        [[ -e $SYSFS_PCI/$bdf ]] || die "no PCI device $bdf"
        unbind "$bdf"
    done
}

main "$@"
