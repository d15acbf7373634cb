//! Frames: `u32` little-endian length, then that many bytes.

use postcard::ser_flavors::Flavor;
use serde::Serialize;
use sluice_sdk::abi::FRAME_HEADER;
/// Raw frames, from the shared contract: the payload is already encoded.
pub(crate) use sluice_sdk::abi::{push_frame, push_frame_parts};

/// A postcard flavor that appends to a borrowed `Vec`, so a value is encoded in place.
struct Append<'a>(&'a mut Vec<u8>);

impl Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `value`, postcard-encoded, as one frame. On error `out` is left as it was.
pub fn write_frame<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    if let Err(err) = postcard::serialize_with_flavor(value, Append(out)) {
        out.truncate(start);
        return Err(err);
    }
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::abi::Frames;

    use super::*;

    #[test]
    fn written_frames_hold_the_postcard_of_each_value() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &("to", 1u64)).unwrap();
        write_frame(&mut buf, "be").unwrap();
        let frames: Vec<&[u8]> = Frames::new(&buf).collect();
        assert_eq!(frames, [&postcard::to_allocvec(&("to", 1u64)).unwrap()[..], &[2, b'b', b'e'][..]]);
    }
}
