//! What a Flume event becomes in a block: with `format = "text"` its body as a line (a postcard
//! `String`, the frame a socket line is; a body that is not UTF-8 is dropped and counted as
//! invalid), with `format = "record"` the whole event, encoded exactly as the SDK's
//! [`sluice_sdk::FlumeRecord`] decodes it (borrowed here, nothing copied twice).

use serde::Serialize;
use sluice_sdk::abi::encode_frame;

use super::FlumeFormat;
use super::protocol::ThriftFlumeEvent;
use crate::receiver::PendingBlock;

/// The header Flume's timestamp interceptor sets: ms since the Unix epoch, as decimal text.
pub(crate) const TIMESTAMP_HEADER: &str = "timestamp";

/// [`sluice_sdk::FlumeRecord`], borrowed from the decoded event.
#[derive(Serialize)]
struct RecordRef<'a> {
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    timestamp: Option<i64>,
}

/// Appends every event to `block` as one frame each (counting records and invalid ones).
pub(crate) fn append(format: FlumeFormat, events: &[ThriftFlumeEvent], block: &mut PendingBlock) {
    for event in events {
        if append_one(format, event, &mut block.data) {
            block.records += 1;
        } else {
            block.invalid += 1;
        }
    }
}

/// Appends one event; false if it was dropped (a text body that is not UTF-8).
fn append_one(format: FlumeFormat, event: &ThriftFlumeEvent, out: &mut Vec<u8>) -> bool {
    match format {
        FlumeFormat::Text => match std::str::from_utf8(&event.body) {
            Ok(line) => encode_frame(out, line).is_ok(),
            Err(_) => false,
        },
        FlumeFormat::Record => {
            // A `BTreeMap`: the headers come sorted by name.
            let headers = event.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let timestamp = event.headers.get(TIMESTAMP_HEADER).and_then(|t| t.trim().parse().ok());
            encode_frame(out, &RecordRef { headers, body: &event.body, timestamp }).is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::abi::Frames;

    fn event(headers: &[(&str, &str)], body: &[u8]) -> ThriftFlumeEvent {
        ThriftFlumeEvent::new(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body.to_vec())
    }

    #[test]
    fn a_record_decodes_as_the_sdks_flume_record_with_its_timestamp_header() {
        let mut block = PendingBlock::default();
        let events = [event(&[("timestamp", "1700000000123"), ("host", "a")], b"\xffbody"), event(&[], b"x")];
        append(FlumeFormat::Record, &events, &mut block);
        let records: Vec<sluice_sdk::FlumeRecord> =
            Frames::new(&block.data).map(|f| postcard::from_bytes(f).unwrap()).collect();
        assert_eq!(records[0].headers, [("host".into(), "a".into()), ("timestamp".into(), "1700000000123".into())]);
        assert_eq!(records[0].body, b"\xffbody");
        assert_eq!(records[0].timestamp, Some(1_700_000_000_123));
        assert_eq!(records[0].header("host"), Some("a"));
        assert_eq!(records[1].timestamp, None);
        assert_eq!(block.records, 2);
    }

    #[test]
    fn a_text_body_is_a_line_and_one_that_is_not_utf8_is_counted_invalid() {
        let mut block = PendingBlock::default();
        append(FlumeFormat::Text, &[event(&[], b"to be"), event(&[], b"\xff")], &mut block);
        let lines: Vec<String> = Frames::new(&block.data).map(|f| postcard::from_bytes(f).unwrap()).collect();
        assert_eq!(lines, ["to be"]);
        assert_eq!((block.records, block.invalid), (1, 1));
    }
}
