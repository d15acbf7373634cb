//! LEB128 varints (postcard's unsigned integers and lengths) and `Vec`s of encoded elements.

/// Bytes a `u64` varint takes at most.
pub(crate) const MAX_VARINT_U64: usize = 10;

/// Reads a LEB128 varint at `*pos` (at most 19 bytes, for u128), advancing `pos` past it.
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u128> {
    let mut value: u128 = 0;
    for shift in (0..19 * 7).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u128::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Encodes `value` as a varint into `buf`; returns the bytes used. For hot paths that must not
/// touch the heap (a receiver framing each line).
pub(crate) fn encode_varint(buf: &mut [u8; MAX_VARINT_U64], mut value: u64) -> &[u8] {
    let mut n = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf[n] = byte;
            return &buf[..=n];
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
}

/// Appends `value` as a varint.
pub(crate) fn write_varint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(encode_varint(&mut [0; MAX_VARINT_U64], value));
}

/// Appends the postcard encoding of a `Vec` whose elements are already encoded: the count,
/// then the elements back to back.
pub(crate) fn push_seq(out: &mut Vec<u8>, values: &[&[u8]]) {
    write_varint(out, values.len() as u64);
    for value in values {
        out.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard_and_read_back() {
        for value in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out, postcard::to_allocvec(&value).unwrap());
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos), Some(u128::from(value)));
            assert_eq!(pos, out.len());
        }
        assert_eq!(read_varint(&[0x80, 0x80], &mut 0), None);
    }
}
