//! The write side of a cluster's shuffle: a source task's records for the keyed stage go to the
//! repartition topic (`<pipeline>-<stage>-repartition`), each under its key, so librdkafka's
//! `murmur2_random` partitioner (Kafka's Java default, the same on every member) sends every
//! record of one key to one partition; the member that owns that partition runs the keyed
//! stage for it.
//!
//! Each record carries `sluice-from` (the task) and `sluice-at` (its batch time and its index in
//! the task's output). The output is sorted by its bytes before it is indexed, so a task run
//! again (a replay, a zombie) sends the same records under the same indices, whatever the blocks
//! were cut like; the reading side (`sources/kafka/shuffled.rs`) takes each once. Written with
//! the idempotent producer and flushed before the task's sinks commit: a task whose entry is
//! marked done has all of its records in the topic.
//!
//! **Owns:** its producer and the records' key, headers and order. **Never touches:** the topic's
//! creation (the Kafka source's, which reads it), the checkpoint store.

use std::collections::BTreeMap;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use sluice_sdk::TypeDesc;

use super::SinkError;
use super::kafka::{Context, delivered, idempotent_producer, reset_deliveries, send};
use crate::block::{Partition, records};
use crate::codec::skip_value;

/// See the module docs.
pub struct ShuffleWriter {
    topic: String,
    /// The key's type: a record is `(K, V)` and its key the first `skip_value(K)` bytes.
    key: TypeDesc,
    producer: ThreadedProducer<Context>,
}

impl std::fmt::Debug for ShuffleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleWriter").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl ShuffleWriter {
    /// A writer to `topic` on the source's brokers (with its client `properties`).
    pub(crate) fn new(
        topic: &str,
        key: TypeDesc,
        brokers: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self, SinkError> {
        // Gapless: a record that fails while a later one of its partition lands would be a hole
        // the reading side's rule (`sources/kafka/shuffled.rs`) never fills; librdkafka raises
        // a fatal error instead, the write fails, and the task is sent again whole.
        let own = [
            ("partitioner", "murmur2_random".to_string()),
            ("acks", "all".to_string()),
            ("enable.gapless.guarantee", "true".to_string()),
        ];
        let producer = idempotent_producer(topic, brokers, properties, &own)?;
        Ok(Self { topic: topic.to_string(), key, producer })
    }

    /// The repartition topic.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends task `from`'s output of batch `batch` and waits until all of it is delivered.
    /// Returns the records sent.
    pub(crate) fn write(&self, from: &str, batch: u64, partitions: &[Partition]) -> Result<u64, SinkError> {
        reset_deliveries(&self.producer);
        let mut output: Vec<&[u8]> = records(partitions).collect();
        output.sort_unstable();
        for (index, record) in output.iter().enumerate() {
            let at = crate::kafka::shuffle_at(batch, index as u64);
            let headers = OwnedHeaders::new()
                .insert(Header { key: "sluice-from", value: Some(from.as_bytes()) })
                .insert(Header { key: "sluice-at", value: Some(&at[..]) });
            let key_len = skip_value(&self.key, record).ok_or_else(|| {
                SinkError::Kafka(format!("a record of `{}` has no key of type {}", self.topic, self.key))
            })?;
            let message = BaseRecord::to(&self.topic).key(&record[..key_len]).payload(*record).headers(headers);
            send(&self.producer, message)?;
        }
        delivered(&self.producer, &format!("batch {batch} of {from} for `{}`", self.topic))?;
        Ok(output.len() as u64)
    }
}
