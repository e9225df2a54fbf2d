//! MSI-X: the vector table and pending-bit array a device exposes in a BAR, and the delivery
//! rule (enabled, not function-masked, vector not masked: send; otherwise set pending).

/// Where an MSI goes: address and data as the guest programmed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Delivers MSIs (KVM_SIGNAL_MSI on a real VM, a recorder in tests).
pub trait MsiSink: Send + Sync {
    fn signal(&self, msg: MsiMessage);
}

pub const CAP_ID: u8 = 0x11;
const ENTRY_SIZE: u64 = 16;
const CTRL_MASKED: u32 = 1;
const MSG_CTRL_ENABLE: u16 = 1 << 15;
const MSG_CTRL_FUNCTION_MASK: u16 = 1 << 14;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_mask: bool,
}

impl Msix {
    /// `vectors` entries, all masked, as after reset.
    pub fn new(vectors: u16) -> Msix {
        let n = usize::from(vectors.max(1));
        Msix {
            entries: vec![
                Entry {
                    ctrl: CTRL_MASKED,
                    ..Entry::default()
                };
                n
            ],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_mask: false,
        }
    }

    pub fn vectors(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of table space.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// The capability body (ID, next, message control, table and PBA offset/BIR) and its
    /// writable mask: only the enable and function-mask bits are the guest's.
    pub fn capability(
        &self,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> ([u8; 12], [u8; 12]) {
        let ctrl = (self.entries.len() - 1) as u16;
        let mut body = [0u8; 12];
        body[0] = CAP_ID;
        body[2..4].copy_from_slice(&ctrl.to_le_bytes());
        body[4..8].copy_from_slice(&(table_offset | u32::from(table_bar)).to_le_bytes());
        body[8..12].copy_from_slice(&(pba_offset | u32::from(pba_bar)).to_le_bytes());
        let mut writable = [0u8; 12];
        writable[3] = ((MSG_CTRL_ENABLE | MSG_CTRL_FUNCTION_MASK) >> 8) as u8;
        (body, writable)
    }

    /// Takes the message control word after a config write; unmasking flushes pending vectors.
    pub fn set_message_control(&mut self, ctrl: u16, sink: &dyn MsiSink) {
        self.enabled = ctrl & MSG_CTRL_ENABLE != 0;
        self.function_mask = ctrl & MSG_CTRL_FUNCTION_MASK != 0;
        self.flush_pending(sink);
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let (idx, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        let Some(e) = self.entries.get(idx) else {
            return;
        };
        let v = match field & !3 {
            0 => e.addr_lo,
            4 => e.addr_hi,
            8 => e.data,
            _ => e.ctrl,
        };
        let v = if data.len() == 8 && field == 0 {
            u64::from(e.addr_lo) | u64::from(e.addr_hi) << 32
        } else {
            u64::from(v >> ((field & 3) * 8))
        };
        let n = data.len().min(8);
        data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    }

    pub fn table_write(&mut self, offset: u64, data: &[u8], sink: &dyn MsiSink) {
        let (idx, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(b);
        match (field, n) {
            (0, 8) => {
                e.addr_lo = v as u32;
                e.addr_hi = (v >> 32) as u32;
            }
            (8, 8) => {
                e.data = v as u32;
                e.ctrl = (v >> 32) as u32 & CTRL_MASKED;
            }
            (0, 4) => e.addr_lo = v as u32,
            (4, 4) => e.addr_hi = v as u32,
            (8, 4) => e.data = v as u32,
            (12, 4) => e.ctrl = v as u32 & CTRL_MASKED,
            // Other widths are not allowed by the spec; ignore them.
            _ => return,
        }
        self.flush_pending(sink);
    }

    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let word = self
            .pending
            .get((offset / 8) as usize)
            .copied()
            .unwrap_or(0);
        let bytes = (word >> ((offset % 8) * 8)).to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn masked(&self, vector: usize) -> bool {
        self.function_mask || self.entries[vector].ctrl & CTRL_MASKED != 0
    }

    fn message(&self, vector: usize) -> MsiMessage {
        let e = &self.entries[vector];
        MsiMessage {
            address: u64::from(e.addr_lo) | u64::from(e.addr_hi) << 32,
            data: e.data,
        }
    }

    /// Raises `vector`: delivered now, or remembered as pending while masked. Returns whether
    /// it was delivered. Vectors beyond the table and a disabled MSI-X are ignored.
    pub fn notify(&mut self, vector: u16, sink: &dyn MsiSink) -> bool {
        let v = usize::from(vector);
        if !self.enabled || v >= self.entries.len() {
            return false;
        }
        if self.masked(v) {
            self.pending[v / 64] |= 1 << (v % 64);
            return false;
        }
        sink.signal(self.message(v));
        true
    }

    fn flush_pending(&mut self, sink: &dyn MsiSink) {
        if !self.enabled {
            return;
        }
        for v in 0..self.entries.len() {
            if self.pending[v / 64] & (1 << (v % 64)) != 0 && !self.masked(v) {
                self.pending[v / 64] &= !(1 << (v % 64));
                sink.signal(self.message(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MsiMessage>>);

    impl MsiSink for Recorder {
        fn signal(&self, msg: MsiMessage) {
            self.0.lock().unwrap().push(msg);
        }
    }

    fn program(m: &mut Msix, v: u64, sink: &Recorder) {
        m.table_write(v * 16, &(0xfee0_0000u32 + v as u32).to_le_bytes(), sink);
        m.table_write(v * 16 + 4, &0u32.to_le_bytes(), sink);
        m.table_write(v * 16 + 8, &(0x40 + v as u32).to_le_bytes(), sink);
    }

    #[test]
    fn masked_vectors_pend_and_fire_on_unmask() {
        let sink = Recorder::default();
        let mut m = Msix::new(4);
        m.set_message_control(MSG_CTRL_ENABLE, &sink);
        program(&mut m, 2, &sink);
        assert!(!m.notify(2, &sink), "vectors start masked");
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b100);
        m.table_write(2 * 16 + 12, &0u32.to_le_bytes(), &sink);
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![MsiMessage {
                address: 0xfee0_0002,
                data: 0x42
            }]
        );
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        assert!(m.notify(2, &sink));
        assert_eq!(sink.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn function_mask_and_disable_hold_delivery() {
        let sink = Recorder::default();
        let mut m = Msix::new(2);
        program(&mut m, 0, &sink);
        m.table_write(12, &0u32.to_le_bytes(), &sink);
        assert!(!m.notify(0, &sink), "disabled");
        m.set_message_control(MSG_CTRL_ENABLE | MSG_CTRL_FUNCTION_MASK, &sink);
        assert!(!m.notify(0, &sink));
        assert!(sink.0.lock().unwrap().is_empty());
        m.set_message_control(MSG_CTRL_ENABLE, &sink);
        assert_eq!(
            sink.0.lock().unwrap().len(),
            1,
            "pending vector delivered on unmask"
        );
    }

    #[test]
    fn out_of_range_accesses_are_ignored() {
        let sink = Recorder::default();
        let mut m = Msix::new(1);
        m.set_message_control(MSG_CTRL_ENABLE, &sink);
        m.table_write(16 * 5, &[1, 2, 3, 4], &sink);
        m.table_write(3, &[1], &sink);
        assert!(!m.notify(9, &sink));
        let mut d = [0xffu8; 4];
        m.table_read(16 * 5, &mut d);
        assert_eq!(d, [0; 4]);
        m.table_read(12, &mut d);
        assert_eq!(u32::from_le_bytes(d), CTRL_MASKED);
    }

    #[test]
    fn capability_advertises_table_size_and_locations() {
        let m = Msix::new(8);
        let (body, writable) = m.capability(4, 0, 4, 0x800);
        assert_eq!(body[0], CAP_ID);
        assert_eq!(u16::from_le_bytes([body[2], body[3]]), 7);
        assert_eq!(u32::from_le_bytes([body[4], body[5], body[6], body[7]]), 4);
        assert_eq!(
            u32::from_le_bytes([body[8], body[9], body[10], body[11]]),
            0x804
        );
        assert_eq!(writable[3], 0xc0);
    }
}
