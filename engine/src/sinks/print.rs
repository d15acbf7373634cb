//! The print sink: the first `num` records of each batch on standard output, in the layout of
//! Spark's `DStream.print()`.
//!
//! A closed standard output (`sluice run p.toml | head`) is the end of the output, as for any
//! command-line tool: the sink says so once in the log and prints nothing more; batches go on.
//! Any other write error fails the batch.

use std::io::{ErrorKind, Write};

use serde::Deserialize;
use sluice_sdk::TypeDesc;

use super::{BatchRef, Sink, SinkError};
use crate::block::{Partition, records};
use crate::codec::render;

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
        PrintSink { name: self.name.clone(), num: self.num, closed: false }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct PrintSink {
    name: String,
    num: usize,
    /// Standard output was closed: nothing more is printed.
    closed: bool,
}

impl Sink for PrintSink {
    /// Prints the batch header and up to `num` records, then `...` if there were more. Returns
    /// how many records it printed (none once standard output is closed).
    fn write(&mut self, batch: BatchRef<'_>, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        if self.closed {
            return Ok(0);
        }
        let batch_time_ms = batch.time_ms;
        let task = batch.task.map(|t| format!(" ({t})")).unwrap_or_default();
        let mut text = format!(
            "-------------------------------------------\nTime: {batch_time_ms} ms{task}\n-------------------------------------------\n"
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
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(total.min(self.num as u64)),
            Err(err) if err.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                tracing::info!(sink = %self.name, "standard output is closed: nothing more is printed");
                Ok(0)
            }
            Err(source) => Err(SinkError::Io { path: "standard output".into(), source }),
        }
    }
}
