//! Reading a partition from an offset inside a record batch. A Kafka broker answers a fetch from
//! offset `x` with the batch that holds `x`, and the client skips the records before `x`; tansu
//! 0.6 answers with the batches that *start* at or after `x`, so the rest of the batch holding
//! `x` would never be read (a new owner starting where the last one stopped, a replay, a restart
//! from a checkpoint). So a partition positioned at `x` is probed: while the first record read
//! is past `x`, the partition is read again from further back (`x - 1024`, then twice as far
//! each time; the records before `x` are dropped as re-read ones are), until a record at or
//! before `x` comes — the batch holding `x` was read — or the start of the partition was tried,
//! when the records before the first one read do not exist (compacted away, a transaction
//! marker). On a broker that answers with the holding batch, the first record is never past
//! `x` without such a reason: the probe costs nothing there.
//!
//! **Owns:** the rule. **Never touches:** the consumer (its callers seek, `source.rs`).

/// How far back the first look goes.
const FIRST_STEP: i64 = 1024;

/// A partition positioned at an offset, until its first record shows the batch holding it
/// was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Probe {
    /// The offset wanted.
    at: i64,
    /// How far back the next look goes.
    back: i64,
    /// The last look started at the partition's first possible offset.
    from_start: bool,
}

/// What to do with the first record read since the partition was positioned (or looked back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// It is at or before the offset wanted: read on (the probe is over).
    ReadOn,
    /// Nothing was skipped that exists: read on (the probe is over).
    NothingBefore,
    /// Drop it and read the partition again from this offset.
    Back(i64),
}

impl Probe {
    /// A probe of a partition positioned at `at`; None at its start (nothing can be skipped).
    pub(super) fn at(at: i64) -> Option<Self> {
        (at > 0).then_some(Self { at, back: FIRST_STEP, from_start: false })
    }

    /// The step for the first record read, at `offset` (nothing changes until the partition
    /// is read again: [`Probe::looked_back`]).
    pub(super) fn first(&self, offset: i64) -> Step {
        if offset <= self.at {
            Step::ReadOn
        } else if self.from_start {
            Step::NothingBefore
        } else {
            Step::Back((self.at - self.back).max(0))
        }
    }

    /// The partition is read again from `from` (what [`Step::Back`] said, raised to the
    /// partition's first offset `start` where that is later): the next look goes twice as far.
    pub(super) fn looked_back(&mut self, from: i64, start: i64) {
        self.from_start = from <= start;
        self.back = self.back.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_record_at_or_before_the_offset_ends_the_probe() {
        assert_eq!(Probe::at(0), None);
        let probe = Probe::at(5_000).unwrap();
        assert_eq!(probe.first(5_000), Step::ReadOn);
        assert_eq!(probe.first(4_000), Step::ReadOn);
    }

    #[test]
    fn a_skipped_batch_is_looked_for_further_back_each_time_down_to_the_start() {
        let mut probe = Probe::at(5_000).unwrap();
        for from in [3_976, 2_952, 904, 0] {
            assert_eq!(probe.first(5_300), Step::Back(from));
            assert_eq!(probe.first(5_300), Step::Back(from), "nothing changes until it is read again");
            probe.looked_back(from, 0);
        }
        assert_eq!(probe.first(5_300), Step::NothingBefore);
        let mut found = Probe::at(5_000).unwrap();
        assert_eq!(found.first(5_300), Step::Back(3_976));
        found.looked_back(3_976, 0);
        assert_eq!(found.first(4_100), Step::ReadOn, "the batch holding 5000 starts at 4100");
    }

    #[test]
    fn a_look_from_the_partitions_first_offset_is_the_last() {
        let mut probe = Probe::at(5_000).unwrap();
        // Offsets below 4500 are gone (retention): the look from there is the last one.
        probe.looked_back(4_500, 4_500);
        assert_eq!(probe.first(5_300), Step::NothingBefore);
    }
}
