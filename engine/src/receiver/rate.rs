//! Receive rates: a fixed cap (`max_rate`) and backpressure (`[pipeline] backpressure = true`),
//! which adapts the cap after every batch with a PID estimator like Spark's
//! `PIDRateEstimator`, so a receiver takes in about what the batches can process.
//!
//! After batch `t` with `n` records of the source, processing time `p` and scheduling delay
//! `d` (ms), with `r` the rate set last time and `B` the batch interval:
//!
//! ```text
//! processing_rate = n / p × 1000                    records/s the batch was processed at
//! error           = r − processing_rate
//! historical      = d × processing_rate / B         records/s of backlog (the integral term)
//! d_error         = (error − last error) / seconds since the last update
//! new rate        = max(r − P·error − I·historical − D·d_error, MIN_RATE), capped by max_rate
//! ```
//!
//! with P = [`PROPORTIONAL`], I = [`INTEGRAL`], D = [`DERIVATIVE`] (Spark's defaults). The
//! first batch only measures (`r` := processing rate).

use std::time::{Duration, Instant};

/// Weight of the current error.
pub const PROPORTIONAL: f64 = 1.0;
/// Weight of the backlog (scheduling delay).
pub const INTEGRAL: f64 = 0.2;
/// Weight of the error's change.
pub const DERIVATIVE: f64 = 0.0;
/// The rate never goes below this, records/s.
pub const MIN_RATE: f64 = 100.0;

/// Spark's PID rate estimator for one receiver.
#[derive(Debug, Clone)]
pub struct PidEstimator {
    batch_interval_ms: f64,
    latest_time: Option<u64>,
    latest_rate: f64,
    latest_error: f64,
}

impl PidEstimator {
    /// An estimator for batches every `batch_interval`.
    pub fn new(batch_interval: Duration) -> Self {
        Self {
            batch_interval_ms: batch_interval.as_millis() as f64,
            latest_time: None,
            latest_rate: 0.0,
            latest_error: 0.0,
        }
    }

    /// Takes one batch's figures; returns the new rate (records/s), none on the first batch or
    /// when the batch tells nothing (no records, no processing time).
    pub fn compute(&mut self, time_ms: u64, records: u64, processing_ms: u64, scheduling_delay_ms: u64) -> Option<f64> {
        if records == 0 || processing_ms == 0 || self.latest_time.is_some_and(|t| time_ms <= t) {
            return None;
        }
        let processing_rate = records as f64 / processing_ms as f64 * 1000.0;
        let Some(latest_time) = self.latest_time.replace(time_ms) else {
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            return None;
        };
        let since = (time_ms - latest_time) as f64 / 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical = scheduling_delay_ms as f64 * processing_rate / self.batch_interval_ms;
        let d_error = (error - self.latest_error) / since;
        let rate =
            (self.latest_rate - PROPORTIONAL * error - INTEGRAL * historical - DERIVATIVE * d_error).max(MIN_RATE);
        self.latest_rate = rate;
        self.latest_error = error;
        Some(rate)
    }
}

/// Holds a reader to a rate: after taking `n` records, [`Throttle::wait`] says how long to
/// pause so that the average stays at or below the rate (bursts of up to 100 ms of records).
#[derive(Debug)]
pub struct Throttle {
    next: Instant,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { next: Instant::now() }
    }
}

impl Throttle {
    /// How long to wait after taking `records` at `rate` records/s.
    pub fn wait(&mut self, records: u64, rate: f64) -> Duration {
        let now = Instant::now();
        let earliest = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
        self.next = self.next.max(earliest) + Duration::from_secs_f64(records as f64 / rate.max(1.0));
        self.next.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_follows_what_the_batches_can_process_and_drops_with_a_backlog() {
        let mut pid = PidEstimator::new(Duration::from_secs(1));
        assert_eq!(pid.compute(1000, 10_000, 2000, 0), None, "the first batch only measures");
        // Processing 5k records/s, no backlog: the rate settles at 5k.
        let rate = pid.compute(2000, 10_000, 2000, 0).unwrap();
        assert!((rate - 5000.0).abs() < 1.0, "{rate}");
        // Same speed, but batches wait 3 s: the rate goes below the processing rate to drain.
        let rate = pid.compute(3000, 5000, 1000, 3000).unwrap();
        assert!(rate < 5000.0 * 0.5, "{rate}");
        assert!(rate >= MIN_RATE);
        assert_eq!(pid.compute(4000, 0, 0, 0), None, "an empty batch tells nothing");
    }

    #[test]
    fn the_throttle_spaces_records_at_the_rate() {
        let mut throttle = Throttle::default();
        let first = throttle.wait(1000, 1000.0);
        assert!(first > Duration::from_millis(850) && first <= Duration::from_secs(1), "{first:?}");
        let second = throttle.wait(1000, 1000.0);
        assert!(second > Duration::from_millis(1850), "{second:?}");
    }
}
