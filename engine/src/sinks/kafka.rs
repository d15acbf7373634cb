//! The Kafka sink: `type = "kafka"`. Owns its config, its producer, its delivery guarantee and
//! how a record becomes a Kafka record; never touches sources or the checkpoint.
//!
//! - A keyed record `(K, V)` becomes key K and value V, anything else a value without a key;
//!   each part rendered as JSON (`format = "json"`, as the file sink does) or, with
//!   `format = "raw"`, strings and byte strings as their bytes (other types still JSON).
//! - Every record carries the headers `sluice-sink` (`<pipeline>/<sink>`) and `sluice-batch`
//!   (the batch time, ms).
//! - **Exactly once** (`delivery = "exactly_once"`, or `"auto"` when the brokers support
//!   transactions): one transaction per batch, committed in [`Sink::commit`]; the transactional
//!   id is `sluice.<pipeline>.<sink>`, so a restarted engine fences the old one (aborting its
//!   open transaction). At start the sink reads the tail of the topic as a `read_committed`
//!   consumer to find the last batch it committed; a replayed batch at or before it is not
//!   written again, so a `read_committed` consumer sees every batch once.
//! - **At least once** (`delivery = "at_least_once"`, or `"auto"` when the brokers answer that
//!   transactions are not supported, as tansu 0.6 does): the idempotent producer, every record
//!   delivered before the batch commits; a replayed batch appears again.
//!
//! `sluice check` asks the brokers (an empty transaction that commits an offset of a probe
//! group) and prints which of the two a path gets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use sluice_sdk::TypeDesc;

use super::{BatchRef, Sink, SinkError, SinkGuarantee};
use crate::block::{Partition, records};
use crate::codec::{read_varint, render, skip_value};
use crate::fields::ConfigError;
use crate::kafka::{REQUEST_TIMEOUT, client_config};

/// How long a transaction's commit, or the delivery of a batch, may take.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Records read back per partition at first when looking for the last committed batch.
const TAIL_WINDOW: i64 = 10_000;

/// `type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Unique name.
    pub name: String,
    /// The stream to write (none for a stage's dead-letter sink).
    pub input: Option<String>,
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to write (it must exist).
    pub topic: String,
    /// How keys and values are rendered.
    #[serde(default)]
    pub format: KafkaSinkFormat,
    /// `exactly_once`, `at_least_once`, or `auto` (exactly once where the brokers support
    /// transactions).
    #[serde(default)]
    pub delivery: Delivery,
    /// More librdkafka producer properties (TLS, SASL, batching, compression), passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `format` of a Kafka sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaSinkFormat {
    /// Key and value as JSON.
    #[default]
    Json,
    /// Strings and byte strings as their bytes; other types as JSON.
    Raw,
}

/// `delivery`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Exactly once where the brokers support transactions, else at least once.
    #[default]
    Auto,
    /// Transactions; the sink does not start without them.
    ExactlyOnce,
    /// The idempotent producer.
    AtLeastOnce,
}

const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "`brokers`"),
    ("transactional.id", "the sink (sluice.<pipeline>.<sink>)"),
    ("enable.idempotence", "the sink"),
];

impl KafkaSinkConfig {
    /// Every problem with this sink's fields.
    pub(crate) fn validate(&self) -> Vec<ConfigError> {
        let at = format!("sinks `{}`", self.name);
        let mut errors = Vec::new();
        if self.topic.trim().is_empty() {
            errors.push(ConfigError::new(format!("{at}.topic"), "expected the name of an existing topic"));
        }
        crate::kafka::validate_client::<rdkafka::producer::BaseProducer>(
            &at,
            &self.brokers,
            &self.properties,
            OWNED,
            &mut errors,
        );
        errors
    }

    /// The transactional id of this sink in pipeline `pipeline`.
    fn transactional_id(&self, pipeline: &str) -> String {
        format!("sluice.{pipeline}.{}", self.name)
    }

    /// What the sink declares before asking the brokers.
    pub(crate) const fn guarantee(&self) -> SinkGuarantee {
        match self.delivery {
            Delivery::AtLeastOnce => SinkGuarantee::AtLeastOnce,
            Delivery::Auto | Delivery::ExactlyOnce => SinkGuarantee::Transactional,
        }
    }

    /// What the sink will be, after asking the brokers whether they support transactions (for
    /// `auto`), and why if it is less than declared.
    pub(crate) fn probe(&self, pipeline: &str) -> (SinkGuarantee, Option<String>) {
        if self.delivery == Delivery::AtLeastOnce {
            return (SinkGuarantee::AtLeastOnce, None);
        }
        match probe_transactions(self, &format!("{}.check", self.transactional_id(pipeline))) {
            Ok(()) => (SinkGuarantee::Transactional, None),
            Err(why) => (SinkGuarantee::AtLeastOnce, Some(why.to_string())),
        }
    }

    /// The sink, in pipeline `pipeline`.
    pub(crate) fn build(&self, pipeline: &str) -> KafkaSink {
        KafkaSink {
            config: self.clone(),
            sink_id: format!("{pipeline}/{}", self.name),
            transactional_id: self.transactional_id(pipeline),
            producer: None,
            transactional: false,
            committed_through: None,
            staged: None,
        }
    }
}

/// Counts delivery failures of the records of the batch being written.
#[derive(Debug, Default)]
struct Deliveries {
    failed: Mutex<(u64, Option<String>)>,
}

#[derive(Clone, Debug)]
pub(super) struct Context(Arc<Deliveries>, crate::kafka::KafkaLog);

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.1.log(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.1.error(error, reason);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            let mut failed = self.0.failed.lock().expect("deliveries lock");
            failed.0 += 1;
            failed.1.get_or_insert_with(|| err.to_string());
        }
    }
}

/// One record to send: key (if keyed) and value, rendered.
type Staged = (Option<Vec<u8>>, Vec<u8>);

/// See the module docs.
pub(crate) struct KafkaSink {
    config: KafkaSinkConfig,
    sink_id: String,
    transactional_id: String,
    producer: Option<ThreadedProducer<Context>>,
    transactional: bool,
    /// The last batch committed by an earlier run, found at open.
    committed_through: Option<u64>,
    /// The batch written and not yet committed: its time and records (key, value).
    staged: Option<(u64, Vec<Staged>)>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("sink", &self.sink_id).field("transactional", &self.transactional).finish()
    }
}

fn kafka(err: impl std::fmt::Display) -> SinkError {
    SinkError::Kafka(err.to_string())
}

/// A producer of this sink's settings; transactional with `id`.
fn producer(config: &KafkaSinkConfig, id: Option<&str>) -> Result<ThreadedProducer<Context>, SinkError> {
    let own: Vec<(&str, String)> = id.map(|id| ("transactional.id", id.to_string())).into_iter().collect();
    idempotent_producer(&config.name, &config.brokers, &config.properties, &own)
}

/// Sends one record, waiting (up to the commit timeout) while librdkafka's queue is full.
pub(super) fn send(
    producer: &ThreadedProducer<Context>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), SinkError> {
    let deadline = Instant::now() + COMMIT_TIMEOUT;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back))
                if Instant::now() < deadline =>
            {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((err, _)) => return Err(kafka(err)),
        }
    }
}

/// Forgets the delivery failures of records sent before (a write about to start).
pub(super) fn reset_deliveries(producer: &ThreadedProducer<Context>) {
    *producer.context().0.failed.lock().expect("deliveries lock") = (0, None);
}

/// Flushes `producer` and answers whether every record sent since the last call was delivered.
pub(super) fn delivered(producer: &ThreadedProducer<Context>, what: &str) -> Result<(), SinkError> {
    producer.flush(COMMIT_TIMEOUT).map_err(kafka)?;
    let (failed, first) = std::mem::take(&mut *producer.context().0.failed.lock().expect("deliveries lock"));
    match first {
        Some(first) => Err(kafka(format!("{failed} records of {what} were not delivered: {first}"))),
        None => Ok(()),
    }
}

/// A producer of the idempotent kind for `brokers` with `properties`, and `own` settings.
pub(super) fn idempotent_producer(
    name: &str,
    brokers: &str,
    properties: &BTreeMap<String, String>,
    own: &[(&str, String)],
) -> Result<ThreadedProducer<Context>, SinkError> {
    let mut settings = vec![("enable.idempotence", "true".to_string())];
    settings.extend(own.iter().cloned());
    let log = crate::kafka::KafkaLog { kind: "sink", name: name.to_string(), receiver: None, rebalance: None };
    client_config(brokers, properties, &settings).create_with_context(Context(Arc::default(), log)).map_err(kafka)
}

/// Why the brokers take no transaction (`delivery = "auto"` then writes at least once).
#[derive(Debug, thiserror::Error)]
enum NoTransactions {
    /// No producer could be made.
    #[error(transparent)]
    Producer(SinkError),
    /// The brokers refused to initialise transactions.
    #[error("the brokers refuse transactions: {0}")]
    Refused(#[source] KafkaError),
    /// No consumer could be made for the probe group.
    #[error("{0}")]
    Consumer(#[source] KafkaError),
    /// The probe consumer has no group metadata.
    #[error("no consumer group metadata")]
    NoGroupMetadata,
    /// The probe transaction failed.
    #[error("the brokers do not support transactions: {0}")]
    Unsupported(#[source] KafkaError),
}

/// Whether the brokers take a transaction: one that commits an offset of a probe group (so
/// nothing is written to the topic) under transactional id `id`.
fn probe_transactions(config: &KafkaSinkConfig, id: &str) -> Result<(), NoTransactions> {
    let producer = producer(config, Some(id)).map_err(NoTransactions::Producer)?;
    producer.init_transactions(REQUEST_TIMEOUT).map_err(NoTransactions::Refused)?;
    let group = format!("{id}.probe");
    let consumer: BaseConsumer = client_config(&config.brokers, &config.properties, &[("group.id", group)])
        .create()
        .map_err(NoTransactions::Consumer)?;
    let metadata = consumer.group_metadata().ok_or(NoTransactions::NoGroupMetadata)?;
    let mut offsets = TopicPartitionList::new();
    let _ = offsets.add_partition_offset(&config.topic, 0, Offset::Offset(0));
    producer.begin_transaction().map_err(NoTransactions::Unsupported)?;
    producer.send_offsets_to_transaction(&offsets, &metadata, REQUEST_TIMEOUT).map_err(NoTransactions::Unsupported)?;
    producer.commit_transaction(REQUEST_TIMEOUT).map_err(NoTransactions::Unsupported)
}

impl KafkaSink {
    /// The last batch this sink committed to the topic, read back as a `read_committed`
    /// consumer from the end of each partition.
    fn last_committed_batch(&self) -> Result<Option<u64>, SinkError> {
        let consumer: BaseConsumer = client_config(
            &self.config.brokers,
            &self.config.properties,
            &[
                ("group.id", format!("{}.recovery", self.transactional_id)),
                ("isolation.level", "read_committed".into()),
                ("enable.auto.commit", "false".into()),
                ("enable.partition.eof", "true".into()),
            ],
        )
        .create()
        .map_err(kafka)?;
        let metadata = consumer.fetch_metadata(Some(&self.config.topic), REQUEST_TIMEOUT).map_err(kafka)?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut last = None;
        for partition in partitions {
            let (low, high) =
                consumer.fetch_watermarks(&self.config.topic, partition, REQUEST_TIMEOUT).map_err(kafka)?;
            let mut window = TAIL_WINDOW;
            loop {
                let from = (high - window).max(low);
                let found = self.last_batch_in(&consumer, partition, from)?;
                if found.is_some() || from == low {
                    last = last.max(found);
                    break;
                }
                window = window.saturating_mul(10);
            }
        }
        Ok(last)
    }

    /// The newest `sluice-batch` header of this sink in `partition` from offset `from` on.
    fn last_batch_in(&self, consumer: &BaseConsumer, partition: i32, from: i64) -> Result<Option<u64>, SinkError> {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(from));
        consumer.assign(&tpl).map_err(kafka)?;
        let mut last = None;
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(err)) => return Err(kafka(err)),
                None => {}
                Some(Ok(message)) => {
                    let Some(headers) = message.headers() else { continue };
                    let mine =
                        headers.iter().any(|h| h.key == "sluice-sink" && h.value == Some(self.sink_id.as_bytes()));
                    let batch = headers
                        .iter()
                        .find(|h| h.key == "sluice-batch")
                        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok());
                    if mine && batch.is_some() {
                        last = last.max(batch);
                    }
                }
            }
        }
        Ok(last)
    }

    /// Sends every staged record, waiting while librdkafka's queue is full.
    fn send_all(&self, producer: &ThreadedProducer<Context>, time: u64, staged: &[Staged]) -> Result<(), SinkError> {
        let batch = time.to_string();
        for (key, value) in staged {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "sluice-sink", value: Some(self.sink_id.as_bytes()) })
                .insert(Header { key: "sluice-batch", value: Some(batch.as_bytes()) });
            let mut record = BaseRecord::to(&self.config.topic).payload(value.as_slice()).headers(headers);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            send(producer, record)?;
        }
        Ok(())
    }

    /// One transaction with the batch's records; aborted if anything fails.
    fn commit_transaction(
        &self,
        producer: &ThreadedProducer<Context>,
        time: u64,
        staged: &[Staged],
    ) -> Result<(), SinkError> {
        producer.begin_transaction().map_err(kafka)?;
        let written = self
            .send_all(producer, time, staged)
            .and_then(|()| producer.commit_transaction(COMMIT_TIMEOUT).map_err(kafka));
        if let Err(err) = written {
            if let Err(abort) = producer.abort_transaction(COMMIT_TIMEOUT) {
                tracing::warn!(sink = %self.config.name, "cannot abort the transaction of batch {time}: {abort}");
            }
            return Err(err);
        }
        Ok(())
    }

    /// Every record delivered (idempotent producer), or the first delivery error.
    fn deliver(&self, producer: &ThreadedProducer<Context>, time: u64, staged: &[Staged]) -> Result<(), SinkError> {
        *producer.context().0.failed.lock().expect("deliveries lock") = (0, None);
        self.send_all(producer, time, staged)?;
        delivered(producer, &format!("batch {time}"))
    }
}

impl Sink for KafkaSink {
    fn open(&mut self) -> Result<(), SinkError> {
        let transactional = match self.config.delivery {
            Delivery::AtLeastOnce => false,
            Delivery::ExactlyOnce => true,
            Delivery::Auto => match probe_transactions(&self.config, &format!("{}.probe", self.transactional_id)) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(sink = %self.config.name, "{why}: writing with the idempotent producer, at least once");
                    false
                }
            },
        };
        let producer = if transactional {
            let producer = producer(&self.config, Some(&self.transactional_id))?;
            // Fences an older engine's producer and aborts its open transaction.
            producer.init_transactions(COMMIT_TIMEOUT).map_err(kafka)?;
            self.committed_through = self.last_committed_batch()?;
            if let Some(batch) = self.committed_through {
                tracing::info!(sink = %self.config.name, "the topic holds batches through {batch}: replays of those are skipped");
            }
            producer
        } else {
            producer(&self.config, None)?
        };
        self.transactional = transactional;
        self.producer = Some(producer);
        Ok(())
    }

    fn write(&mut self, batch: BatchRef<'_>, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        let format = self.config.format;
        let pair = ty.as_pair();
        let mut staged = Vec::new();
        for record in records(partitions) {
            staged.push(match pair {
                Some((k, v)) => {
                    let split = skip_value(k, record).unwrap_or(record.len());
                    (Some(encode(format, k, &record[..split])), encode(format, v, &record[split..]))
                }
                None => (None, encode(format, ty, record)),
            });
        }
        let written = staged.len() as u64;
        self.staged = Some((batch.time_ms, staged));
        Ok(written)
    }

    fn commit(&mut self, batch: BatchRef<'_>) -> Result<(), SinkError> {
        if self.producer.is_none() {
            self.open()?;
        }
        let Some((time, staged)) = self.staged.take_if(|(time, _)| *time == batch.time_ms) else { return Ok(()) };
        if self.transactional && self.committed_through.is_some_and(|through| time <= through) {
            tracing::info!(sink = %self.config.name, "batch {time} is already in the topic: not written again");
            return Ok(());
        }
        let producer = self.producer.as_ref().expect("opened");
        let result = if staged.is_empty() {
            Ok(())
        } else if self.transactional {
            self.commit_transaction(producer, time, &staged)
        } else {
            self.deliver(producer, time, &staged)
        };
        if let Err(err) = result {
            // A retry writes the whole batch again, with a fresh producer if this one failed.
            self.staged = Some((time, staged));
            self.producer = None;
            return Err(err);
        }
        Ok(())
    }
}

/// One part of a record as Kafka bytes.
fn encode(format: KafkaSinkFormat, ty: &TypeDesc, bytes: &[u8]) -> Vec<u8> {
    if format == KafkaSinkFormat::Raw
        && let Some(raw) = raw(ty, bytes)
    {
        return raw.to_vec();
    }
    let mut json = String::new();
    render(ty, bytes, &mut json);
    json.into_bytes()
}

/// A string's or byte string's bytes.
fn raw<'a>(ty: &TypeDesc, bytes: &'a [u8]) -> Option<&'a [u8]> {
    let is_bytes = matches!(ty, TypeDesc::String | TypeDesc::Bytes)
        || matches!(ty, TypeDesc::Seq(item) if **item == TypeDesc::Unsigned(8));
    if !is_bytes {
        return None;
    }
    let mut pos = 0;
    let len = usize::try_from(read_varint(bytes, &mut pos)?).ok()?;
    bytes.get(pos..pos.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_takes_strings_and_bytes_and_json_the_rest() {
        let word = postcard::to_allocvec("héllo").unwrap();
        assert_eq!(encode(KafkaSinkFormat::Raw, &TypeDesc::String, &word), "héllo".as_bytes());
        assert_eq!(encode(KafkaSinkFormat::Json, &TypeDesc::String, &word), "\"héllo\"".as_bytes());
        let bytes = postcard::to_allocvec(&vec![1u8, 2, 255]).unwrap();
        assert_eq!(encode(KafkaSinkFormat::Raw, &TypeDesc::Seq(Box::new(TypeDesc::Unsigned(8))), &bytes), [1, 2, 255]);
        let n = postcard::to_allocvec(&42u64).unwrap();
        assert_eq!(encode(KafkaSinkFormat::Raw, &TypeDesc::Unsigned(64), &n), b"42");
    }
}
