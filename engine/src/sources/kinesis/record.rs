//! What a Kinesis record becomes in a block: with `format = "text"` its data as a line (a
//! postcard `String`, the same frame a socket line is), with `format = "record"` the whole
//! record, encoded exactly as the SDK's [`sluice_sdk::KinesisRecord`] decodes it.

use serde::Serialize;
use sluice_sdk::abi::encode_frame;

use super::KinesisFormat;
use super::shards::Fetched;

/// [`sluice_sdk::KinesisRecord`], borrowed.
#[derive(Serialize)]
struct RecordRef<'a> {
    partition_key: &'a str,
    sequence_number: &'a str,
    shard: &'a str,
    arrival_timestamp: Option<i64>,
    data: &'a [u8],
}

/// Appends `record` of `shard` to `out` as one frame; false if it was dropped (text that is not
/// UTF-8).
pub(super) fn append(format: KinesisFormat, shard: &str, record: &Fetched, out: &mut Vec<u8>) -> bool {
    match format {
        KinesisFormat::Text => match std::str::from_utf8(&record.data) {
            Ok(line) => encode_frame(out, line).is_ok(),
            Err(_) => false,
        },
        KinesisFormat::Record => {
            let record = RecordRef {
                partition_key: &record.partition_key,
                sequence_number: &record.sequence,
                shard,
                arrival_timestamp: record.arrival_ms,
                data: &record.data,
            };
            encode_frame(out, &record).is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_record_decodes_as_the_sdk_type() {
        let fetched = Fetched {
            sequence: "4968".into(),
            partition_key: "user-1".into(),
            arrival_ms: Some(1_700_000_000_000),
            data: b"\xffbytes".to_vec(),
        };
        let mut out = Vec::new();
        assert!(append(KinesisFormat::Record, "shardId-000000000001", &fetched, &mut out));
        assert!(!append(KinesisFormat::Text, "shardId-000000000001", &fetched, &mut Vec::new()));
        let sdk: sluice_sdk::KinesisRecord = postcard::from_bytes(&out[4..]).unwrap();
        assert_eq!(
            sdk,
            sluice_sdk::KinesisRecord {
                partition_key: "user-1".into(),
                sequence_number: "4968".into(),
                shard: "shardId-000000000001".into(),
                arrival_timestamp: Some(1_700_000_000_000),
                data: b"\xffbytes".to_vec(),
            }
        );
    }
}
