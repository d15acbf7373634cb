//! Click events `user millis page`, for event-time session windows and `map_with_state`.
//!
//! - `parse` (flat_map): a line → `(user, millis)`; lines that do not parse are dropped.
//! - `click_time` (timestamp): the click's event time.
//! - `kinesis_user` (key_by): a Kinesis record's partition key (a source with
//!   `format = "record"`).
//! - `user_of` (key_by): the first word of a line.
//! - `kafka_user` (key_by): a Kafka record's key (a source with `format = "record"`) as text.
//! - `flume_user` (key_by): a Flume event's `user` header (a source with `format = "record"`).
//! - `visits` (map_with_state): counts a user's clicks; emits `(user, clicks)` when the user has
//!   been idle for the stage's timeout.

/// `user millis page` → `(user, millis)`.
#[sluice_sdk::flat_map]
pub fn parse(line: &str) -> Option<(String, u64)> {
    let mut parts = line.split_whitespace();
    let user = parts.next()?;
    let millis = parts.next()?.parse().ok()?;
    Some((user.to_string(), millis))
}

/// The event time of a click: its `millis`.
#[sluice_sdk::timestamp]
pub fn click_time(click: (String, u64)) -> u64 {
    click.1
}

/// A Kafka record's key as text: the user of a click read with `format = "record"`.
#[sluice_sdk::key_by]
pub fn kafka_user(record: sluice_sdk::KafkaRecord) -> String {
    record.key.map(|key| String::from_utf8_lossy(&key).into_owned()).unwrap_or_default()
}

/// A Kinesis record's partition key: the user of a click read with `format = "record"`.
#[sluice_sdk::key_by]
pub fn kinesis_user(record: sluice_sdk::KinesisRecord) -> String {
    record.partition_key
}

/// A Flume event's `user` header: the user of a click read with `format = "record"`.
#[sluice_sdk::key_by]
pub fn flume_user(event: sluice_sdk::FlumeRecord) -> String {
    event.header("user").unwrap_or_default().to_string()
}

/// The first word of a line: the user.
#[sluice_sdk::key_by]
pub fn user_of(line: &str) -> String {
    line.split_whitespace().next().unwrap_or_default().to_string()
}

/// Counts a user's clicks; when the user times out (no clicks), emits `(user, total)`.
#[sluice_sdk::map_with_state]
pub fn visits(user: String, clicks: Vec<u64>, total: Option<u64>) -> (Option<u64>, Vec<(String, u64)>) {
    let total = total.unwrap_or(0);
    if clicks.is_empty() {
        return (None, vec![(user, total)]);
    }
    (Some(total + clicks.len() as u64), Vec::new())
}
