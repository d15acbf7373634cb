//! The host's codec: every byte format the engine reads or writes inside a partition. The host
//! never decodes values; it finds keys, builds new tuples around value bytes, renders records
//! as JSON for sinks and encodes JSON a person wrote (test input, stage parameters), all driven
//! by [`TypeDesc`](sluice_sdk::TypeDesc). Follows postcard's wire format 1.0 and the framing of
//! [`sluice_sdk::abi`] (the shared host/guest contract).
//!
//! ```text
//! partition  frame*                                  (iterated with abi::Frames)
//! frame      u32 LE length, then that many bytes     (write_frame, push_frame, push_frame_parts)
//! record     the postcard of one value
//! varint     LEB128, 7 bits a byte, low first        (unsigned ints wider than 8 bits, lengths)
//! signed     zigzag, then varint                     (i16..i128)
//! u8, i8     one byte; bool one byte 0 or 1; f32, f64 4 or 8 bytes LE
//! String     varint byte length, then UTF-8          (char and bytes likewise)
//! tuple      the elements back to back               (a keyed record (K, V) is key then value)
//! struct     the fields back to back, in order
//! Vec        varint count, then the elements         (push_seq)
//! Option     tag byte 0 (None) or 1 then the value
//! ```
//!
//! What is refused: a value that runs past its buffer, a varint longer than 19 bytes (u128), an
//! `Option` or `bool` tag other than 0 or 1. `skip_value` then returns `None` (the caller
//! reports a bad record) and `render` shows the record as hex instead of failing the sink.

mod frame;
mod json;
mod parse;
mod skip;
mod varint;

pub use frame::write_frame;
pub(crate) use frame::{push_frame, push_frame_parts};
pub(crate) use json::render;
pub(crate) use parse::encode as encode_json;
pub(crate) use skip::skip_value;
pub(crate) use varint::{MAX_VARINT_U64, encode_varint, push_seq, read_varint, write_varint};
