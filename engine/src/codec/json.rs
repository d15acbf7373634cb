//! Rendering postcard records as JSON, driven by their [`TypeDesc`]. Tuples and arrays become
//! JSON arrays (so a keyed record is `[key, value]`), structs objects, `None` null, non-finite
//! floats null.

use std::fmt::Write as _;

use sluice_sdk::{TypeDesc, Variant};

use super::skip::plausible_count;
use super::varint::read_varint;

/// Appends the JSON of the value of type `ty` encoded in `record`. A record that does not match
/// its type (a plugin bug) renders as `{"undecodable": "<hex>"}` rather than failing the sink.
pub(crate) fn render(ty: &TypeDesc, record: &[u8], out: &mut String) {
    let start = out.len();
    let mut pos = 0;
    if value(ty, record, &mut pos, out).is_none() || pos != record.len() {
        out.truncate(start);
        out.push_str("{\"undecodable\":\"");
        for byte in record {
            let _ = write!(out, "{byte:02x}");
        }
        out.push_str("\"}");
    }
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let bytes = buf.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(bytes)
}

fn string(s: &str, out: &mut String) {
    // serde_json's escaping; writing a str into a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn value(ty: &TypeDesc, buf: &[u8], pos: &mut usize, out: &mut String) -> Option<()> {
    match ty {
        TypeDesc::Unit => out.push_str("null"),
        TypeDesc::Bool => match take(buf, pos, 1)?[0] {
            0 => out.push_str("false"),
            1 => out.push_str("true"),
            _ => return None,
        },
        TypeDesc::Unsigned(8) => write!(out, "{}", take(buf, pos, 1)?[0]).ok()?,
        TypeDesc::Signed(8) => write!(out, "{}", take(buf, pos, 1)?[0] as i8).ok()?,
        TypeDesc::Unsigned(_) => write!(out, "{}", read_varint(buf, pos)?).ok()?,
        TypeDesc::Signed(_) => {
            let raw = read_varint(buf, pos)?;
            let decoded = (raw >> 1) as i128 ^ -((raw & 1) as i128);
            write!(out, "{decoded}").ok()?
        }
        TypeDesc::F32 => {
            let v = f32::from_le_bytes(take(buf, pos, 4)?.try_into().ok()?);
            float(f64::from(v), out);
        }
        TypeDesc::F64 => float(f64::from_le_bytes(take(buf, pos, 8)?.try_into().ok()?), out),
        TypeDesc::Char | TypeDesc::String => {
            let len = usize::try_from(read_varint(buf, pos)?).ok()?;
            string(std::str::from_utf8(take(buf, pos, len)?).ok()?, out);
        }
        TypeDesc::Bytes => {
            let len = usize::try_from(read_varint(buf, pos)?).ok()?;
            let bytes = take(buf, pos, len)?;
            out.push('[');
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write!(out, "{b}").ok()?;
            }
            out.push(']');
        }
        TypeDesc::Option(inner) => match take(buf, pos, 1)?[0] {
            0 => out.push_str("null"),
            1 => value(inner, buf, pos, out)?,
            _ => return None,
        },
        TypeDesc::Seq(inner) => {
            let count = read_varint(buf, pos)?;
            plausible_count(count, &[inner], buf.len() - *pos)?;
            out.push('[');
            for i in 0..count {
                if i > 0 {
                    out.push(',');
                }
                value(inner, buf, pos, out)?;
            }
            out.push(']');
        }
        TypeDesc::Tuple(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value(item, buf, pos, out)?;
            }
            out.push(']');
        }
        TypeDesc::Struct { fields, .. } => object(fields, buf, pos, out)?,
        TypeDesc::Map(key, item) => map(key, item, buf, pos, out)?,
        TypeDesc::Enum { variants, .. } => {
            let index = usize::try_from(read_varint(buf, pos)?).ok()?;
            let (name, shape) = variants.get(index)?;
            // serde_json's externally tagged form: "Unit", {"Newtype": v}, {"Tuple": [..]},
            // {"Struct": {..}}.
            if let Variant::Unit = shape {
                string(name, out);
                return Some(());
            }
            out.push('{');
            string(name, out);
            out.push(':');
            match shape {
                Variant::Unit => unreachable!("rendered above"),
                Variant::Newtype(ty) => value(ty, buf, pos, out)?,
                Variant::Tuple(items) => value(&TypeDesc::Tuple(items.clone()), buf, pos, out)?,
                Variant::Struct(fields) => object(fields, buf, pos, out)?,
            }
            out.push('}');
        }
    }
    Some(())
}

fn object(fields: &[(String, TypeDesc)], buf: &[u8], pos: &mut usize, out: &mut String) -> Option<()> {
    out.push('{');
    for (i, (name, field)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(name, out);
        out.push(':');
        value(field, buf, pos, out)?;
    }
    out.push('}');
    Some(())
}

/// A map as serde_json writes it: an object, its keys as strings (a string or char key as
/// itself, a number or bool as its text). A key of any other type (a tuple, a struct), which
/// serde_json refuses, is written as an array of `[key, value]` pairs.
fn map(key: &TypeDesc, item: &TypeDesc, buf: &[u8], pos: &mut usize, out: &mut String) -> Option<()> {
    let count = read_varint(buf, pos)?;
    plausible_count(count, &[key, item], buf.len() - *pos)?;
    let textual = matches!(key, TypeDesc::String | TypeDesc::Char);
    let scalar = matches!(key, TypeDesc::Unsigned(_) | TypeDesc::Signed(_) | TypeDesc::Bool);
    out.push(if textual || scalar { '{' } else { '[' });
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        if textual {
            value(key, buf, pos, out)?;
            out.push(':');
        } else if scalar {
            out.push('"');
            value(key, buf, pos, out)?;
            out.push_str("\":");
        } else {
            out.push('[');
            value(key, buf, pos, out)?;
            out.push(',');
        }
        value(item, buf, pos, out)?;
        if !textual && !scalar {
            out.push(']');
        }
    }
    out.push(if textual || scalar { '}' } else { ']' });
    Some(())
}

fn float(v: f64, out: &mut String) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn json<T: Serialize>(ty: TypeDesc, value: T) -> String {
        let mut out = String::new();
        render(&ty, &postcard::to_allocvec(&value).unwrap(), &mut out);
        out
    }

    #[test]
    fn keyed_records_render_as_pairs() {
        let ty = TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::Unsigned(64)]);
        assert_eq!(json(ty, ("he said \"hi\"", 42u64)), r#"["he said \"hi\"",42]"#);
    }

    #[test]
    fn every_shape_renders_as_json() {
        assert_eq!(json(TypeDesc::Signed(64), -5i64), "-5");
        assert_eq!(json(TypeDesc::Signed(8), -5i8), "-5");
        assert_eq!(json(TypeDesc::F64, 1.5f64), "1.5");
        assert_eq!(json(TypeDesc::F32, f32::NAN), "null");
        assert_eq!(json(TypeDesc::Option(Box::new(TypeDesc::Bool)), None::<bool>), "null");
        assert_eq!(json(TypeDesc::Seq(Box::new(TypeDesc::Unsigned(16))), vec![1u16, 300]), "[1,300]");
        let point = TypeDesc::Struct {
            name: "Point".into(),
            fields: vec![("x".into(), TypeDesc::Signed(32)), ("label".into(), TypeDesc::String)],
        };
        assert_eq!(json(point, (-3i32, "a")), r#"{"x":-3,"label":"a"}"#);
    }

    #[test]
    fn enums_and_maps_render_as_serde_json_renders_them() {
        use std::collections::BTreeMap;

        #[derive(Serialize)]
        enum Shape {
            Empty,
            Word(String),
            Pair(String, u32),
            Many { count: u32, first: String },
        }
        let ty = TypeDesc::Enum {
            name: "Shape".into(),
            variants: vec![
                ("Empty".into(), Variant::Unit),
                ("Word".into(), Variant::Newtype(TypeDesc::String)),
                ("Pair".into(), Variant::Tuple(vec![TypeDesc::String, TypeDesc::Unsigned(32)])),
                (
                    "Many".into(),
                    Variant::Struct(vec![("count".into(), TypeDesc::Unsigned(32)), ("first".into(), TypeDesc::String)]),
                ),
            ],
        };
        for shape in [
            Shape::Empty,
            Shape::Word("a".into()),
            Shape::Pair("b".into(), 2),
            Shape::Many { count: 3, first: "c".into() },
        ] {
            assert_eq!(json(ty.clone(), &shape), serde_json::to_string(&shape).unwrap());
        }
        let counts = BTreeMap::from([('a', 2u32), ('b', 1)]);
        let map = |k: TypeDesc| TypeDesc::Map(Box::new(k), Box::new(TypeDesc::Unsigned(32)));
        assert_eq!(json(map(TypeDesc::Char), &counts), serde_json::to_string(&counts).unwrap());
        let by_number = BTreeMap::from([(7i64, 1u32), (-1, 2)]);
        assert_eq!(json(map(TypeDesc::Signed(64)), &by_number), serde_json::to_string(&by_number).unwrap());
        let by_pair = BTreeMap::from([((1u8, 2u8), 3u32)]);
        let pair = TypeDesc::Tuple(vec![TypeDesc::Unsigned(8), TypeDesc::Unsigned(8)]);
        assert_eq!(json(map(pair), &by_pair), "[[[1,2],3]]");
    }

    #[test]
    fn a_record_that_does_not_match_its_type_is_shown_as_hex() {
        let mut out = String::new();
        render(&TypeDesc::String, &[5, b'a'], &mut out);
        assert_eq!(out, r#"{"undecodable":"0561"}"#);
    }
}
