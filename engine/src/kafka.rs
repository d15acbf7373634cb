//! What the Kafka source and the Kafka sink share: turning `brokers` and a `[.properties]` table
//! into a librdkafka client configuration, and the rule for which properties are the
//! component's own (set from its fields, so refused in `properties`); and, for a cluster's
//! shuffle, the `sluice-at` header both sides read and the repartition topic's creation. Each
//! component owns the rest of its life-cycle in `sources/kafka/` and `sinks/kafka.rs`.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;

use crate::fields::ConfigError;
use crate::receiver::Receiver;

/// librdkafka's log lines and client errors (a broker down, all brokers down) go to `tracing`,
/// naming the component; a source's errors also land on its receiver row. A consumer that is a
/// group member hands its rebalances to `rebalance`.
#[derive(Clone)]
pub(crate) struct KafkaLog {
    /// `source` or `sink`.
    pub(crate) kind: &'static str,
    /// The component's name.
    pub(crate) name: String,
    /// A source's receiver.
    pub(crate) receiver: Option<std::sync::Arc<Receiver>>,
    /// A group member's rebalance hook.
    pub(crate) rebalance: Option<std::sync::Arc<dyn Rebalance>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog").field("kind", &self.kind).field("name", &self.name).finish_non_exhaustive()
    }
}

/// What a group member does when the group gives it partitions or takes them away.
pub(crate) trait Rebalance: Send + Sync {
    /// Partitions assigned: set each one's starting offset in `partitions` before it is read.
    fn assign(&self, partitions: &mut TopicPartitionList);
    /// Partitions revoked (or lost): stop reading them.
    fn revoke(&self, partitions: &TopicPartitionList);
}

impl rdkafka::ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let (kind, name) = (self.kind, &self.name);
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(kind, name, "librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(kind, name, "librdkafka {facility}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(kind, name, "librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::trace!(kind, name, "librdkafka {facility}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let problem = format!("kafka: {error}: {reason}");
        tracing::warn!(kind = self.kind, name = %self.name, "{problem}");
        if let Some(receiver) = &self.receiver {
            receiver.set_error(problem);
        }
    }
}

impl ConsumerContext for KafkaLog {
    /// librdkafka's own rebalance steps (incremental for a cooperative assignor), with the
    /// member's hook first: offsets set before an assignment, reading stopped before a revoke.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, partitions: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let done = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(hook) = &self.rebalance {
                    hook.assign(partitions);
                }
                if cooperative { consumer.incremental_assign(partitions) } else { consumer.assign(partitions) }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Some(hook) = &self.rebalance {
                    hook.revoke(partitions);
                }
                if cooperative { consumer.incremental_unassign(partitions) } else { consumer.unassign() }
            }
            other => {
                tracing::warn!(kind = self.kind, name = %self.name, "kafka: rebalance failed: {other:?}");
                if let Some(hook) = &self.rebalance {
                    hook.revoke(partitions);
                }
                consumer.unassign()
            }
        };
        if let Err(err) = done {
            tracing::warn!(kind = self.kind, name = %self.name, "kafka: cannot take the group's new assignment: {err}");
        }
    }
}

/// How long a metadata or offset request to the brokers may take before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A client configuration: `bootstrap.servers`, the user's `properties` (TLS, SASL and any other
/// librdkafka property pass through), then the component's own settings.
pub(crate) fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    own: &[(&str, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    // librdkafka's own log lines go through `tracing` at their level.
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    for (key, value) in properties {
        config.set(key, value);
    }
    for (key, value) in own {
        config.set(*key, value);
    }
    config
}

/// Checks `brokers` and `properties` of component `at` (`sources `x`` or `sinks `x``):
/// `brokers` is not empty, no property sets what a field or the component decides (`owned`,
/// with the field that decides it), and librdkafka knows every property and accepts its value
/// (it refuses unknown ones by name).
pub(crate) fn validate_client<C: rdkafka::config::FromClientConfig>(
    at: &str,
    brokers: &str,
    properties: &BTreeMap<String, String>,
    owned: &[(&str, &str)],
    errors: &mut Vec<ConfigError>,
) {
    if brokers.trim().is_empty() {
        errors.push(ConfigError::new(
            format!("{at}.brokers"),
            "expected a comma-separated list of host:port, e.g. \"127.0.0.1:9092\"",
        ));
    }
    let mut clean = true;
    for (key, decided_by) in owned {
        if properties.contains_key(*key) {
            clean = false;
            errors.push(ConfigError::new(
                format!("{at}.properties.{key}"),
                format!("set by {decided_by}, not in `properties`"),
            ));
        }
    }
    if clean && !brokers.trim().is_empty() {
        // Creating a client checks every property by name and value, and connects lazily.
        if let Err(err) = client_config(brokers, properties, &[]).create::<C>() {
            errors.push(ConfigError::new(format!("{at}.properties"), format!("librdkafka refuses them: {err}")));
        }
    }
}

/// The `sluice-at` header of record `index` of a task's output of batch `batch` on a cluster's
/// repartition topic: both big-endian, so the bytes order as `(batch, index)` does.
pub(crate) fn shuffle_at(batch: u64, index: u64) -> [u8; 16] {
    let mut at = [0; 16];
    at[..8].copy_from_slice(&batch.to_be_bytes());
    at[8..].copy_from_slice(&index.to_be_bytes());
    at
}

/// `(batch, index)` of a `sluice-at` header.
pub(crate) fn shuffle_at_parts(at: [u8; 16]) -> (u64, u64) {
    let (batch, index) = at.split_at(8);
    (u64::from_be_bytes(batch.try_into().expect("8 bytes")), u64::from_be_bytes(index.try_into().expect("8 bytes")))
}

/// Creates topic `name` with `partitions` partitions unless it exists; an existing one must have
/// that many (a shuffle's keys would go elsewhere otherwise). Replication: the brokers' default.
pub(crate) fn ensure_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    name: &str,
    partitions: i32,
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, properties, &[])
        .create()
        .map_err(|err| format!("cannot make an admin client: {err}"))?;
    let consumer: BaseConsumer = client_config(brokers, properties, &[]).create().map_err(|err| err.to_string())?;
    let existing = |consumer: &BaseConsumer| -> Result<Option<usize>, String> {
        let metadata = consumer.fetch_metadata(Some(name), REQUEST_TIMEOUT).map_err(|err| err.to_string())?;
        Ok(metadata.topics().iter().find(|t| t.name() == name && t.error().is_none()).map(|t| t.partitions().len()))
    };
    if existing(&consumer)?.is_none_or(|found| found == 0) {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        // On a thread of its own: the caller may be inside the I/O runtime's context.
        let created = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    runtime
                        .map_err(|err| err.to_string())?
                        .block_on(admin.create_topics([&topic], &options))
                        .map_err(|err| err.to_string())
                })
                .join()
                .unwrap_or_else(|_| Err("the topic's creation panicked".to_string()))
        })
        .map_err(|err| format!("cannot create topic `{name}`: {err}"))?;
        for result in created {
            match result {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(format!("cannot create topic `{name}`: {code}")),
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match existing(&consumer)? {
            Some(found) if found == partitions as usize => return Ok(()),
            Some(found) if found > 0 => {
                return Err(format!(
                    "topic `{name}` has {found} partitions; this pipeline's shuffle needs {partitions} (one per source \
                     partition): delete it, or give the source topic as many"
                ));
            }
            _ if std::time::Instant::now() > deadline => {
                return Err(format!("topic `{name}` was created but its partitions do not show within 30 s"));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}
