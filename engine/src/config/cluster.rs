//! What a cluster (`[cluster]`, see `crate::cluster`) can run today: one Kafka source,
//! per-record and per-partition stages, one keyed stage (shuffled through a repartition topic,
//! `graph/shuffle.rs`), and sinks whose output is per partition. Checked with
//! the rest of the file, so every problem names its field.

use super::{PipelineConfig, StageOp};
use crate::cluster::ClusterConfig;
use crate::fields::ConfigError;
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;

/// Everything in the file a cluster cannot run, and `[cluster]`'s own problems.
pub(super) fn validate(config: &PipelineConfig, cluster: &ClusterConfig) -> Vec<ConfigError> {
    let mut errors = cluster.validate();
    if config.pipeline.checkpoint_dir.is_some() {
        errors.push(ConfigError::new(
            "pipeline.checkpoint_dir",
            "a cluster keeps its checkpoints in cluster.checkpoint_store: remove checkpoint_dir",
        ));
    }
    match config.sources.as_slice() {
        [SourceConfig::Kafka(kafka)] if kafka.group_id.is_some() => errors.push(ConfigError::new(
            format!("sources `{}`.group_id", kafka.name),
            "in a cluster the group is cluster.group_id: remove it here",
        )),
        [SourceConfig::Kafka(_)] => {}
        _ => errors.push(ConfigError::new(
            "sources",
            "a cluster reads one source, of type \"kafka\": its partitions are what the members share",
        )),
    }
    let mut keyed: Option<&str> = None;
    for stage in &config.stages {
        if per_partition(&stage.op) {
            continue;
        }
        let at = format!("stages `{}`.op", stage.name);
        match (shuffles(&stage.op), keyed) {
            (true, None) => keyed = Some(&stage.name),
            (true, Some(first)) => errors.push(ConfigError::new(
                at,
                format!(
                    "a cluster shuffles for one keyed stage (`{first}`, through its repartition topic); \
                     after it use per-partition ops (map, flat_map, filter, map_partitions)"
                ),
            )),
            (false, _) => errors.push(ConfigError::new(
                at,
                "works on all of a batch's records or on windows of batches, which a cluster cannot \
                 run yet; in a cluster use map, flat_map, filter, map_partitions, key_by, union, \
                 repartition, and one keyed stage: reduce_by_key, group_by_key, update_state_by_key \
                 or map_with_state",
            )),
        }
    }
    if let (Some(stage), Some(plugin)) = (keyed, config.capabilities.keys().next()) {
        // The shuffle takes each record once by its index in a source task's output, which must
        // be the same on every run of the task (`sources/kafka/shuffled.rs`).
        errors.push(ConfigError::new(
            format!("capabilities.{plugin}"),
            format!(
                "a cluster with a keyed stage (`{stage}`) needs each task's output to be the same on \
                 every run, which clocks or real random numbers break: no [capabilities] here"
            ),
        ));
    }
    if let (Some(stage), [SourceConfig::Kafka(kafka)]) = (keyed, config.sources.as_slice())
        && kafka.topic_pattern.is_some()
    {
        errors.push(ConfigError::new(
            format!("sources `{}`.topic_pattern", kafka.name),
            format!(
                "the keyed stage `{stage}` shuffles through a topic with one partition per source \
                 partition: name the source's topics (`topics`) so their count is known"
            ),
        ));
    }
    for sink in &config.sinks {
        if let SinkConfig::Kafka(kafka) = sink
            && kafka.delivery != crate::sinks::kafka::Delivery::AtLeastOnce
        {
            errors.push(ConfigError::new(
                format!("sinks `{}`.delivery", kafka.name),
                "in a cluster a Kafka sink writes at least once: set delivery = \"at_least_once\" (its \
                 transactions are per sink, and members would fence each other's)",
            ));
        }
        if let SinkConfig::Postgres(postgres) = sink
            && postgres.progress_table.is_none()
            && let (Ok(table), Ok(progress)) = (postgres.table(), postgres.progress(true))
            && table == progress
        {
            errors.push(ConfigError::new(
                format!("sinks `{}`.progress_table", postgres.name),
                format!("`{progress}` is where a cluster records its progress by default; name another progress_table"),
            ));
        }
    }
    errors
}

/// Whether a cluster can run a stage of this op on the far side of a shuffle by key.
fn shuffles(op: &StageOp) -> bool {
    matches!(op, StageOp::ReduceByKey | StageOp::GroupByKey | StageOp::UpdateStateByKey | StageOp::MapWithState(_))
}

/// Whether a stage's op works on each partition's records alone.
fn per_partition(op: &StageOp) -> bool {
    matches!(
        op,
        StageOp::Map
            | StageOp::FlatMap
            | StageOp::Filter
            | StageOp::MapPartitions
            | StageOp::KeyBy
            | StageOp::Union
            | StageOp::Repartition(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[pipeline]
name = "p"

[plugins]

[[sources]]
name = "lines"
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["lines"]

[[sinks]]
name = "out"
input = "lines"
type = "file"
path = "out"
"#;

    fn problems(cluster: &str, more: &str) -> Vec<String> {
        let config: PipelineConfig = toml::from_str(&format!("{BASE}{more}\n[cluster]\n{cluster}")).unwrap();
        let cluster = config.cluster.as_ref().expect("a [cluster] section");
        validate(&config, cluster).into_iter().map(|e| format!("{}: {}", e.location, e.message)).collect()
    }

    const GOOD: &str = "group_id = \"g\"\ncheckpoint_store = \"file:///tmp/store\"\n";

    #[test]
    fn a_kafka_source_with_per_partition_stages_and_file_sinks_runs_in_a_cluster() {
        assert!(problems(GOOD, "").is_empty(), "{:?}", problems(GOOD, ""));
        let s3 = "group_id = \"g\"\ncheckpoint_store = \"s3://bucket/prefix\"\n";
        assert!(problems(s3, "").is_empty());
    }

    #[test]
    fn what_a_cluster_cannot_run_is_refused_by_field() {
        let bad_store = problems("group_id = \"g\"\ncheckpoint_store = \"/tmp/store\"\n", "");
        assert!(bad_store[0].starts_with("cluster.checkpoint_store: not a URL"), "{bad_store:?}");
        let bad_scheme = problems("group_id = \"g\"\ncheckpoint_store = \"http://x/y\"\n", "");
        assert!(bad_scheme[0].contains("expected file:///absolute/directory or s3://bucket/prefix"), "{bad_scheme:?}");
        let keyed = problems(GOOD, "[[stages]]\nname = \"c\"\ninput = \"lines\"\nop = \"count_by_value\"\n");
        assert_eq!(keyed.len(), 1, "{keyed:?}");
        assert!(keyed[0].starts_with("stages `c`.op: works on all of a batch's records"), "{keyed:?}");
        let timeout = problems(&format!("{GOOD}session_timeout = \"10m\"\n"), "");
        assert_eq!(timeout, ["cluster.session_timeout: expected 1s to 5m"]);
        let empty = problems("group_id = \" \"\ncheckpoint_store = \"file:///tmp/s\"\n", "");
        assert_eq!(empty.len(), 1);
        assert!(empty[0].starts_with("cluster.group_id"));
    }

    #[test]
    fn a_cluster_shuffles_for_one_keyed_stage_of_named_topics() {
        let stage = |name: &str, input: &str, op: &str| {
            format!(
                "[[stages]]\nname = \"{name}\"\ninput = \"{input}\"\nop = \"{op}\"\nplugin = \"p\"\nfunction = \"f\"\n"
            )
        };
        let one = format!("{}{}", stage("pairs", "lines", "flat_map"), stage("totals", "pairs", "update_state_by_key"));
        assert!(problems(GOOD, &one).is_empty(), "{:?}", problems(GOOD, &one));
        let two = format!("{one}{}", stage("again", "totals", "reduce_by_key"));
        let found = problems(GOOD, &two);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("stages `again`.op: a cluster shuffles for one keyed stage (`totals`"),
            "{found:?}"
        );
        let pattern = BASE.replace("topics = [\"lines\"]", "topic_pattern = \"lines.*\"");
        let config: PipelineConfig = toml::from_str(&format!("{pattern}{one}\n[cluster]\n{GOOD}")).unwrap();
        let found = validate(&config, config.cluster.as_ref().unwrap());
        assert!(found.iter().any(|e| e.location == "sources `lines`.topic_pattern"), "{found:?}");
    }

    #[test]
    fn a_cluster_with_a_keyed_stage_gives_no_capabilities() {
        let keyed = "[[stages]]\nname = \"totals\"\ninput = \"lines\"\nop = \"reduce_by_key\"\nplugin = \"wc\"\nfunction = \"sum\"\n";
        assert_eq!(problems(GOOD, keyed), Vec::<String>::new());
        let found = problems(GOOD, &format!("[capabilities]\nwc = [\"clocks\"]\n{keyed}"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("capabilities.wc: a cluster with a keyed stage (`totals`)"), "{found:?}");
    }

    #[test]
    fn a_cluster_reads_one_kafka_source_and_keeps_no_checkpoint_dir() {
        let two = problems(GOOD, "[[sources]]\nname = \"more\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n");
        assert!(two.iter().any(|p| p.starts_with("sources: a cluster reads one source")), "{two:?}");
        let with_dir = BASE.replace("name = \"p\"", "name = \"p\"\ncheckpoint_dir = \"c\"");
        let config: PipelineConfig = toml::from_str(&format!("{with_dir}\n[cluster]\n{GOOD}")).unwrap();
        let found = validate(&config, config.cluster.as_ref().unwrap());
        assert!(found.iter().any(|e| e.location == "pipeline.checkpoint_dir"), "{found:?}");
    }

    #[test]
    fn a_kafka_sink_in_a_cluster_writes_at_least_once_and_says_so_otherwise() {
        let sink = |delivery: &str| {
            format!(
                "[[sinks]]\nname = \"k\"\ninput = \"lines\"\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"\n{delivery}\n"
            )
        };
        assert!(problems(GOOD, &sink("delivery = \"at_least_once\"")).is_empty());
        let auto = problems(GOOD, &sink(""));
        assert_eq!(auto.len(), 1, "{auto:?}");
        assert!(auto[0].starts_with("sinks `k`.delivery: in a cluster a Kafka sink writes at least once"), "{auto:?}");
    }

    #[test]
    fn a_postgres_sink_in_a_cluster_records_progress_per_partition() {
        let sink = |table: &str| {
            format!(
                "[[sinks]]\nname = \"pg\"\ninput = \"lines\"\ntype = \"postgres\"\nurl = \"postgres://x\"\ntable = \"{table}\"\n"
            )
        };
        assert!(problems(GOOD, &sink("counts")).is_empty(), "{:?}", problems(GOOD, &sink("counts")));
        let clash = problems(GOOD, &sink("sluice_partition_progress"));
        assert_eq!(clash.len(), 1, "{clash:?}");
        assert!(
            clash[0].starts_with("sinks `pg`.progress_table: `sluice_partition_progress` is where a cluster"),
            "{clash:?}"
        );
    }
}
