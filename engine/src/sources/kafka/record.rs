//! What a Kafka record becomes in a block: with `format = "text"` its value as a line (a
//! postcard `String`, the same frame a socket line is), with `format = "record"` the whole
//! record, encoded exactly as the SDK's [`sluice_sdk::KafkaRecord`] decodes it (borrowed here,
//! so nothing is copied twice).

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use serde::Serialize;
use sluice_sdk::abi::encode_frame;

use super::KafkaFormat;

/// [`sluice_sdk::KafkaRecord`], borrowed from librdkafka's message.
#[derive(Serialize)]
struct RecordRef<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Appends `message` to `out` as one frame; false if it was dropped (text that is missing or
/// not UTF-8).
pub(crate) fn append(format: KafkaFormat, message: &BorrowedMessage<'_>, out: &mut Vec<u8>) -> bool {
    match format {
        KafkaFormat::Text => match message.payload().map(std::str::from_utf8) {
            Some(Ok(line)) => encode_frame(out, line).is_ok(),
            _ => false,
        },
        KafkaFormat::Record => {
            let headers =
                message.headers().map(|headers| headers.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
            let record = RecordRef {
                key: message.key(),
                value: message.payload(),
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis(),
                headers,
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
        let record = RecordRef {
            key: Some(b"k"),
            value: None,
            topic: "events",
            partition: 3,
            offset: 1 << 40,
            timestamp: Some(-5),
            headers: vec![("h", Some(b"v")), ("none", None)],
        };
        let bytes = postcard::to_allocvec(&record).unwrap();
        let sdk: sluice_sdk::KafkaRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(sdk.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(sdk.value, None);
        assert_eq!((sdk.topic.as_str(), sdk.partition, sdk.offset, sdk.timestamp), ("events", 3, 1 << 40, Some(-5)));
        assert_eq!(sdk.headers, vec![("h".to_string(), Some(b"v".to_vec())), ("none".to_string(), None)]);
    }
}
