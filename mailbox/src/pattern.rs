//! The verify pattern: every 8-byte word of the device holds a value derived from the seed and
//! its byte offset, so a misplaced or lost block is caught wherever it lands, and the host can
//! check the backing file with the same function.

/// The word stored at byte `offset` (a multiple of 8) for `seed`.
pub fn word(seed: u64, offset: u64) -> u64 {
    // splitmix64 of (seed, offset): cheap, and no two offsets collide for one seed.
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ offset;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern of the bytes at `offset..offset + buf.len()`. `offset` and the
/// length must be multiples of 8; a trailing partial word is left untouched.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(seed, offset + i as u64 * 8).to_le_bytes());
    }
}

/// The offset of the first word of `buf` that does not match, if any.
pub fn first_mismatch(seed: u64, offset: u64, buf: &[u8]) -> Option<u64> {
    buf.chunks_exact(8).enumerate().find_map(|(i, chunk)| {
        let at = offset + i as u64 * 8;
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        (u64::from_le_bytes(w) != word(seed, at)).then_some(at)
    })
}

/// How a disk image differs from a verify job's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageMismatch {
    /// The word at this byte offset of the region does not hold the pattern.
    Pattern(u64),
    /// The byte at this offset, past the region, is no longer `fill`.
    Fill(u64),
}

/// Checks a disk image after a verify job over its first `region` bytes: the region holds the
/// pattern of `seed`, and every byte after it is still `fill` (nothing lost, nothing misplaced).
pub fn check_image(seed: u64, image: &[u8], region: usize, fill: u8) -> Result<(), ImageMismatch> {
    let (written, rest) = image.split_at(region.min(image.len()));
    if let Some(at) = first_mismatch(seed, 0, written) {
        return Err(ImageMismatch::Pattern(at));
    }
    match rest.iter().position(|&b| b != fill) {
        Some(i) => Err(ImageMismatch::Fill((written.len() + i) as u64)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check_and_catch_a_misplaced_block() {
        let mut a = [0u8; 4096];
        fill(9, 8192, &mut a);
        assert_eq!(first_mismatch(9, 8192, &a), None);
        assert_eq!(first_mismatch(9, 4096, &a), Some(4096));
        assert_eq!(first_mismatch(10, 8192, &a), Some(8192));
        a[4000] ^= 1;
        assert_eq!(first_mismatch(9, 8192, &a), Some(8192 + 4000));
    }

    #[test]
    fn images_are_checked_in_and_past_the_region() {
        let mut image = [0xeeu8; 64];
        fill(5, 0, &mut image[..32]);
        assert_eq!(check_image(5, &image, 32, 0xee), Ok(()));
        assert_eq!(
            check_image(6, &image, 32, 0xee),
            Err(ImageMismatch::Pattern(0))
        );
        image[40] = 0;
        assert_eq!(
            check_image(5, &image, 32, 0xee),
            Err(ImageMismatch::Fill(40))
        );
        image[9] ^= 1;
        assert_eq!(
            check_image(5, &image, 32, 0xee),
            Err(ImageMismatch::Pattern(8))
        );
    }
}
