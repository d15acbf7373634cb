//! Type descriptions: how a plugin tells the host what its records look like.
//!
//! The host never decodes values to run a pipeline, but it must find the key inside a keyed
//! record, check that one stage's output fits the next stage's input, and render records as JSON
//! for sinks. A [`TypeDesc`] carries exactly that: the shape of a postcard encoding.
//!
//! Every type a plugin function takes or returns implements [`Describe`]; the SDK covers the
//! primitives, `String`/`&str`, `Vec`, `Option`, tuples and arrays, and `#[derive(Describe)]`
//! covers your own structs (alongside serde's derives).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The shape of one postcard-encoded value.
///
/// Read with serde (a plugin's description, a checkpoint's stage types), an integer is 8, 16,
/// 32, 64 or 128 bits wide, and a type nests at most
/// [`abi2::MAX_DEPTH`](crate::abi2::MAX_DEPTH) levels and has at most
/// [`abi2::MAX_EXPANDED_NODES`](crate::abi2::MAX_EXPANDED_NODES) nodes, as an ABI 2 node list:
/// a longer description is refused, rather than exhausting the reader's stack (serde recurses
/// once per level) or its memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TypeDesc {
    /// `()`: no bytes.
    Unit,
    /// `bool`: one byte.
    Bool,
    /// Unsigned integer of the given width in bits (varint on the wire, except `u8`).
    Unsigned(u8),
    /// Signed integer of the given width in bits (zigzag varint, except `i8`).
    Signed(u8),
    /// `f32`: four bytes little-endian.
    F32,
    /// `f64`: eight bytes little-endian.
    F64,
    /// `char`: encoded as a one-character string.
    Char,
    /// `String` or `&str`: varint length, UTF-8 bytes.
    String,
    /// Byte string: varint length, bytes.
    Bytes,
    /// `Option<T>`: a tag byte, then `T` when the tag is 1.
    Option(Box<TypeDesc>),
    /// `Vec<T>`, slices: varint count, then the elements.
    Seq(Box<TypeDesc>),
    /// A tuple or array: the elements back to back. A 2-tuple is a keyed record `(K, V)`.
    Tuple(Vec<TypeDesc>),
    /// A struct with named fields, back to back in declaration order.
    Struct {
        /// The Rust type name.
        name: String,
        /// Field names and types, in order.
        fields: Vec<(String, TypeDesc)>,
    },
    /// A map (`BTreeMap`, `HashMap`): varint count, then each key and its value.
    Map(Box<TypeDesc>, Box<TypeDesc>),
    /// An enum: the variant's index (varint), then its fields.
    Enum {
        /// The Rust type name.
        name: String,
        /// Variant names and shapes, in declaration order (the index is the position).
        variants: Vec<(String, Variant)>,
    },
}

/// The fields of one variant of an [`TypeDesc::Enum`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// `A`: no fields.
    Unit,
    /// `A(T)`: one value.
    Newtype(TypeDesc),
    /// `A(T, U, ...)`: several values, back to back.
    Tuple(Vec<TypeDesc>),
    /// `A { x: T, ... }`: named fields, back to back.
    Struct(Vec<(String, TypeDesc)>),
}

/// [`TypeDesc`]'s derived reading, whose children are read through the bounded
/// `Deserialize` below (the same wire format as a derive on `TypeDesc` itself).
#[derive(Deserialize)]
#[serde(remote = "TypeDesc", rename = "TypeDesc")]
enum Shape {
    Unit,
    Bool,
    Unsigned(#[serde(deserialize_with = "width")] u8),
    Signed(#[serde(deserialize_with = "width")] u8),
    F32,
    F64,
    Char,
    String,
    Bytes,
    Option(Box<TypeDesc>),
    Seq(Box<TypeDesc>),
    Tuple(Vec<TypeDesc>),
    Struct { name: String, fields: Vec<(String, TypeDesc)> },
    Map(Box<TypeDesc>, Box<TypeDesc>),
    Enum { name: String, variants: Vec<(String, Variant)> },
}

/// An integer's width, refused unless 8, 16, 32, 64 or 128 bits (as in an ABI 2 node list):
/// the host's codec computes ranges from it.
fn width<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    match u8::deserialize(deserializer)? {
        bits @ (8 | 16 | 32 | 64 | 128) => Ok(bits),
        bits => Err(serde::de::Error::custom(alloc::format!(
            "an integer of {bits} bits; the widths are 8, 16, 32, 64 and 128"
        ))),
    }
}

std::thread_local! {
    /// The type being read on this thread: its level, and its nodes so far.
    static READING: core::cell::Cell<(usize, usize)> = const { core::cell::Cell::new((0, 0)) };
}

/// One level of a type being read; leaving it (also by an error) goes back up.
struct Level;

impl Level {
    /// Enters a node, or says why the type is refused.
    fn enter() -> Result<Self, String> {
        let (depth, nodes) = READING.get();
        let nodes = if depth == 0 { 1 } else { nodes + 1 };
        if depth >= crate::abi2::MAX_DEPTH {
            return Err(alloc::format!("the type nests deeper than {} levels", crate::abi2::MAX_DEPTH));
        }
        if nodes > crate::abi2::MAX_EXPANDED_NODES {
            return Err(alloc::format!("the type has more than {} nodes", crate::abi2::MAX_EXPANDED_NODES));
        }
        READING.set((depth + 1, nodes));
        Ok(Level)
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        let (depth, nodes) = READING.get();
        READING.set((depth - 1, nodes));
    }
}

impl<'de> Deserialize<'de> for TypeDesc {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _level = Level::enter().map_err(serde::de::Error::custom)?;
        Shape::deserialize(deserializer)
    }
}

impl TypeDesc {
    /// For a keyed record `(K, V)`, the key and value types.
    pub fn as_pair(&self) -> Option<(&TypeDesc, &TypeDesc)> {
        match self {
            TypeDesc::Tuple(items) if items.len() == 2 => Some((&items[0], &items[1])),
            _ => None,
        }
    }

    /// Reads like Rust source: `(String, u64)`, `Vec<Option<i32>>`.
    pub fn rust_name(&self) -> String {
        match self {
            TypeDesc::Unit => "()".to_string(),
            TypeDesc::Bool => "bool".to_string(),
            TypeDesc::Unsigned(bits) => alloc::format!("u{bits}"),
            TypeDesc::Signed(bits) => alloc::format!("i{bits}"),
            TypeDesc::F32 => "f32".to_string(),
            TypeDesc::F64 => "f64".to_string(),
            TypeDesc::Char => "char".to_string(),
            TypeDesc::String => "String".to_string(),
            TypeDesc::Bytes => "Vec<u8>".to_string(),
            TypeDesc::Option(inner) => alloc::format!("Option<{}>", inner.rust_name()),
            TypeDesc::Seq(inner) => alloc::format!("Vec<{}>", inner.rust_name()),
            TypeDesc::Tuple(items) => {
                let names: Vec<String> = items.iter().map(TypeDesc::rust_name).collect();
                if items.len() == 1 {
                    alloc::format!("({},)", names[0])
                } else {
                    alloc::format!("({})", names.join(", "))
                }
            }
            TypeDesc::Struct { name, .. } | TypeDesc::Enum { name, .. } => name.clone(),
            TypeDesc::Map(key, value) => alloc::format!("Map<{}, {}>", key.rust_name(), value.rust_name()),
        }
    }
}

impl core::fmt::Display for TypeDesc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.rust_name())
    }
}

/// A type whose postcard encoding the host can describe. Derive it for your own structs with
/// `#[derive(sluice_sdk::Describe)]`.
pub trait Describe {
    /// The shape of this type's encoding.
    fn describe() -> TypeDesc;
}

macro_rules! describe_as {
    ($desc:expr => $($ty:ty),*) => {
        $(impl Describe for $ty {
            fn describe() -> TypeDesc {
                $desc
            }
        })*
    };
}

describe_as!(TypeDesc::Unit => ());
describe_as!(TypeDesc::Bool => bool);
describe_as!(TypeDesc::Unsigned(8) => u8);
describe_as!(TypeDesc::Unsigned(16) => u16);
describe_as!(TypeDesc::Unsigned(32) => u32);
describe_as!(TypeDesc::Unsigned(64) => u64, usize);
describe_as!(TypeDesc::Unsigned(128) => u128);
describe_as!(TypeDesc::Signed(8) => i8);
describe_as!(TypeDesc::Signed(16) => i16);
describe_as!(TypeDesc::Signed(32) => i32);
describe_as!(TypeDesc::Signed(64) => i64, isize);
describe_as!(TypeDesc::Signed(128) => i128);
describe_as!(TypeDesc::F32 => f32);
describe_as!(TypeDesc::F64 => f64);
describe_as!(TypeDesc::Char => char);
describe_as!(TypeDesc::String => String, str, alloc::borrow::Cow<'_, str>);

impl<T: Describe + ?Sized> Describe for &T {
    fn describe() -> TypeDesc {
        T::describe()
    }
}

impl<T: Describe> Describe for Box<T> {
    fn describe() -> TypeDesc {
        T::describe()
    }
}

impl<T: Describe> Describe for Option<T> {
    fn describe() -> TypeDesc {
        TypeDesc::Option(Box::new(T::describe()))
    }
}

impl<T: Describe> Describe for Vec<T> {
    fn describe() -> TypeDesc {
        TypeDesc::Seq(Box::new(T::describe()))
    }
}

impl<T: Describe> Describe for [T] {
    fn describe() -> TypeDesc {
        TypeDesc::Seq(Box::new(T::describe()))
    }
}

impl<T: Describe, const N: usize> Describe for [T; N] {
    fn describe() -> TypeDesc {
        TypeDesc::Tuple((0..N).map(|_| T::describe()).collect())
    }
}

impl<K: Describe, V: Describe> Describe for alloc::collections::BTreeMap<K, V> {
    fn describe() -> TypeDesc {
        TypeDesc::Map(Box::new(K::describe()), Box::new(V::describe()))
    }
}

impl<K: Describe, V: Describe, S> Describe for std::collections::HashMap<K, V, S> {
    fn describe() -> TypeDesc {
        TypeDesc::Map(Box::new(K::describe()), Box::new(V::describe()))
    }
}

macro_rules! describe_tuple {
    ($($name:ident),+) => {
        impl<$($name: Describe),+> Describe for ($($name,)+) {
            fn describe() -> TypeDesc {
                TypeDesc::Tuple(alloc::vec![$($name::describe()),+])
            }
        }
    };
}

describe_tuple!(A);
describe_tuple!(A, B);
describe_tuple!(A, B, C);
describe_tuple!(A, B, C, D);
describe_tuple!(A, B, C, D, E);
describe_tuple!(A, B, C, D, E, F);

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> alloc::vec::Vec<u8> {
        // Postcard: `Option` is variant 9 of `TypeDesc`, `Unit` variant 0.
        let mut bytes = alloc::vec![9u8; levels - 1];
        bytes.push(0);
        bytes
    }

    #[test]
    fn a_type_reads_back_as_written_in_postcard_and_json() {
        let ty = TypeDesc::Struct {
            name: "Row".into(),
            fields: alloc::vec![
                ("key".into(), TypeDesc::Option(Box::new(TypeDesc::String))),
                ("values".into(), TypeDesc::Map(Box::new(TypeDesc::Char), Box::new(TypeDesc::Unsigned(64)))),
                (
                    "shape".into(),
                    TypeDesc::Enum {
                        name: "Shape".into(),
                        variants: alloc::vec![
                            ("A".into(), Variant::Unit),
                            ("B".into(), Variant::Newtype(TypeDesc::F32))
                        ],
                    },
                ),
            ],
        };
        assert_eq!(postcard::from_bytes::<TypeDesc>(&postcard::to_allocvec(&ty).unwrap()).unwrap(), ty);
        assert_eq!(serde_json::from_str::<TypeDesc>(&serde_json::to_string(&ty).unwrap()).unwrap(), ty);
    }

    #[test]
    fn a_type_deeper_or_larger_than_a_node_list_may_be_is_refused_not_a_stack_overflow() {
        let max = crate::abi2::MAX_DEPTH;
        assert!(postcard::from_bytes::<TypeDesc>(&nested(max)).is_ok());
        let err = postcard::from_bytes::<TypeDesc>(&nested(max + 1)).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
        // A million levels in 1 MB: refused at level 129 (before: the reader's stack overflowed).
        assert!(postcard::from_bytes::<TypeDesc>(&nested(1 << 20)).is_err());
        // A tuple of more units than a node list may expand to (Tuple is variant 11).
        let mut wide = alloc::vec![11u8, 0x80, 0x80, 0x04];
        wide.resize(wide.len() + crate::abi2::MAX_EXPANDED_NODES, 0);
        assert!(postcard::from_bytes::<TypeDesc>(&wide).is_err());
        wide[1..4].copy_from_slice(&[0xff, 0xff, 0x03]);
        wide.truncate(4 + crate::abi2::MAX_EXPANDED_NODES - 1);
        assert!(postcard::from_bytes::<TypeDesc>(&wide).is_ok(), "the root and 65535 units");
        // Integer widths are those of an ABI 2 node list (`Signed` is variant 3).
        assert!(postcard::from_bytes::<TypeDesc>(&[3, 64]).is_ok());
        assert!(postcard::from_bytes::<TypeDesc>(&[3, 0]).is_err(), "an i0 made the codec's range overflow");
        // A refusal leaves nothing behind: the next type on this thread reads from level 0.
        assert!(postcard::from_bytes::<TypeDesc>(&nested(max)).is_ok());
    }
}
