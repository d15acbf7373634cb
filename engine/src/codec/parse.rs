//! The other way from `json.rs`: a JSON value encoded as the postcard of a [`TypeDesc`], for
//! records and parameters a person writes (`sluice test` input files). The JSON shapes are the
//! ones `render` writes: tuples as arrays, structs as objects, `None` as null. A value that does
//! not fit says where (`[1].name`) and what was expected.

use sluice_sdk::{TypeDesc, Variant};

use super::varint::write_varint;

/// Where a value did not fit its type, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Misfit {
    /// The path to the part that did not fit (`[1].name`; empty: the whole value).
    pub(crate) at: String,
    /// What was expected and found.
    pub(crate) problem: String,
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at.is_empty() {
            true => f.write_str(&self.problem),
            false => write!(f, "{}: {}", self.at, self.problem),
        }
    }
}

/// Appends the postcard of `value` as type `ty`, or says where and why it does not fit. On
/// error `out` may hold part of the value: callers encode into a buffer they drop.
pub(crate) fn encode(ty: &TypeDesc, value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), Misfit> {
    let mut at = String::new();
    encode_at(ty, value, out, &mut at).map_err(|problem| Misfit { at, problem })
}

fn encode_at(ty: &TypeDesc, value: &serde_json::Value, out: &mut Vec<u8>, at: &mut String) -> Result<(), String> {
    use serde_json::Value;
    let wrong = |expected: &str| Err(format!("expected {expected}, found {}", shape(value)));
    match (ty, value) {
        (TypeDesc::Unit, Value::Null) => {}
        (TypeDesc::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
        (TypeDesc::Unsigned(bits), _) => match value.as_u64().filter(|v| fits_unsigned(*v, *bits)) {
            Some(v) if *bits == 8 => out.push(v as u8),
            Some(v) => write_varint(out, v),
            None => return wrong(&format!("an integer from 0 to {}", max_unsigned(*bits))),
        },
        (TypeDesc::Signed(bits), _) => match value.as_i64().filter(|v| fits_signed(*v, *bits)) {
            Some(v) if *bits == 8 => out.push(v as i8 as u8),
            Some(v) => write_varint(out, ((v << 1) ^ (v >> 63)) as u64),
            None => return wrong(&format!("an integer that fits i{bits}")),
        },
        (TypeDesc::F32, Value::Number(n)) => out.extend_from_slice(&(n.as_f64().unwrap_or(0.0) as f32).to_le_bytes()),
        (TypeDesc::F64, Value::Number(n)) => out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes()),
        (TypeDesc::Char, Value::String(s)) if s.chars().count() == 1 => bytes(s.as_bytes(), out),
        (TypeDesc::Char, _) => return wrong("a one-character string"),
        (TypeDesc::String, Value::String(s)) => bytes(s.as_bytes(), out),
        (TypeDesc::Bytes, Value::String(s)) => bytes(s.as_bytes(), out),
        (TypeDesc::Bytes, Value::Array(items)) => {
            let parsed: Option<Vec<u8>> = items.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            match parsed {
                Some(parsed) => bytes(&parsed, out),
                None => return wrong("bytes: an array of integers from 0 to 255, or a string"),
            }
        }
        (TypeDesc::Option(_), Value::Null) => out.push(0),
        (TypeDesc::Option(inner), _) => {
            out.push(1);
            encode_at(inner, value, out, at)?;
        }
        (TypeDesc::Seq(inner), Value::Array(items)) => {
            write_varint(out, items.len() as u64);
            for (index, item) in items.iter().enumerate() {
                nested(at, &format!("[{index}]"), |at| encode_at(inner, item, out, at))?;
            }
        }
        (TypeDesc::Tuple(types), Value::Array(items)) if types.len() == items.len() => {
            for (index, (ty, item)) in types.iter().zip(items).enumerate() {
                nested(at, &format!("[{index}]"), |at| encode_at(ty, item, out, at))?;
            }
        }
        (TypeDesc::Tuple(types), _) => return wrong(&format!("an array of {} ({ty})", types.len())),
        (TypeDesc::Struct { name, fields }, Value::Object(object)) => {
            if let Some(unknown) = object.keys().find(|key| !fields.iter().any(|(field, _)| field == *key)) {
                let known: Vec<&str> = fields.iter().map(|(field, _)| field.as_str()).collect();
                return Err(format!("{name} has no field `{unknown}` (its fields: {})", known.join(", ")));
            }
            for (field, ty) in fields {
                let step = if at.is_empty() { field.clone() } else { format!(".{field}") };
                match object.get(field) {
                    Some(item) => nested(at, &step, |at| encode_at(ty, item, out, at))?,
                    // A missing optional field is None, as serde's derive reads it.
                    None if matches!(ty, TypeDesc::Option(_)) => out.push(0),
                    None => return nested(at, &step, |_| Err(format!("missing ({ty})"))),
                }
            }
        }
        (TypeDesc::Struct { name, .. }, _) => return wrong(&format!("an object ({name})")),
        (TypeDesc::Map(key, item), Value::Object(object)) => {
            write_varint(out, object.len() as u64);
            for (text, item_value) in object {
                // An object's keys are strings: a key of another type is its JSON text.
                let key_value = match **key {
                    TypeDesc::String | TypeDesc::Char => Value::String(text.clone()),
                    _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
                };
                nested(at, &format!("[{text:?}]"), |at| {
                    encode_at(key, &key_value, out, at)?;
                    encode_at(item, item_value, out, at)
                })?;
            }
        }
        (TypeDesc::Map(key, item), Value::Array(pairs)) => {
            write_varint(out, pairs.len() as u64);
            for (index, pair) in pairs.iter().enumerate() {
                let pair_ty = TypeDesc::Tuple(vec![(**key).clone(), (**item).clone()]);
                nested(at, &format!("[{index}]"), |at| encode_at(&pair_ty, pair, out, at))?;
            }
        }
        (TypeDesc::Map(..), _) => return wrong(&format!("an object or an array of [key, value] pairs ({ty})")),
        (TypeDesc::Enum { name, variants }, _) => {
            let names = || variants.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ");
            // serde_json's externally tagged form: "Unit" or {"Variant": fields}.
            let (tag, fields) = match value {
                Value::String(tag) => (tag, None),
                Value::Object(object) if object.len() == 1 => {
                    let (tag, fields) = object.iter().next().expect("one entry");
                    (tag, Some(fields))
                }
                _ => {
                    return wrong(&format!(
                        "a variant of {name} (\"Unit\" or {{\"Variant\": ...}}; its variants: {})",
                        names()
                    ));
                }
            };
            let Some(index) = variants.iter().position(|(v, _)| v == tag) else {
                return Err(format!("{name} has no variant `{tag}` (its variants: {})", names()));
            };
            write_varint(out, index as u64);
            let shape = &variants[index].1;
            let step = if at.is_empty() { tag.clone() } else { format!(".{tag}") };
            match (shape, fields) {
                (Variant::Unit, None) => {}
                (Variant::Newtype(ty), Some(fields)) => nested(at, &step, |at| encode_at(ty, fields, out, at))?,
                (Variant::Tuple(items), Some(fields)) => {
                    nested(at, &step, |at| encode_at(&TypeDesc::Tuple(items.clone()), fields, out, at))?
                }
                (Variant::Struct(items), Some(fields)) => {
                    let ty = TypeDesc::Struct { name: format!("{name}::{tag}"), fields: items.clone() };
                    nested(at, &step, |at| encode_at(&ty, fields, out, at))?
                }
                (Variant::Unit, Some(_)) => return Err(format!("{name}::{tag} has no fields: write it as \"{tag}\"")),
                (_, None) => return Err(format!("{name}::{tag} has fields: write it as {{\"{tag}\": ...}}")),
            }
        }
        _ => return wrong(&format!("{ty}")),
    }
    Ok(())
}

/// Runs `f` with `step` appended to the path `at`; takes it off again unless `f` failed (the
/// path then names the part that did not fit).
fn nested(at: &mut String, step: &str, f: impl FnOnce(&mut String) -> Result<(), String>) -> Result<(), String> {
    let len = at.len();
    at.push_str(step);
    f(at)?;
    at.truncate(len);
    Ok(())
}

fn bytes(data: &[u8], out: &mut Vec<u8>) {
    write_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn max_unsigned(bits: u8) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

fn fits_unsigned(value: u64, bits: u8) -> bool {
    value <= max_unsigned(bits)
}

fn fits_signed(value: i64, bits: u8) -> bool {
    bits >= 64 || (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&value)
}

fn shape(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(_) => "a string".into(),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::json;

    use super::*;

    fn encoded(ty: &TypeDesc, value: serde_json::Value) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        encode(ty, &value, &mut out).map(|()| out).map_err(|misfit| misfit.to_string())
    }

    fn postcard<T: Serialize>(value: T) -> Vec<u8> {
        postcard::to_allocvec(&value).unwrap()
    }

    #[test]
    fn json_encodes_as_postcard_of_its_type() {
        let pair = TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::Unsigned(64)]);
        assert_eq!(encoded(&pair, json!(["to", 300])).unwrap(), postcard(("to", 300u64)));
        assert_eq!(encoded(&TypeDesc::Signed(64), json!(-5)).unwrap(), postcard(-5i64));
        assert_eq!(encoded(&TypeDesc::Signed(8), json!(-5)).unwrap(), postcard(-5i8));
        assert_eq!(encoded(&TypeDesc::F32, json!(1.5)).unwrap(), postcard(1.5f32));
        let maybe = TypeDesc::Seq(Box::new(TypeDesc::Option(Box::new(TypeDesc::Bool))));
        assert_eq!(encoded(&maybe, json!([true, null])).unwrap(), postcard(vec![Some(true), None]));
        assert_eq!(encoded(&TypeDesc::Bytes, json!([1, 2])).unwrap(), postcard(vec![1u8, 2]));
        let point = TypeDesc::Struct {
            name: "Point".into(),
            fields: vec![
                ("x".into(), TypeDesc::Signed(32)),
                ("label".into(), TypeDesc::Option(Box::new(TypeDesc::String))),
            ],
        };
        assert_eq!(encoded(&point, json!({"x": -3, "label": "a"})).unwrap(), postcard((-3i32, Some("a"))));
        assert_eq!(encoded(&point, json!({"x": 1})).unwrap(), postcard((1i32, None::<&str>)));
    }

    #[test]
    fn enums_and_maps_encode_from_the_json_serde_json_writes() {
        use std::collections::BTreeMap;

        #[derive(Serialize)]
        enum Shape {
            Empty,
            Word(String),
            Many { count: u32 },
        }
        let ty = TypeDesc::Enum {
            name: "Shape".into(),
            variants: vec![
                ("Empty".into(), Variant::Unit),
                ("Word".into(), Variant::Newtype(TypeDesc::String)),
                ("Many".into(), Variant::Struct(vec![("count".into(), TypeDesc::Unsigned(32))])),
            ],
        };
        for shape in [Shape::Empty, Shape::Word("a".into()), Shape::Many { count: 3 }] {
            let written = serde_json::to_value(&shape).unwrap();
            assert_eq!(encoded(&ty, written).unwrap(), postcard(&shape));
        }
        assert_eq!(
            encoded(&ty, json!("Nope")).unwrap_err(),
            "Shape has no variant `Nope` (its variants: Empty, Word, Many)"
        );
        assert_eq!(
            encoded(&ty, json!({"Many": {"count": "x"}})).unwrap_err(),
            "Many.count: expected an integer from 0 to 4294967295, found a string"
        );
        let map = TypeDesc::Map(Box::new(TypeDesc::Unsigned(8)), Box::new(TypeDesc::String));
        let value = BTreeMap::from([(1u8, "a"), (2, "b")]);
        assert_eq!(encoded(&map, serde_json::to_value(&value).unwrap()).unwrap(), postcard(&value));
        assert_eq!(encoded(&map, json!([[1, "a"], [2, "b"]])).unwrap(), postcard(&value));
    }

    #[test]
    fn a_value_that_does_not_fit_says_where_and_what_was_expected() {
        let ty = TypeDesc::Seq(Box::new(TypeDesc::Struct {
            name: "Row".into(),
            fields: vec![("name".into(), TypeDesc::String), ("n".into(), TypeDesc::Unsigned(8))],
        }));
        let err = encoded(&ty, json!([{"name": "a", "n": 1}, {"name": 2, "n": 1}])).unwrap_err();
        assert_eq!(err, "[1].name: expected String, found 2");
        let err = encoded(&ty, json!([{"name": "a", "n": 300}])).unwrap_err();
        assert_eq!(err, "[0].n: expected an integer from 0 to 255, found 300");
        let err = encoded(&ty, json!([{"name": "a", "n": 1, "extra": true}])).unwrap_err();
        assert_eq!(err, "[0]: Row has no field `extra` (its fields: name, n)");
        let err = encoded(&ty, json!([{"n": 1}])).unwrap_err();
        assert_eq!(err, "[0].name: missing (String)");
        let pair = TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::Unsigned(64)]);
        assert_eq!(
            encoded(&pair, json!("word")).unwrap_err(),
            "expected an array of 2 ((String, u64)), found a string"
        );
    }
}
