//! Frames: `u32` little-endian length, then that many bytes.

/// Appends `value`, postcard-encoded, as one frame (the shared contract's writer, as the SDK's
/// guest side uses it). On error `out` is left as it was.
pub use sluice_sdk::abi::encode_frame as write_frame;
/// Raw frames, from the shared contract: the payload is already encoded.
pub(crate) use sluice_sdk::abi::{push_frame, push_frame_parts};

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
