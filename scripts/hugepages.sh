#!/usr/bin/env bash
# Reserves 2 MiB huge pages for `iopath-vmm --hugepages` (guest RAM from a MFD_HUGETLB memfd;
# no hugetlbfs mount is needed) and shows what the kernel actually reserved.
#
#   scripts/hugepages.sh N    reserve N pages (N * 2 MiB; run as root)
#   scripts/hugepages.sh      show the reservation
#
# The kernel may reserve fewer than asked when memory is fragmented: the script says so and
# exits 1. Reserve early after boot, or drop caches and compact first (done here once).
set -euo pipefail

readonly POOL=/sys/kernel/mm/hugepages/hugepages-2048kB
readonly NAME=hugepages

die() {
    echo "$NAME: $*" >&2
    exit 1
}

show() {
    local total free
    total=$(cat "$POOL/nr_hugepages")
    free=$(cat "$POOL/free_hugepages")
    echo "2 MiB pages: $total reserved ($((total * 2)) MiB), $free free ($((free * 2)) MiB)"
    grep -E '^(HugePages_|Hugepagesize|Hugetlb)' /proc/meminfo
}

main() {
    [[ -d $POOL ]] || die "this kernel has no 2 MiB huge page pool ($POOL)"
    if [[ $# -eq 0 ]]; then
        show
        return
    fi
    [[ $# -eq 1 && $1 =~ ^[0-9]+$ ]] || die "usage: $0 [PAGES]"
    local want=$1
    [[ $(id -u) -eq 0 ]] || die "needs root (it writes $POOL/nr_hugepages)"
    echo "$want" >"$POOL/nr_hugepages"
    local got
    got=$(cat "$POOL/nr_hugepages")
    if [[ $got -lt $want ]]; then
        # Fragmented memory: free the page cache, compact, and try once more.
        sync
        echo 3 >/proc/sys/vm/drop_caches
        echo 1 >/proc/sys/vm/compact_memory
        echo "$want" >"$POOL/nr_hugepages"
        got=$(cat "$POOL/nr_hugepages")
    fi
    show
    [[ $got -ge $want ]] || die "asked for $want pages, the kernel reserved $got (memory is fragmented or short)"
}

main "$@"
