//! Human durations in pipeline files: "1s", "200ms", "1m 30s", and the bounds they must keep.
//!
//! Bounds: the clock's intervals and plugin-call deadlines ([`MAX_INTERVAL`], 24h) and the spans
//! of windows, sessions, lateness and state timeouts ([`MAX_SPAN`], 365 days). Batch and event
//! times are `u64` ms since the Unix epoch (today ~1.8·10¹²); with these bounds a time plus any
//! configured duration stays far below `u64::MAX` (~1.8·10¹⁹), and the engine's time arithmetic
//! saturates besides, so no configuration or clock can make it wrap.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest `batch_interval`, `block_interval` and plugin-call `timeout`: 24h.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// [`MAX_INTERVAL`] as messages and docs spell it.
pub const MAX_INTERVAL_TEXT: &str = "24h";
/// The longest `window`, `slide`, `gap`, `allowed_lateness` and `state_timeout`: 365 days.
pub const MAX_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);
/// [`MAX_SPAN`] as messages and docs spell it.
pub const MAX_SPAN_TEXT: &str = "365d";

/// `duration` in whole ms, saturating at `u64::MAX` (a `Duration` can hold ~5.8·10¹¹ years; its
/// ms would not fit a `u64`, and `as u64` would wrap them).
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The first multiple of `step` (ms, at least 1) strictly after `time`, saturating at the last
/// multiple that fits a `u64`: batch boundaries and block ticks.
pub fn next_multiple(time: u64, step: u64) -> u64 {
    let step = step.max(1);
    (time / step).saturating_add(1).checked_mul(step).unwrap_or(u64::MAX / step * step)
}

/// Deserializes a human duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "invalid duration \"{}\" ({err}); expected e.g. \"1s\", \"200ms\", \"1m 30s\"",
            super::error::shorten(&text, 60)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_what_their_texts_say() {
        assert_eq!(humantime::parse_duration(MAX_INTERVAL_TEXT).unwrap(), MAX_INTERVAL);
        assert_eq!(humantime::parse_duration(MAX_SPAN_TEXT).unwrap(), MAX_SPAN);
    }

    #[test]
    fn a_configured_span_added_to_any_batch_time_of_the_next_millennia_fits() {
        let year_3000 = 32_503_680_000_000u64;
        assert!(year_3000.checked_add(millis(MAX_SPAN)).is_some());
        assert!(year_3000.checked_add(millis(MAX_INTERVAL)).is_some());
    }

    #[test]
    fn millis_and_next_multiple_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(next_multiple(0, 1000), 1000);
        assert_eq!(next_multiple(999, 1000), 1000);
        assert_eq!(next_multiple(1000, 1000), 2000);
        assert_eq!(next_multiple(5, 0), 6);
        let last = u64::MAX / 1000 * 1000;
        assert_eq!(next_multiple(u64::MAX - 1, 1000), last);
        assert_eq!(next_multiple(last, 1000), last);
    }
}
