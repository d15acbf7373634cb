//! Human durations in pipeline files: "1s", "200ms", "1m 30s".

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a human duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "invalid duration \"{text}\" ({err}); expected e.g. \"1s\", \"200ms\", \"1m 30s\""
        ))
    })
}

/// `Option<Duration>` fields: absent, or a human duration string.
pub mod option {
    use std::time::Duration;

    use serde::Deserializer;

    /// Deserializes a present human duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(deserializer).map(Some)
    }
}
