//! The print sink: the first `num` records of each batch on standard output, in the layout of
//! Spark's `DStream.print()`.

use std::io::Write;

use serde::Deserialize;
use sluice_sdk::TypeDesc;

use super::render::render;
use super::{BatchRef, Sink, SinkError};
use crate::graph::{Partition, records};

/// `type = "print"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrintSinkConfig {
    /// Unique name.
    pub name: String,
    /// The stream to print (none for a stage's dead-letter sink).
    pub input: Option<String>,
    /// How many records of each batch to print (default 10).
    #[serde(default = "default_num")]
    pub num: usize,
}

fn default_num() -> usize {
    10
}

impl PrintSinkConfig {
    /// The sink.
    pub fn build(&self) -> PrintSink {
        PrintSink { num: self.num }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct PrintSink {
    num: usize,
}

impl Sink for PrintSink {
    /// Prints the batch header and up to `num` records, then `...` if there were more.
    fn write(&mut self, batch: BatchRef, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        let batch_time_ms = batch.time_ms;
        let mut text = format!(
            "-------------------------------------------\nTime: {batch_time_ms} ms\n-------------------------------------------\n"
        );
        let total: u64 = partitions.iter().map(|p| p.records).sum();
        for record in records(partitions).take(self.num) {
            render(ty, record, &mut text);
            text.push('\n');
        }
        if total > self.num as u64 {
            text.push_str("...\n");
        }
        text.push('\n');
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|source| SinkError::Io { path: "standard output".into(), source })?;
        Ok(total.min(self.num as u64))
    }
}
