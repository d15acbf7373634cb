//! Reading a cluster's repartition topic (`<pipeline>-<stage>-repartition`, written by
//! `sinks/shuffle.rs`) exactly once, without Kafka transactions.
//!
//! Every record there carries where it came from: `sluice-from` (the source task, `<topic>-<p>`)
//! and `sluice-at` (that task's batch time and the record's index in its output, 8 + 8 bytes
//! big-endian). A task's output is the same on every run (the same records, the same plugin
//! versions, sorted before indexing), so a replayed or zombie task sends the same records under
//! the same indices. Each writer sends a task's records in index order, and a task's output is
//! flushed before its partition's next task is written by anyone. So, per origin, the first
//! arrival of every `(batch, index)` is larger than everything seen from that origin before:
//! **a record is taken iff its `(batch, index)` is past the last one taken from its origin**,
//! and every copy after the first is dropped.
//!
//! The table of the last `(batch, index)` per origin is part of each log entry of a repartition
//! partition (the table after the entry), so a replay of an entry starts from the entry
//! before's table and drops exactly what the first run dropped.
//!
//! **Owns:** the tagged frame a repartition record becomes in a block, and the drop rule.
//! **Never touches:** the store, the consumer.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::codec::push_frame;

/// Per origin (`<topic>-<partition>` of a source task): the last `(batch, index)` taken.
pub(crate) type Table = crate::cluster::store::Shuffled;

/// A repartition record with its origin, as a frame of a block until [`take_new`] unwraps it.
#[derive(Debug, Serialize, Deserialize)]
struct Tagged<'a> {
    from: &'a str,
    batch: u64,
    index: u64,
    record: &'a [u8],
}

/// Appends a repartition record to `out` as a tagged frame; false if it has no origin headers
/// (not written by a member: dropped and counted as invalid).
pub(crate) fn append(message: &BorrowedMessage<'_>, out: &mut Vec<u8>) -> bool {
    let (Some(headers), Some(record)) = (message.headers(), message.payload()) else { return false };
    let mut from = None;
    let mut at = None;
    for header in headers.iter() {
        match header.key {
            "sluice-from" => from = header.value.and_then(|v| std::str::from_utf8(v).ok()),
            "sluice-at" => at = header.value.and_then(|v| <[u8; 16]>::try_from(v).ok()),
            _ => {}
        }
    }
    let (Some(from), Some(at)) = (from, at) else { return false };
    let (batch, index) = crate::kafka::shuffle_at_parts(at);
    sluice_sdk::abi::encode_frame(out, &Tagged { from, batch, index, record }).is_ok()
}

/// What [`take_new`] made of a block of tagged frames.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The records taken, as plain frames.
    pub(crate) data: Vec<u8>,
    /// How many.
    pub(crate) records: u64,
    /// Copies dropped (sent again by a replay or a zombie).
    pub(crate) duplicates: u64,
}

/// Unwraps the tagged frames of `data`, taking each record whose `(batch, index)` is past
/// `table`'s for its origin (and moving `table` on), dropping the others.
pub(crate) fn take_new(table: &mut Table, data: &[u8]) -> Taken {
    let mut taken = Taken::default();
    for frame in sluice_sdk::abi::Frames::new(data) {
        let Ok(tagged) = postcard::from_bytes::<Tagged<'_>>(frame) else {
            taken.duplicates += 1; // written here a moment ago: cannot happen
            continue;
        };
        let at = (tagged.batch, tagged.index);
        if table.get(tagged.from).is_some_and(|last| at <= *last) {
            taken.duplicates += 1;
            continue;
        }
        table.insert(tagged.from.to_string(), at);
        push_frame(&mut taken.data, tagged.record);
        taken.records += 1;
    }
    taken
}

/// A repartition partition's blocks of one entry as one block of the records taken from
/// `table` on (None: none left), and the table after them.
pub(crate) fn take_blocks<'a>(table: &Table, blocks: impl Iterator<Item = &'a Block>) -> (Option<Block>, Table) {
    let mut after = table.clone();
    let mut first: Option<(usize, u64)> = None;
    let mut all = Taken::default();
    for block in blocks {
        first.get_or_insert((block.source, block.seq));
        let taken = take_new(&mut after, &block.data);
        all.data.extend_from_slice(&taken.data);
        all.records += taken.records;
        all.duplicates += taken.duplicates;
    }
    if all.duplicates > 0 {
        tracing::info!(
            records = all.records,
            duplicates = all.duplicates,
            "repartition records sent again (a replay or a fenced member) dropped"
        );
    }
    let block = first.filter(|_| all.records > 0).map(|(source, seq)| Block {
        source,
        seq,
        records: all.records,
        invalid: 0,
        data: all.data,
        task: None,
    });
    (block, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(records: &[(&str, u64, u64, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (from, batch, index, record) in records {
            let bytes = postcard::to_allocvec(record).unwrap();
            sluice_sdk::abi::encode_frame(&mut out, &Tagged { from, batch: *batch, index: *index, record: &bytes })
                .unwrap();
        }
        out
    }

    fn strings(taken: &Taken) -> Vec<String> {
        sluice_sdk::abi::Frames::new(&taken.data).map(|f| postcard::from_bytes::<String>(f).unwrap()).collect()
    }

    #[test]
    fn a_replay_interleaved_with_the_first_run_is_taken_once() {
        // A zombie sent 0..=2 of batch 10 and died; the new owner sends all of 0..=4, and the
        // zombie's last record lands in between.
        let data = block(&[
            ("t-0", 10, 0, "a"),
            ("t-0", 10, 1, "b"),
            ("t-0", 10, 0, "a"),
            ("t-0", 10, 1, "b"),
            ("t-0", 10, 2, "c"),
            ("t-0", 10, 2, "c"),
            ("t-0", 10, 3, "d"),
            ("t-1", 10, 0, "x"),
            ("t-0", 10, 4, "e"),
            ("t-0", 20, 0, "f"),
            ("t-0", 10, 4, "e"),
        ]);
        let mut table = Table::new();
        let taken = take_new(&mut table, &data);
        assert_eq!(strings(&taken), ["a", "b", "c", "d", "x", "e", "f"]);
        assert_eq!(taken.duplicates, 4);
        assert_eq!(table.get("t-0"), Some(&(20, 0)));
        assert_eq!(table.get("t-1"), Some(&(10, 0)));
    }

    #[test]
    fn a_replayed_entry_from_the_table_before_it_drops_what_the_first_run_dropped() {
        let first = block(&[("t-0", 10, 0, "a"), ("t-0", 10, 1, "b")]);
        let second = block(&[("t-0", 10, 1, "b"), ("t-0", 20, 0, "c")]);
        let mut table = Table::new();
        take_new(&mut table, &first);
        let before = table.clone();
        let run = take_new(&mut table, &second);
        let mut again = before.clone();
        let replay = take_new(&mut again, &second);
        assert_eq!(run, replay);
        assert_eq!(strings(&run), ["c"]);
        assert_eq!(again, table);
    }
}
