//! The record a Kafka source with `format = "record"` emits.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{Describe, TypeDesc};

/// One Kafka record, as a source with `format = "record"` hands it to a plugin: every part of
/// it. Take it as the input of a function:
///
/// ```
/// #[sluice_sdk::map]
/// fn value_len(record: sluice_sdk::KafkaRecord) -> u64 {
///     record.value.map_or(0, |v| v.len() as u64)
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The key, if the record has one.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (create or log-append time), ms since the Unix epoch, if it has one.
    pub timestamp: Option<i64>,
    /// Its headers, in order: name and value (`None`: a header without a value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Describe for KafkaRecord {
    fn describe() -> TypeDesc {
        let bytes = || TypeDesc::Option(alloc::boxed::Box::new(<Vec<u8>>::describe()));
        TypeDesc::Struct {
            name: "KafkaRecord".into(),
            fields: alloc::vec![
                ("key".into(), bytes()),
                ("value".into(), bytes()),
                ("topic".into(), TypeDesc::String),
                ("partition".into(), TypeDesc::Signed(32)),
                ("offset".into(), TypeDesc::Signed(64)),
                ("timestamp".into(), <Option<i64>>::describe()),
                ("headers".into(), <Vec<(String, Option<Vec<u8>>)>>::describe()),
            ],
        }
    }
}
