//! The M88E1011 PHY behind MDIC, as Linux's e1000 driver probes it: its ID, a link that is up
//! with auto-negotiation complete at 1000 Mb/s full duplex, and registers that keep what the
//! driver writes. The bench guest never touches it.

/// MDIC fields.
const DATA_MASK: u32 = 0xffff;
const REG_SHIFT: u32 = 16;
const PHY_SHIFT: u32 = 21;
const OP_SHIFT: u32 = 26;
const OP_WRITE: u32 = 1;
const OP_READ: u32 = 2;
const READY: u32 = 1 << 28;
const ERROR: u32 = 1 << 30;
/// The only PHY address that answers (Linux's e1000 looks at 1).
const PHY_ADDRESS: u32 = 1;

const BMCR: usize = 0x00;
const BMCR_RESET: u16 = 1 << 15;
const BMCR_RESTART_AN: u16 = 1 << 9;

pub struct Phy {
    regs: [u16; 32],
}

impl Phy {
    pub fn new() -> Phy {
        let mut regs = [0u16; 32];
        regs[BMCR] = 0x1140; // 1000 Mb/s, full duplex, auto-negotiation on
        regs[0x01] = 0x796d; // link up, auto-negotiation complete
        regs[0x02] = 0x0141; // M88E1011 (Linux: M88E1011_I_PHY_ID 0x01410c20)
        regs[0x03] = 0x0c20;
        regs[0x04] = 0x0de1; // advertised abilities
        regs[0x05] = 0x41e1; // link partner abilities
        regs[0x06] = 0x0001;
        regs[0x09] = 0x0e00; // 1000BASE-T control
        regs[0x0a] = 0x3c00; // 1000BASE-T status: partner 1000 FD, link OK
        regs[0x0f] = 0x3000; // extended status
        regs[0x10] = 0x0360; // M88 specific control
        regs[0x11] = 0xac00; // M88 specific status: 1000 Mb/s, FD, resolved, link
        regs[0x14] = 0x0d60; // M88 extended specific control
        Phy { regs }
    }

    /// Runs the MDIC operation `value` asks for at once; returns what MDIC reads back.
    pub fn mdic(&mut self, value: u32) -> u32 {
        let reg = ((value >> REG_SHIFT) & 0x1f) as usize;
        let phy = (value >> PHY_SHIFT) & 0x1f;
        let op = (value >> OP_SHIFT) & 3;
        if phy != PHY_ADDRESS || !(op == OP_READ || op == OP_WRITE) {
            return value | READY | ERROR;
        }
        let base = value & !(DATA_MASK | READY | ERROR);
        if op == OP_WRITE {
            let mut data = (value & DATA_MASK) as u16;
            if reg == BMCR {
                // Reset and restart complete at once.
                data &= !(BMCR_RESET | BMCR_RESTART_AN);
            }
            self.regs[reg] = data;
            return base | u32::from(data) | READY;
        }
        base | u32::from(self.regs[reg]) | READY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &mut Phy, reg: u32) -> u32 {
        p.mdic(OP_READ << OP_SHIFT | PHY_ADDRESS << PHY_SHIFT | reg << REG_SHIFT)
    }

    #[test]
    fn reads_the_m88_id_and_keeps_writes() {
        let mut p = Phy::new();
        let id1 = read(&mut p, 2);
        assert_ne!(id1 & READY, 0);
        assert_eq!(id1 & ERROR, 0);
        assert_eq!(id1 & DATA_MASK, 0x0141);
        assert_eq!(read(&mut p, 3) & DATA_MASK, 0x0c20);
        p.mdic(OP_WRITE << OP_SHIFT | PHY_ADDRESS << PHY_SHIFT | 4 << REG_SHIFT | 0x01e1);
        assert_eq!(read(&mut p, 4) & DATA_MASK, 0x01e1);
        p.mdic(OP_WRITE << OP_SHIFT | PHY_ADDRESS << PHY_SHIFT | 0x9340);
        assert_eq!(read(&mut p, 0) & DATA_MASK, 0x1140, "reset self-clears");
    }

    #[test]
    fn other_phy_addresses_fail() {
        let mut p = Phy::new();
        let v = p.mdic(OP_READ << OP_SHIFT | 2 << PHY_SHIFT | 2 << REG_SHIFT);
        assert_ne!(v & ERROR, 0);
        assert_ne!(v & READY, 0);
    }
}
