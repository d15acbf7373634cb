//! Partition discovery: a thread that asks the brokers for the partitions of the source's
//! topics every `discovery_interval`, with back-off while they cannot be reached or a topic does
//! not exist yet, and reports either on the receiver row. The source assigns what it finds at
//! its next cut.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::TopicPartition;
use crate::kafka::{KafkaLog, REQUEST_TIMEOUT};
use crate::receiver::Receiver;

/// Back-off after a failed look, doubling up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Which topics a source reads.
#[derive(Clone, Debug)]
pub(super) enum Topics {
    /// These, by name.
    Named(Vec<String>),
    /// Every topic whose whole name matches.
    Pattern(regex::Regex),
}

/// What discovery found so far.
#[derive(Debug, Default)]
pub(super) struct Discovered {
    /// Every partition of the source's topics.
    pub(super) partitions: BTreeSet<TopicPartition>,
    /// How many looks succeeded (0: none yet).
    pub(super) looks: u64,
    /// Each partition's end (high watermark) at the last look.
    pub(super) ends: std::collections::BTreeMap<TopicPartition, i64>,
}

/// Starts the discovery thread; it ends when `stop` turns true.
pub(super) fn spawn(
    consumer: Arc<BaseConsumer<KafkaLog>>,
    topics: Topics,
    brokers: String,
    interval: Duration,
    receiver: Arc<Receiver>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Arc<Mutex<Discovered>> {
    let found = Arc::new(Mutex::new(Discovered::default()));
    let shared = found.clone();
    std::thread::Builder::new()
        .name(format!("kafka-discover-{}", receiver.name))
        .spawn(move || {
            let mut delay = RETRY_MIN;
            while !*stop.borrow() {
                let looked = look(&consumer, &topics).map(|(partitions, missing)| {
                    let ends = ends(&consumer, &partitions);
                    let mut found = shared.lock().expect("discovery lock");
                    found.partitions.extend(partitions);
                    found.ends.extend(ends);
                    found.looks += 1;
                    missing
                });
                let wait = match looked {
                    Ok(None) => {
                        receiver.clear_error();
                        delay = RETRY_MIN;
                        interval
                    }
                    Ok(Some(problem)) | Err(problem) => {
                        let problem = format!("{problem} (brokers `{brokers}`); retrying in {delay:?}");
                        tracing::warn!(source = %receiver.name, "{problem}");
                        receiver.set_error(problem);
                        let wait = delay;
                        delay = (delay * 2).min(RETRY_MAX);
                        wait
                    }
                };
                let until = Instant::now() + wait;
                while Instant::now() < until && !*stop.borrow() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .expect("spawn a thread");
    found
}

/// The end of each partition (for the lag), as far as the brokers answer.
fn ends(consumer: &BaseConsumer<KafkaLog>, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
    partitions
        .iter()
        .filter_map(|tp| {
            let (_, high) = consumer.fetch_watermarks(&tp.topic, tp.partition, REQUEST_TIMEOUT).ok()?;
            Some((tp.clone(), high))
        })
        .collect()
}

/// The partitions of `topics` now and, if a named topic is missing, which; or why they cannot be
/// known.
fn look(consumer: &BaseConsumer<KafkaLog>, topics: &Topics) -> Result<(Vec<TopicPartition>, Option<String>), String> {
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(|err| format!("cannot fetch the topics' metadata: {err}"))?;
    let wanted = |name: &str| match topics {
        Topics::Named(names) => names.iter().any(|n| n == name),
        Topics::Pattern(pattern) => pattern.find(name).is_some_and(|m| m.start() == 0 && m.end() == name.len()),
    };
    let mut partitions = Vec::new();
    let mut seen = BTreeSet::new();
    for topic in metadata.topics().iter().filter(|t| wanted(t.name())) {
        if topic.error().is_some() || topic.partitions().is_empty() {
            continue;
        }
        seen.insert(topic.name().to_string());
        partitions.extend(
            topic.partitions().iter().map(|p| TopicPartition { topic: topic.name().to_string(), partition: p.id() }),
        );
    }
    if let Topics::Named(names) = topics {
        let missing: Vec<&str> = names.iter().filter(|n| !seen.contains(*n)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Ok((partitions, Some(format!("topic `{}` does not exist (yet)", missing.join("`, `")))));
        }
    }
    Ok((partitions, None))
}
