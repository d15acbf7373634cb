//! What the Kafka source and the Kafka sink share: turning `brokers` and a `[.properties]` table
//! into a librdkafka client configuration, and the rule for which properties are the
//! component's own (set from its fields, so refused in `properties`). Each component owns the
//! rest of its life-cycle in `sources/kafka/` and `sinks/kafka.rs`.

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
