//! A descriptor ring as its four registers describe it (base, length, head, tail). Both rings
//! use 16-byte descriptors; the device owns the entries from head up to, not including, tail.

pub const DESC_BYTES: u64 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub base: u64,
    pub count: u32,
    pub head: u32,
    pub tail: u32,
}

impl Ring {
    /// Whether the registers describe a ring the device can walk: a guest that puts head or
    /// tail past the end gets nothing done (and a counter) instead of a wrap it did not ask for.
    pub fn is_valid(&self) -> bool {
        self.count > 0 && self.head < self.count && self.tail < self.count
    }

    /// Where descriptor `index` lives; an address that wraps fails translation.
    pub fn desc_addr(&self, index: u32) -> u64 {
        self.base
            .wrapping_add(u64::from(index).wrapping_mul(DESC_BYTES))
    }

    /// Descriptors the device owns.
    pub fn owned(&self) -> u32 {
        (self.tail + self.count - self.head) % self.count
    }

    pub fn advance(&mut self) {
        self.head = (self.head + 1) % self.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_wraps() {
        let mut r = Ring {
            base: 0x1000,
            count: 8,
            head: 6,
            tail: 2,
        };
        assert!(r.is_valid());
        assert_eq!(r.owned(), 4);
        r.advance();
        r.advance();
        assert_eq!(r.head, 0);
        assert_eq!(r.owned(), 2);
        assert_eq!(r.desc_addr(3), 0x1030);
        assert!(!Ring { tail: 8, ..r }.is_valid());
        assert!(!Ring { count: 0, ..r }.is_valid());
    }
}
