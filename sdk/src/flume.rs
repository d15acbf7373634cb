//! The record a Flume source with `format = "record"` emits.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{Describe, TypeDesc};

/// One Flume event, as a source with `format = "record"` hands it to a plugin: its headers and
/// body, and its `timestamp` header read as a number. Take it as the input of a function:
///
/// ```
/// #[sluice_sdk::map]
/// fn host(event: sluice_sdk::FlumeRecord) -> String {
///     event.header("host").unwrap_or("unknown").to_string()
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlumeRecord {
    /// The event's headers, name and value, sorted by name (a Flume event's headers are a map).
    pub headers: Vec<(String, String)>,
    /// The event's body.
    pub body: Vec<u8>,
    /// The `timestamp` header (ms since the Unix epoch, as Flume's timestamp interceptor sets
    /// it), if there is one and it is a number: the event time of `time_field = "timestamp"`.
    pub timestamp: Option<i64>,
}

impl FlumeRecord {
    /// The value of header `name`, if the event has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        let at = self.headers.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
        Some(self.headers[at].1.as_str())
    }
}

impl Describe for FlumeRecord {
    fn describe() -> TypeDesc {
        TypeDesc::Struct {
            name: "FlumeRecord".into(),
            fields: alloc::vec![
                ("headers".into(), <Vec<(String, String)>>::describe()),
                ("body".into(), <Vec<u8>>::describe()),
                ("timestamp".into(), <Option<i64>>::describe()),
            ],
        }
    }
}
