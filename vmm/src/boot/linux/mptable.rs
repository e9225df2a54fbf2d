//! An Intel MultiProcessor Specification 1.4 table: how a kernel without ACPI finds the CPUs,
//! the local APICs, the IOAPIC and which IOAPIC pin each ISA and PCI interrupt arrives on.
//!
//! A floating pointer structure and the configuration table behind it are written to the BIOS
//! area at 0xf0000, one of the places Linux scans (`smp_scan_config`), and which the e820 map
//! reserves. The table describes KVM's in-kernel irqchip: LAPICs at 0xfee00000 with ids
//! 0..cpus, one 24-pin IOAPIC at 0xfec00000, and KVM's default GSI routing (ISA IRQ n on IOAPIC
//! pin n).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the floating pointer goes; the configuration table follows it.
pub const MPTABLE_START: u64 = super::layout::MPTABLE_START;
/// The end of the area Linux scans (and of the BIOS area).
const MPTABLE_LIMIT: u64 = 0x10_0000;

/// APIC ids 0..cpus and the IOAPIC's id (cpus) must stay below the xAPIC broadcast id 0xff.
pub const MAX_CPUS: u8 = 254;

const LAPIC_ADDR: u32 = 0xfee0_0000;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// KVM's in-kernel LAPIC and IOAPIC versions (what their version registers read).
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_PINS: u8 = 24;
/// IOAPIC pins above the ISA ones carry PCI INTx.
const PCI_IRQ_BASE: u8 = 16;
const ISA_IRQS: u8 = 16;

const BUS_PCI: u8 = 0;
const BUS_ISA: u8 = 1;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;

const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1 << 0;
const CPU_BSP: u8 = 1 << 1;
/// Family 6 in the signature, FPU and APIC in the feature flags: what Linux prints; it takes
/// the real values from CPUID.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// PCI INTx is active low, level triggered (MP spec table 4-10: polarity 3, trigger 3).
const IRQFLAG_PCI: u16 = 0x3 | (0x3 << 2);
/// "Conforms to the bus": edge, active high for ISA.
const IRQFLAG_CONFORMS: u16 = 0;

const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_LEN: usize = 20;
/// Bus, IOAPIC and interrupt entries.
const SMALL_ENTRY_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} vCPUs: the MP table describes 1 to {MAX_CPUS}")]
    Cpus(u8),
    #[error("{0} PCI slots: bus 0 has 32")]
    PciSlots(u8),
    #[error("writing the MP table to guest memory failed")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Builds the floating pointer and configuration table as they sit at `MPTABLE_START`, for
/// `cpus` vCPUs (vCPU 0 the bootstrap processor) and PCI slots 0..`pci_slots` on bus 0.
pub fn build(cpus: u8, pci_slots: u8) -> Result<Vec<u8>, Error> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::Cpus(cpus));
    }
    if pci_slots > 32 {
        return Err(Error::PciSlots(pci_slots));
    }
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.extend_from_slice(&processor(id, id == 0));
        count += 1;
    }
    entries.extend_from_slice(&bus(BUS_PCI, b"PCI   "));
    entries.extend_from_slice(&bus(BUS_ISA, b"ISA   "));
    entries.extend_from_slice(&[
        ENTRY_IOAPIC,
        ioapic_id,
        IOAPIC_VERSION,
        1, // enabled
    ]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 3;
    for irq in 0..ISA_IRQS {
        let e = interrupt(ENTRY_IOINT, INT_VECTORED, IRQFLAG_CONFORMS, BUS_ISA, irq);
        entries.extend_from_slice(&e.to(ioapic_id, irq));
        count += 1;
    }
    for slot in 0..pci_slots {
        for pin in 0..4u8 {
            // Source IRQ for PCI: device number in bits 6:2, INTA..INTD in bits 1:0. Pins are
            // spread over the 8 PCI IOAPIC inputs the way a PCI bridge swizzles them.
            let src = (slot << 2) | pin;
            let dst = PCI_IRQ_BASE + (slot + pin) % (IOAPIC_PINS - PCI_IRQ_BASE);
            let e = interrupt(ENTRY_IOINT, INT_VECTORED, IRQFLAG_PCI, BUS_PCI, src);
            entries.extend_from_slice(&e.to(ioapic_id, dst));
            count += 1;
        }
    }
    // LINT0 takes the 8259's ExtINT (virtual wire mode), LINT1 NMIs, as the vCPUs' LAPICs are
    // programmed.
    let lint0 = interrupt(ENTRY_LINT, INT_EXTINT, IRQFLAG_CONFORMS, BUS_ISA, 0);
    entries.extend_from_slice(&lint0.to(0, 0));
    let lint1 = interrupt(ENTRY_LINT, INT_NMI, IRQFLAG_CONFORMS, BUS_ISA, 0);
    entries.extend_from_slice(&lint1.to(0xff, 1));
    count += 2;

    let table_addr = MPTABLE_START + FLOATING_LEN as u64;
    let table_len = HEADER_LEN + entries.len();
    let mut header = Vec::with_capacity(table_len);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"IOPATH  ");
    header.extend_from_slice(b"KVM VM      ");
    header.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // no extended table
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    let mut out = Vec::with_capacity(FLOATING_LEN + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4); // spec revision 1.4
    out.push(0); // checksum, below
    out.extend_from_slice(&[0; 5]); // feature bytes: a table is present, no IMCR
    out[10] = checksum(&out);
    out.extend_from_slice(&header);
    Ok(out)
}

/// Writes the table for `cpus` vCPUs and `pci_slots` PCI slots into guest memory.
pub fn write(mem: &GuestMemoryMmap, cpus: u8, pci_slots: u8) -> Result<(), Error> {
    let table = build(cpus, pci_slots)?;
    // 254 CPUs and 32 slots take under 6 KiB of the BIOS area's 64.
    debug_assert!(MPTABLE_START + table.len() as u64 <= MPTABLE_LIMIT);
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(Error::Write)
}

/// The byte that makes `bytes` sum to zero, with the checksum byte itself still zero.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

fn processor(apic_id: u8, bsp: bool) -> [u8; PROCESSOR_LEN] {
    let mut e = [0u8; PROCESSOR_LEN];
    e[0] = ENTRY_PROCESSOR;
    e[1] = apic_id;
    e[2] = LAPIC_VERSION;
    e[3] = CPU_ENABLED | if bsp { CPU_BSP } else { 0 };
    e[4..8].copy_from_slice(&CPU_SIGNATURE.to_le_bytes());
    e[8..12].copy_from_slice(&CPU_FEATURES.to_le_bytes());
    e
}

fn bus(id: u8, kind: &[u8; 6]) -> [u8; SMALL_ENTRY_LEN] {
    let mut e = [0u8; SMALL_ENTRY_LEN];
    e[0] = ENTRY_BUS;
    e[1] = id;
    e[2..].copy_from_slice(kind);
    e
}

/// The source half of an I/O or local interrupt assignment entry.
struct Interrupt {
    entry: u8,
    kind: u8,
    flags: u16,
    bus: u8,
    irq: u8,
}

fn interrupt(entry: u8, kind: u8, flags: u16, bus: u8, irq: u8) -> Interrupt {
    Interrupt {
        entry,
        kind,
        flags,
        bus,
        irq,
    }
}

impl Interrupt {
    /// The entry, delivered to `apic` (IOAPIC id, or LAPIC id with 0xff for all) input `pin`.
    fn to(&self, apic: u8, pin: u8) -> [u8; SMALL_ENTRY_LEN] {
        let f = self.flags.to_le_bytes();
        [
            self.entry, self.kind, f[0], f[1], self.bus, self.irq, apic, pin,
        ]
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryBackend;

    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    /// The configuration table's entries, each as (type, bytes).
    fn entries(table: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut off = HEADER_LEN;
        while off < table.len() {
            let len = if table[off] == ENTRY_PROCESSOR {
                PROCESSOR_LEN
            } else {
                SMALL_ENTRY_LEN
            };
            out.push(&table[off..off + len]);
            off += len;
        }
        out
    }

    #[test]
    fn floating_pointer_and_table_checksums_are_zero() {
        for (cpus, slots) in [(1, 0), (2, 3), (MAX_CPUS, 32)] {
            let t = build(cpus, slots).unwrap();
            let (fp, table) = t.split_at(FLOATING_LEN);
            assert_eq!(&fp[..4], b"_MP_");
            assert_eq!(sum(fp), 0, "floating pointer, {cpus} cpus");
            assert_eq!(fp[8], 1, "length in paragraphs");
            assert_eq!(fp[9], 4, "spec 1.4");
            assert_eq!(fp[11], 0, "feature byte 1: a configuration table follows");
            assert_eq!(u32_at(fp, 4) as u64, MPTABLE_START + FLOATING_LEN as u64);
            assert_eq!(&table[..4], b"PCMP");
            assert_eq!(u16_at(table, 4) as usize, table.len());
            assert_eq!(sum(table), 0, "configuration table, {cpus} cpus");
            assert_eq!(u32_at(table, 36), LAPIC_ADDR);
            assert!(MPTABLE_START + t.len() as u64 <= MPTABLE_LIMIT);
        }
    }

    #[test]
    fn one_processor_entry_per_vcpu_with_the_bsp_first() {
        let t = build(4, 2).unwrap();
        let table = &t[FLOATING_LEN..];
        let e = entries(table);
        assert_eq!(u16_at(table, 34) as usize, e.len(), "entry count");
        let cpus: Vec<_> = e.iter().filter(|e| e[0] == ENTRY_PROCESSOR).collect();
        assert_eq!(cpus.len(), 4);
        for (i, c) in cpus.iter().enumerate() {
            assert_eq!(c[1], i as u8, "APIC id");
            assert_eq!(c[3] & CPU_ENABLED, CPU_ENABLED);
            assert_eq!(c[3] & CPU_BSP != 0, i == 0, "BSP flag on vCPU 0 only");
        }
    }

    #[test]
    fn entries_come_in_spec_order_with_the_expected_counts() {
        let t = build(2, 3).unwrap();
        let e = entries(&t[FLOATING_LEN..]);
        let kinds: Vec<u8> = e.iter().map(|e| e[0]).collect();
        let mut sorted = kinds.clone();
        sorted.sort();
        assert_eq!(kinds, sorted, "processors, buses, IOAPIC, I/O, local");
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!(count(ENTRY_BUS), 2);
        assert_eq!(count(ENTRY_IOAPIC), 1);
        assert_eq!(count(ENTRY_IOINT), 16 + 3 * 4);
        assert_eq!(count(ENTRY_LINT), 2);
        let buses: Vec<&[u8]> = e
            .iter()
            .filter(|e| e[0] == ENTRY_BUS)
            .map(|e| &e[2..])
            .collect();
        assert_eq!(buses, vec![b"PCI   ", b"ISA   "]);
    }

    #[test]
    fn interrupts_route_to_the_ioapic_after_the_cpus() {
        let t = build(3, 2).unwrap();
        let e = entries(&t[FLOATING_LEN..]);
        let ioapic = e.iter().find(|e| e[0] == ENTRY_IOAPIC).unwrap();
        assert_eq!(ioapic[1], 3, "IOAPIC id follows the APIC ids");
        assert_eq!(u32_at(ioapic, 4), IOAPIC_ADDR);
        let io: Vec<_> = e.iter().filter(|e| e[0] == ENTRY_IOINT).collect();
        for (irq, i) in io.iter().take(16).enumerate() {
            assert_eq!((i[4], i[5], i[6], i[7]), (BUS_ISA, irq as u8, 3, irq as u8));
        }
        // Slot 1 INTB: source (1 << 2) | 1, IOAPIC pin 16 + 2, level/low.
        let intb = io.iter().find(|i| i[4] == BUS_PCI && i[5] == 5).unwrap();
        assert_eq!(intb[7], 18);
        assert_eq!(u16_at(intb, 2), IRQFLAG_PCI);
        assert!(io.iter().all(|i| i[7] < IOAPIC_PINS));
        let lint: Vec<_> = e.iter().filter(|e| e[0] == ENTRY_LINT).collect();
        assert_eq!((lint[0][1], lint[0][7]), (INT_EXTINT, 0));
        assert_eq!((lint[1][1], lint[1][7]), (INT_NMI, 1));
    }

    #[test]
    fn bad_counts_are_refused() {
        assert!(matches!(build(0, 0), Err(Error::Cpus(0))));
        assert!(matches!(build(255, 0), Err(Error::Cpus(255))));
        assert!(matches!(build(1, 33), Err(Error::PciSlots(33))));
    }

    #[test]
    fn the_table_lands_where_linux_scans() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, 2, 1).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(0xf0000)).unwrap();
        assert_eq!(&sig, b"_MP_");
        assert!(mem.address_in_range(GuestAddress(MPTABLE_LIMIT - 1)));
    }
}
