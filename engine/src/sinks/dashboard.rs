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

use super::SinkError;
use super::render::render;
use crate::graph::{Partition, records};
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
    /// The stream to show.
    #[serde(default)]
    pub input: String,
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

/// Turns a record's JSON into the row's cells.
type SplitRow = fn(Value) -> Vec<Value>;

/// The number a row is sorted and charted by: its last numeric column.
fn measure(row: &[Value]) -> Option<f64> {
    row.iter().rev().find_map(Value::as_f64)
}

impl DashboardSink {
    /// Publishes the batch's first `limit` rows (after sorting).
    pub fn write(&mut self, batch_time_ms: u64, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        let total: u64 = partitions.iter().map(|p| p.records).sum();
        let (columns, split): (Vec<String>, SplitRow) = match ty {
            TypeDesc::Tuple(items) if items.len() == 2 => (vec!["key".into(), "value".into()], |v| match v {
                Value::Array(items) => items,
                other => vec![other],
            }),
            TypeDesc::Struct { fields, .. } => (fields.iter().map(|(name, _)| name.clone()).collect(), |v| match v {
                Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
                other => vec![other],
            }),
            _ => (vec!["value".into()], |v| vec![v]),
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
                .then_with(|| a[0].to_string().cmp(&b[0].to_string()))
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
