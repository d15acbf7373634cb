//! When a batch closes. Batch times are multiples of the interval on the wall clock, as Spark's
//! are, and strictly increasing across runs; but the wall clock may be stepped (NTP, an
//! operator, a VM resumed). Stepped forward: the batch under way closes at the next cut and
//! batch times go on from the new time (the times skipped held no records). Stepped back:
//! batches still close every interval by the monotonic clock, their times going on from the
//! last one (ahead of the wall clock until it catches up), so a step back neither stalls the
//! pipeline nor reuses a batch time. Either step is logged once, when it is seen.
//!
//! **Owns:** this rule. **Never touches:** cutting blocks and emitting batches (`mod.rs`).

use std::time::{Duration, Instant};

use crate::fields::next_multiple;

/// The batch under way and when it closes.
#[derive(Debug)]
pub(super) struct Cadence {
    batch_ms: u64,
    /// The time of the batch under way.
    boundary: u64,
    /// By the monotonic clock, when the batch under way is due.
    due: Instant,
    /// How long past `due` the monotonic clock waits for the wall clock's own tick: a block.
    slack: Duration,
    /// The last cut, on both clocks: a step shows as a gap between their advances.
    last: (u64, Instant),
}

impl Cadence {
    /// At wall time `wall` (ms), monotonic `mono`: the first batch, after `after` (the last
    /// batch of an earlier run).
    pub(super) fn new(wall: u64, mono: Instant, batch_ms: u64, block_ms: u64, after: u64) -> Self {
        let next = next_multiple(wall, batch_ms);
        Self {
            batch_ms,
            boundary: next.max(next_multiple(after, batch_ms)),
            due: mono + Duration::from_millis(next - wall),
            slack: Duration::from_millis(block_ms),
            last: (wall, mono),
        }
    }

    /// The time of the batch under way.
    pub(super) fn boundary(&self) -> u64 {
        self.boundary
    }

    /// Whether the cut at wall tick `tick` (monotonic `mono`) closes the batch under way.
    pub(super) fn closes(&mut self, tick: u64, mono: Instant) -> bool {
        self.notice_step(tick, mono);
        tick >= self.boundary || mono >= self.due + self.slack
    }

    /// The batch under way closed at the cut at wall tick `tick`, monotonic `mono`.
    pub(super) fn advance(&mut self, tick: u64, mono: Instant) {
        let next_wall = next_multiple(tick, self.batch_ms);
        if tick >= self.boundary {
            // On the wall clock's time: the next multiple after it.
            self.boundary = next_wall;
            self.due = mono + Duration::from_millis(next_wall - tick);
        } else {
            // The wall clock is behind the batch times: one interval on.
            self.boundary = self.boundary.saturating_add(self.batch_ms);
            self.due += Duration::from_millis(self.batch_ms);
        }
    }

    /// Logs a step of the wall clock: its advance since the last cut differs from the
    /// monotonic clock's by more than an interval.
    fn notice_step(&mut self, tick: u64, mono: Instant) {
        let (wall_then, mono_then) = std::mem::replace(&mut self.last, (tick, mono));
        let mono_ms = i128::try_from(mono.duration_since(mono_then).as_millis()).unwrap_or(i128::MAX);
        let step = i128::from(tick) - i128::from(wall_then) - mono_ms;
        if step.unsigned_abs() > u128::from(self.batch_ms) {
            let (way, then) = match step > 0 {
                true => ("forward", "the batch under way closes and batch times go on from the new time"),
                false => ("back", "batches go on every interval, their times ahead of the clock until it catches up"),
            };
            tracing::warn!(step_ms = step as i64, "the wall clock stepped {way} by {} ms: {then}", step.unsigned_abs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs cuts every `block` ms of monotonic time, the wall clock at `wall(i)` for cut `i`;
    /// returns the batch times closed.
    fn batches(cuts: usize, block: u64, batch: u64, after: u64, wall: impl Fn(usize) -> u64) -> Vec<u64> {
        let start = Instant::now();
        let mut cadence = Cadence::new(wall(0), start, batch, block, after);
        let mut closed = Vec::new();
        for i in 1..=cuts {
            let mono = start + Duration::from_millis(block * i as u64);
            let tick = wall(i);
            if cadence.closes(tick, mono) {
                closed.push(cadence.boundary());
                cadence.advance(tick, mono);
            }
        }
        closed
    }

    #[test]
    fn on_a_steady_clock_every_interval_closes_one_batch_at_its_multiple() {
        let closed = batches(20, 100, 500, 0, |i| 10_000 + 100 * i as u64);
        assert_eq!(closed, vec![10_500, 11_000, 11_500, 12_000]);
    }

    #[test]
    fn a_step_back_neither_stalls_batches_nor_reuses_a_time() {
        // An hour back after the second batch.
        let wall = |i: usize| 10_000_000 + 100 * i as u64 - if i > 10 { 3_600_000 } else { 0 };
        let closed = batches(40, 100, 500, 0, wall);
        assert!(closed.windows(2).all(|w| w[1] > w[0]), "{closed:?}");
        // Two on the clock's time, then one every interval (the first a block late: the wall
        // clock's tick is waited for that long).
        assert_eq!(closed.len(), 7, "one batch per interval of real time: {closed:?}");
        assert_eq!(closed.windows(2).map(|w| w[1] - w[0]).max(), Some(500), "{closed:?}");
    }

    #[test]
    fn a_step_forward_closes_the_batch_under_way_and_moves_on_with_the_clock() {
        let wall = |i: usize| 10_000_000 + 100 * i as u64 + if i > 12 { 3_600_000 } else { 0 };
        let closed = batches(30, 100, 500, 0, wall);
        assert!(closed.windows(2).all(|w| w[1] > w[0]), "{closed:?}");
        assert!(closed.contains(&10_001_500) && closed.iter().any(|&t| t > 13_600_000), "{closed:?}");
        assert_eq!(closed.len(), 7, "{closed:?}");
    }

    #[test]
    fn batch_times_of_an_earlier_run_ahead_of_the_clock_are_not_reused_nor_waited_for() {
        // The last run's batches went 10 s past this run's clock (it ran with the clock ahead).
        let closed = batches(20, 100, 500, 10_010_000, |i| 10_000_000 + 100 * i as u64);
        assert_eq!(closed.first(), Some(&10_010_500), "{closed:?}");
        assert_eq!(closed, vec![10_010_500, 10_011_000, 10_011_500], "one per interval from the first");
    }
}
