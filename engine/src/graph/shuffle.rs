//! A cluster's split of the graph at its keyed stage. A source partition's task runs the stages
//! before it and sends the keyed stage's input (for `reduce_by_key`, its map side's combined
//! output, as Spark combines before a shuffle) to the repartition topic
//! `<pipeline>-<stage>-repartition`, one record per key to the partition its key hashes to; a
//! task of a repartition partition runs the keyed stage and the stages after it, with that
//! partition's state. So every key's state lives with exactly one partition, and one owner.
//!
//! **Owns:** which stages run on which side, and what crosses. **Never touches:** the topic,
//! the state's storage.

use std::collections::BTreeSet;

use sluice_sdk::TypeDesc;

use super::{Graph, Operator, Stage};

/// See the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Shuffle {
    /// The keyed stage's index in [`Graph::stages`].
    pub(crate) stage: usize,
    /// `<pipeline>-<stage>-repartition`.
    pub(crate) topic: String,
    /// The key's type (records crossing are `(K, V)`).
    pub(crate) key: TypeDesc,
    /// The stream a source task sends.
    pub(crate) sent: usize,
    /// Whether the source tasks ran the keyed stage's map side (`reduce_by_key`): then what
    /// they send is no stream of theirs (no sink of theirs sees it).
    pub(crate) combined: bool,
    /// The stream a keyed task's records arrive as.
    pub(crate) received: usize,
    /// The keyed stage as a keyed task runs it (a `reduce_by_key` without its map side).
    pub(crate) keyed: Stage,
    /// Stages a source task runs, in order.
    pub(crate) before: Vec<usize>,
    /// Stages a keyed task runs after the keyed stage, in order.
    pub(crate) after: Vec<usize>,
}

/// Ops a cluster can shuffle for (one input, keyed, every key's work its own).
pub(crate) fn shuffles(operator: &Operator) -> Option<&TypeDesc> {
    match operator {
        Operator::ReduceByKey { key, .. }
        | Operator::GroupByKey { key }
        | Operator::UpdateStateByKey { key, .. }
        | Operator::MapWithState { key, .. } => Some(key),
        _ => None,
    }
}

impl Shuffle {
    /// The split of `graph` (of pipeline `pipeline`) at its keyed stage, if it has one; why it
    /// cannot be split otherwise (a stage after the keyed one reads a stream from before it).
    pub(crate) fn plan(graph: &Graph, pipeline: &str) -> Result<Option<Self>, String> {
        let Some(stage) = graph.stages.iter().position(|s| shuffles(&s.operator).is_some()) else { return Ok(None) };
        let keyed_stage = &graph.stages[stage];
        let key = shuffles(&keyed_stage.operator).expect("found above").clone();
        let mut downstream: BTreeSet<usize> = BTreeSet::from([keyed_stage.output]);
        let mut after = Vec::new();
        for (index, later) in graph.stages.iter().enumerate().skip(stage + 1) {
            let reads_keyed = later.inputs.iter().any(|i| downstream.contains(i));
            if !reads_keyed {
                continue;
            }
            if let Some(other) = later.inputs.iter().find(|i| !downstream.contains(i)) {
                return Err(format!(
                    "stage `{}` reads `{}` (after the shuffle of `{}`) and `{}` (before it): in a cluster a stage reads one side",
                    later.name, graph.streams[keyed_stage.output].name, keyed_stage.name, graph.streams[*other].name
                ));
            }
            downstream.insert(later.output);
            after.push(index);
        }
        let combined = matches!(keyed_stage.operator, Operator::ReduceByKey { .. });
        let mut keyed = keyed_stage.clone();
        let (sent, received) = match &mut keyed.operator {
            // The map side runs in the source tasks; the keyed task combines what they sent.
            Operator::ReduceByKey { fused, .. } => {
                let received = fused.take().map_or(keyed_stage.inputs[0], |pre| pre.output);
                keyed.inputs = vec![received];
                (keyed_stage.output, received)
            }
            _ => (keyed_stage.inputs[0], keyed_stage.inputs[0]),
        };
        let before = (0..graph.stages.len()).filter(|i| !after.contains(i) && (*i != stage || combined)).collect();
        let topic = format!("{pipeline}-{}-repartition", keyed_stage.name);
        Ok(Some(Self { stage, topic, key, sent, combined, received, keyed, before, after }))
    }
}
