//! The test vectors the Python and JavaScript guest SDKs check their postcard codecs against
//! (`sdk/python/tests/vectors.json`, `sdk/js/test/vectors.json`), checked here against the
//! encoding the Rust SDK and the engine use: postcard itself.

use std::collections::BTreeMap;

use serde::Serialize;

/// `value` (JSON) read as the Rust type named `ty` in the vectors, postcard-encoded.
fn encode(ty: &str, value: serde_json::Value) -> Vec<u8> {
    fn as_type<T: serde::de::DeserializeOwned + Serialize>(value: serde_json::Value) -> Vec<u8> {
        let typed: T = serde_json::from_value(value).expect("the vector's value fits its type");
        postcard::to_allocvec(&typed).expect("encodes")
    }
    match ty {
        "()" => as_type::<()>(value),
        "bool" => as_type::<bool>(value),
        "u8" => as_type::<u8>(value),
        "u16" => as_type::<u16>(value),
        "u32" => as_type::<u32>(value),
        "u64" => as_type::<u64>(value),
        "i8" => as_type::<i8>(value),
        "i16" => as_type::<i16>(value),
        "i32" => as_type::<i32>(value),
        "i64" => as_type::<i64>(value),
        "f32" => as_type::<f32>(value),
        "f64" => as_type::<f64>(value),
        "char" => as_type::<char>(value),
        "str" => as_type::<String>(value),
        // A byte string as a list of bytes (postcard encodes both alike).
        "Vec<u8>" | "bytes" => as_type::<Vec<u8>>(value),
        "Vec<u64>" => as_type::<Vec<u64>>(value),
        "Vec<i32>" => as_type::<Vec<i32>>(value),
        "Vec<str>" => as_type::<Vec<String>>(value),
        "Vec<(str,u64)>" => as_type::<Vec<(String, u64)>>(value),
        "Option<u64>" => as_type::<Option<u64>>(value),
        "Option<str>" => as_type::<Option<String>>(value),
        "Option<Vec<u64>>" => as_type::<Option<Vec<u64>>>(value),
        "(str,u64)" => as_type::<(String, u64)>(value),
        "(u32,str)" => as_type::<(u32, String)>(value),
        "(bool,i32,Option<str>)" => as_type::<(bool, i32, Option<String>)>(value),
        "(u8,i32,bool)" => as_type::<(u8, i32, bool)>(value),
        // JSON objects keep their keys sorted here; the vectors list them sorted too.
        "Map<str,u64>" => as_type::<BTreeMap<String, u64>>(value),
        other => panic!("a vector of a type this test does not know: {other}"),
    }
}

fn check(file: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    for vector in &vectors {
        let ty = vector["type"].as_str().expect("type");
        let hex: String = encode(ty, vector["value"].clone()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, vector["hex"].as_str().expect("hex"), "{file}: {vector}");
    }
    vectors.len()
}

#[test]
fn the_python_sdks_vectors_are_postcards_encoding() {
    assert!(check("python/tests/vectors.json") > 50);
}

#[test]
fn the_javascript_sdks_vectors_are_postcards_encoding() {
    assert!(check("js/test/vectors.json") > 50);
}
