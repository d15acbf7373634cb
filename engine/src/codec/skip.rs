//! Finding the end of a postcard value without decoding it: how the host slices the key out of
//! a keyed record `(K, V)`.

use sluice_sdk::{TypeDesc, Variant};

use super::varint::read_varint;

/// Bytes taken by one value of type `ty` at the start of `buf`, or None if `buf` is too short
/// or malformed.
pub(crate) fn skip_value(ty: &TypeDesc, buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    skip(ty, buf, &mut pos)?;
    Some(pos)
}

fn skip(ty: &TypeDesc, buf: &[u8], pos: &mut usize) -> Option<()> {
    match ty {
        TypeDesc::Unit => {}
        TypeDesc::Bool | TypeDesc::Unsigned(8) | TypeDesc::Signed(8) => advance(buf, pos, 1)?,
        TypeDesc::Unsigned(_) | TypeDesc::Signed(_) => {
            read_varint(buf, pos)?;
        }
        TypeDesc::F32 => advance(buf, pos, 4)?,
        TypeDesc::F64 => advance(buf, pos, 8)?,
        TypeDesc::Char | TypeDesc::String | TypeDesc::Bytes => {
            let len = read_varint(buf, pos)?;
            advance(buf, pos, usize::try_from(len).ok()?)?;
        }
        TypeDesc::Option(inner) => {
            let tag = *buf.get(*pos)?;
            *pos += 1;
            match tag {
                0 => {}
                1 => skip(inner, buf, pos)?,
                _ => return None,
            }
        }
        TypeDesc::Seq(inner) => {
            let count = read_varint(buf, pos)?;
            plausible_count(count, &[inner], buf.len() - *pos)?;
            for _ in 0..count {
                skip(inner, buf, pos)?;
            }
        }
        TypeDesc::Tuple(items) => {
            for item in items {
                skip(item, buf, pos)?;
            }
        }
        TypeDesc::Struct { fields, .. } => {
            for (_, field) in fields {
                skip(field, buf, pos)?;
            }
        }
        TypeDesc::Map(key, value) => {
            let count = read_varint(buf, pos)?;
            plausible_count(count, &[key, value], buf.len() - *pos)?;
            for _ in 0..count {
                skip(key, buf, pos)?;
                skip(value, buf, pos)?;
            }
        }
        TypeDesc::Enum { variants, .. } => {
            let index = usize::try_from(read_varint(buf, pos)?).ok()?;
            match &variants.get(index)?.1 {
                Variant::Unit => {}
                Variant::Newtype(ty) => skip(ty, buf, pos)?,
                Variant::Tuple(items) => {
                    for item in items {
                        skip(item, buf, pos)?;
                    }
                }
                Variant::Struct(fields) => {
                    for (_, field) in fields {
                        skip(field, buf, pos)?;
                    }
                }
            }
        }
    }
    Some(())
}

/// Elements of a type of no bytes (`()`) that a count may claim: more is a plugin's bug or
/// malice (a `Vec<()>` of 2^64 elements would take the host that long to walk).
const MAX_EMPTY_ELEMENTS: u128 = 1 << 20;

/// Whether `count` elements of `element` types can be in `remaining` bytes: each takes at
/// least one byte unless all are of no bytes, which are capped at [`MAX_EMPTY_ELEMENTS`].
pub(super) fn plausible_count(count: u128, element: &[&TypeDesc], remaining: usize) -> Option<()> {
    let limit = if element.iter().all(|ty| empty(ty)) { MAX_EMPTY_ELEMENTS } else { remaining as u128 };
    (count <= limit).then_some(())
}

/// Whether a value of `ty` takes no bytes.
fn empty(ty: &TypeDesc) -> bool {
    match ty {
        TypeDesc::Unit => true,
        TypeDesc::Tuple(items) => items.iter().all(empty),
        TypeDesc::Struct { fields, .. } => fields.iter().all(|(_, ty)| empty(ty)),
        _ => false,
    }
}

fn advance(buf: &[u8], pos: &mut usize, n: usize) -> Option<()> {
    let end = pos.checked_add(n)?;
    if end > buf.len() {
        return None;
    }
    *pos = end;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn check<K: Serialize, V: Serialize>(key_ty: TypeDesc, key: K, value: V) {
        let key_bytes = postcard::to_allocvec(&key).unwrap();
        let record = postcard::to_allocvec(&(key, value)).unwrap();
        assert_eq!(skip_value(&key_ty, &record), Some(key_bytes.len()));
    }

    #[test]
    fn a_count_past_what_the_buffer_can_hold_is_refused_at_once() {
        let seq = TypeDesc::Seq(Box::new(TypeDesc::Unsigned(64)));
        // u64::MAX elements claimed, none present: refused without walking them.
        let mut record = vec![0xff; 9];
        record.push(0x01);
        assert_eq!(skip_value(&seq, &record), None);
        let units = TypeDesc::Map(Box::new(TypeDesc::Unit), Box::new(TypeDesc::Unit));
        assert_eq!(skip_value(&units, &record), None);
        assert_eq!(skip_value(&units, &[3]), Some(1), "three () => () entries take no bytes");
    }

    #[test]
    fn keys_of_every_shape_are_found() {
        check(TypeDesc::String, "hello", 7u64);
        check(TypeDesc::Unsigned(64), 300u64, "v");
        check(TypeDesc::Signed(32), -70_000i32, 1u8);
        check(TypeDesc::Option(Box::new(TypeDesc::String)), Some("x"), 1u8);
        check(TypeDesc::Option(Box::new(TypeDesc::String)), None::<&str>, 1u8);
        check(TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::F64, TypeDesc::Bool]), ("a", 1.5f64, true), 0u8);
        check(TypeDesc::Seq(Box::new(TypeDesc::Unsigned(16))), vec![1u16, 500, 70], 0u8);
        check(TypeDesc::Unsigned(128), u128::MAX, 0u8);
    }

    #[test]
    fn truncated_records_are_refused() {
        let record = postcard::to_allocvec(&("hello", 1u8)).unwrap();
        assert_eq!(skip_value(&TypeDesc::String, &record[..3]), None);
        assert_eq!(skip_value(&TypeDesc::Option(Box::new(TypeDesc::Bool)), &[2]), None);
    }
}
