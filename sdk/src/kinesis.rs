//! The record a Kinesis source with `format = "record"` emits.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{Describe, TypeDesc};

/// One Kinesis record, as a source with `format = "record"` hands it to a plugin. Take it as
/// the input of a function:
///
/// ```
/// #[sluice_sdk::map]
/// fn key(record: sluice_sdk::KinesisRecord) -> String {
///     record.partition_key
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KinesisRecord {
    /// The partition key the producer gave.
    pub partition_key: String,
    /// Its sequence number in the shard (decimal digits; longer means later).
    pub sequence_number: String,
    /// The shard it was read from.
    pub shard: String,
    /// When Kinesis took it, ms since the Unix epoch (`ApproximateArrivalTimestamp`).
    pub arrival_timestamp: Option<i64>,
    /// The data blob.
    pub data: Vec<u8>,
}

impl Describe for KinesisRecord {
    fn describe() -> TypeDesc {
        TypeDesc::Struct {
            name: "KinesisRecord".into(),
            fields: alloc::vec![
                ("partition_key".into(), TypeDesc::String),
                ("sequence_number".into(), TypeDesc::String),
                ("shard".into(), TypeDesc::String),
                ("arrival_timestamp".into(), <Option<i64>>::describe()),
                ("data".into(), <Vec<u8>>::describe()),
            ],
        }
    }
}
