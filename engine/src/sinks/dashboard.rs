//! The dashboard sink: shows the latest output of its stream on the dashboard page (`--ui`),
//! as a table or a bar chart, replaced every batch — e.g. the top words of a windowed word
//! count. It keeps only the latest batch's first `limit` rows (after sorting); nothing is
//! written anywhere else.
//!
//! Columns come from the stream's type: `key`, `value` for keyed records `(K, V)`, the field
//! names for structs, `value` otherwise. A bar chart plots the last numeric column per row,
//! labelled by the first.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::TypeDesc;

use super::{BatchRef, Sink, SinkError};
use crate::block::{Partition, records};
use crate::codec::render;
use crate::metrics::events::{Events, Results};

/// `chart`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chart {
    /// Rows and columns.
    #[default]
    Table,
    /// One bar per row.
    Bar,
}

/// `sort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Largest value first (the default for bar charts).
    Desc,
    /// Smallest value first.
    Asc,
    /// As the batch produced them (the default for tables).
    None,
}

/// `type = "dashboard"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSinkConfig {
    /// Unique name; the page's panel title.
    pub name: String,
    /// The stream to show (none for a stage's dead-letter sink).
    pub input: Option<String>,
    /// `table` (default) or `bar`.
    #[serde(default)]
    pub chart: Chart,
    /// Rows shown (default 20).
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Order of rows by their last numeric column: `desc` (default for bar charts), `asc`,
    /// `none` (default for tables).
    pub sort: Option<Sort>,
}

fn default_limit() -> usize {
    20
}

impl DashboardSinkConfig {
    /// The sink, publishing to `events`.
    pub fn build(&self, events: Arc<Events>) -> DashboardSink {
        DashboardSink { config: self.clone(), events }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct DashboardSink {
    config: DashboardSinkConfig,
    events: Arc<Events>,
}

/// The number a row is sorted and charted by: its last numeric column.
fn measure(row: &[Value]) -> Option<f64> {
    row.iter().rev().find_map(Value::as_f64)
}

impl Sink for DashboardSink {
    /// Publishes the batch's first `limit` rows (after sorting).
    fn write(&mut self, batch: BatchRef<'_>, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        let batch_time_ms = batch.time_ms;
        let total: u64 = partitions.iter().map(|p| p.records).sum();
        let columns: Vec<String> = match ty {
            TypeDesc::Tuple(items) if items.len() == 2 => vec!["key".into(), "value".into()],
            TypeDesc::Struct { fields, .. } if !fields.is_empty() => {
                fields.iter().map(|(name, _)| name.clone()).collect()
            }
            _ => vec!["value".into()],
        };
        // Cells in column order (a JSON object's keys come back sorted, not in field order).
        let split = |value: Value| -> Vec<Value> {
            match (ty, value) {
                (TypeDesc::Tuple(items), Value::Array(cells)) if items.len() == 2 => cells,
                (TypeDesc::Struct { fields, .. }, Value::Object(mut map)) if !fields.is_empty() => {
                    fields.iter().map(|(name, _)| map.remove(name).unwrap_or(Value::Null)).collect()
                }
                (_, other) => vec![other],
            }
        };
        let mut json = String::new();
        let mut rows: Vec<Vec<Value>> = records(partitions)
            .map(|record| {
                json.clear();
                render(ty, record, &mut json);
                split(serde_json::from_str(&json).unwrap_or(Value::Null))
            })
            .collect();
        let sort = self.config.sort.unwrap_or(if self.config.chart == Chart::Bar { Sort::Desc } else { Sort::None });
        let by = |a: &Vec<Value>, b: &Vec<Value>| {
            measure(a)
                .partial_cmp(&measure(b))
                .unwrap_or(Ordering::Equal)
                .then_with(|| a.first().map(Value::to_string).cmp(&b.first().map(Value::to_string)))
        };
        match sort {
            Sort::Desc => rows.sort_by(|a, b| by(b, a)),
            Sort::Asc => rows.sort_by(by),
            Sort::None => {}
        }
        rows.truncate(self.config.limit);
        let shown = rows.len() as u64;
        self.events.results(Results {
            sink: self.config.name.clone(),
            chart: match self.config.chart {
                Chart::Table => "table".into(),
                Chart::Bar => "bar".into(),
            },
            batch_ms: batch_time_ms,
            columns,
            rows,
            total,
        });
        Ok(shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_rows_follow_the_field_order_and_bars_sort_by_the_last_number() {
        #[derive(serde::Serialize)]
        struct Word {
            word: String,
            count: u64,
            avg_len: f64,
        }
        let ty = TypeDesc::Struct {
            name: "Word".into(),
            fields: vec![
                ("word".into(), TypeDesc::String),
                ("count".into(), TypeDesc::Unsigned(64)),
                ("avg_len".into(), TypeDesc::F64),
            ],
        };
        let mut part = Partition::default();
        for (word, count, avg_len) in [("b", 2, 1.5), ("a", 9, 0.5), ("c", 5, 3.5)] {
            let record = Word { word: word.into(), count, avg_len };
            crate::codec::write_frame(&mut part.data, &record).unwrap();
            part.records += 1;
        }
        let events = Arc::new(Events::default());
        let config =
            DashboardSinkConfig { name: "w".into(), input: Some("x".into()), chart: Chart::Bar, limit: 2, sort: None };
        let batch = BatchRef { time_ms: 1000, replayed: false, task: None, versions: &[] };
        let shown = config.build(events.clone()).write(batch, &ty, &[part]).unwrap();
        assert_eq!(shown, 2);
        let results = &events.history().results["w"];
        assert_eq!(results.columns, ["word", "count", "avg_len"]);
        assert_eq!(results.total, 3);
        // Sorted by the last number (avg_len), descending; `limit` keeps two.
        assert_eq!(results.rows[0], [Value::from("c"), Value::from(5), Value::from(3.5)]);
        assert_eq!(results.rows[1], [Value::from("b"), Value::from(2), Value::from(1.5)]);
    }
}
