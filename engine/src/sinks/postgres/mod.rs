//! The PostgreSQL sink: each batch's records as rows of one table, exactly once.
//!
//! **Owns:** its connection (one, made when first needed and made again after it is lost), its
//! own small tokio runtime (current-thread: the [`Sink`] shape is synchronous), the target
//! table's check or creation, the batch's rows staged between `write` and `commit`, and its rows
//! of the progress table. **Never touches:** other tables, other sinks' progress rows, the
//! checkpoint, sources.
//!
//! Columns come from the stream's record type ([`layout`]: struct fields by name, `(K, V)` as
//! `key`, `value`, or `key` and `V`'s fields). `write` checks the table once (or creates it,
//! with `create_table = true`) and stages the batch as COPY text lines; in `upsert` mode only the
//! last record of each key is kept, since one statement may not touch a row twice. `commit` runs
//! one transaction:
//!
//! ```text
//! BEGIN
//! INSERT INTO sluice_progress (pipeline, sink, batch_time) VALUES (...) ON CONFLICT DO NOTHING
//!     -- no row inserted: the batch was committed before (a replay after a crash): ROLLBACK, done
//! append: COPY <table> (<columns>) FROM STDIN
//! upsert: CREATE TEMP TABLE sluice_stage ON COMMIT DROP AS SELECT <columns> FROM <table> WITH NO DATA
//!         COPY pg_temp.sluice_stage (<columns>) FROM STDIN
//!         INSERT INTO <table> SELECT ... FROM pg_temp.sluice_stage ON CONFLICT (<key>) DO UPDATE SET ...
//! COMMIT
//! ```
//!
//! So a batch's rows and its progress row become visible together or not at all, and a batch
//! whose progress row exists is not written again: with a replayable source and
//! `checkpoint_dir`, exactly once ([`SinkGuarantee::Transactional`](super::SinkGuarantee)). A
//! commit whose answer was lost is simply tried again: the progress row tells.
//!
//! In a cluster each source partition's output of a batch is a task of its own, written by
//! whichever member owns the partition then; its progress row is per partition and batch
//! (`sluice_partition_progress`: pipeline, sink, source_partition, batch_time). A member that
//! replays another's entry, or a zombie finishing one, finds the row and writes nothing. The two
//! shapes never share a table: each checks the other's is not the one it was given.
//!
//! COPY's text format, not binary: the server parses every value against its column's type, so
//! a value the column cannot take (a count past `smallint`, a `u64` past `bigint`, a string
//! past `varchar(n)`) is refused by the database with the line, which names the row's key in
//! the error. The staging table has the target's exact column types, so in upsert mode too.
//!
//! Failures ([`error`]): connection errors are retried inside the sink with back-off (100 ms
//! doubling to 5 s) for `retry_for` (60 s), logging each retry with the sink's name, so a
//! PostgreSQL restart mid-stream delays the batch, then writes it once. Anything else the
//! database refuses fails the batch at once with the row and the database's message; the
//! scheduler retries a failed write or commit three times, then stops the run without a
//! checkpoint, so the restart replays the batch.
//!
//! Not done: TLS (the URL must allow a plain connection), arrays for `Vec` fields (they are
//! jsonb), pruning the progress table (one row per committed batch with output).

mod config;
mod error;
mod layout;
mod schema;
#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;
use tokio_postgres::{Client, NoTls, Transaction};

pub use config::PostgresSinkConfig;
pub use error::PostgresError;

use self::error::{Failure, Unusable};
use self::layout::{Encoding, Layout, LayoutError};
use self::schema::{TableName, column_list, quote};
use super::{BatchRef, Sink, SinkError};
use crate::block::{Partition, records};

/// The longest pause between two attempts to reach the database.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Bytes of COPY text sent at a time.
const COPY_CHUNK: usize = 1 << 20;
/// The temporary table an upsert copies into first.
const STAGE: &str = "sluice_stage";

/// Where and how one sink writes, resolved from its config.
#[derive(Debug)]
pub(crate) struct Target {
    pub sink: String,
    pub pipeline: String,
    /// `host:port/database`, for messages.
    pub database: String,
    pub connection: tokio_postgres::Config,
    pub table: TableName,
    pub progress: TableName,
    /// Progress rows per source partition and batch (a cluster), not per batch.
    pub per_partition: bool,
    /// The key columns; empty in append mode.
    pub key: Vec<String>,
    pub create_table: bool,
    pub retry_for: Duration,
}

/// One batch's rows, ready to copy.
#[derive(Debug)]
struct Staged {
    time_ms: u64,
    /// A cluster's source partition whose output this is.
    task: Option<String>,
    /// COPY text lines, without their newlines; one per key in upsert mode.
    lines: Vec<String>,
}

/// See the module docs.
#[derive(Debug)]
pub struct PostgresSink {
    target: Result<Target, Unusable>,
    layout: Result<Layout, LayoutError>,
    link: Link,
    /// How each column is written, once the table was checked (or created).
    encodings: Option<Vec<Encoding>>,
    staged: Option<Staged>,
}

impl PostgresSink {
    fn new(target: Result<Target, Unusable>, ty: &TypeDesc) -> Self {
        Self { target, layout: Layout::of(ty), link: Link::default(), encodings: None, staged: None }
    }
}

/// The sink's target and layout, or why it cannot be used (every call of the sink says it again).
fn usable<'a>(
    target: &'a Result<Target, Unusable>,
    layout: &'a Result<Layout, LayoutError>,
) -> Result<(&'a Target, &'a Layout), PostgresError> {
    let target = target.as_ref().map_err(|problem| PostgresError::Config(problem.clone()))?;
    let layout = layout.as_ref().map_err(|problem| PostgresError::Config(problem.clone().into()))?;
    Ok((target, layout))
}

/// The column encodings, checking (or creating) the table first unless done; `retry`: through
/// connection failures.
fn ready(
    link: &mut Link,
    encodings: &mut Option<Vec<Encoding>>,
    target: &Target,
    layout: &Layout,
    retry: bool,
) -> Result<Vec<Encoding>, PostgresError> {
    if let Some(encodings) = encodings {
        return Ok(encodings.clone());
    }
    let found = link.run(target, retry, async |client| prepare(client, target, layout).await)?;
    Ok(encodings.insert(found).clone())
}

impl Sink for PostgresSink {
    /// Connects and checks (or creates) the table, once, without retrying: a failure is a
    /// warning and the first batch tries again.
    fn open(&mut self) -> Result<(), SinkError> {
        let (target, layout) = usable(&self.target, &self.layout)?;
        ready(&mut self.link, &mut self.encodings, target, layout, false)?;
        Ok(())
    }

    /// Checks the table if not yet done (retrying connection failures), then stages the
    /// batch's rows; returns how many rows it will write.
    fn write(&mut self, batch: BatchRef<'_>, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        self.staged = None;
        if partitions.iter().all(|p| p.records == 0) {
            return Ok(0);
        }
        if self.layout.as_ref().is_ok_and(|layout| layout.ty != *ty) {
            self.layout = Layout::of(ty);
            self.encodings = None;
        }
        let (target, layout) = usable(&self.target, &self.layout)?;
        let encodings = ready(&mut self.link, &mut self.encodings, target, layout, true)?;
        let staged = stage(target, layout, &encodings, partitions, batch)?;
        let rows = staged.lines.len() as u64;
        self.staged = Some(staged);
        Ok(rows)
    }

    /// Writes the staged rows and the batch's progress row in one transaction (retrying
    /// connection failures); a batch committed before is not written again.
    fn commit(&mut self, batch: BatchRef<'_>) -> Result<(), SinkError> {
        let Some(staged) =
            self.staged.as_ref().filter(|s| s.time_ms == batch.time_ms && s.task.as_deref() == batch.task)
        else {
            return Ok(()); // nothing to write for this batch
        };
        let (target, layout) = usable(&self.target, &self.layout)?;
        let committed =
            self.link.run(target, true, async |client| commit_batch(client, target, layout, staged).await)?;
        if !committed {
            tracing::info!(sink = %target.sink, batch = batch.time_ms, task = batch.task, table = %target.table,
                "batch committed before (a replay): not written again");
        }
        self.staged = None;
        Ok(())
    }
}

/// The connection, made when needed, and the runtime that drives it.
#[derive(Debug, Default)]
struct Link {
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<Client>,
    /// Since when attempts have failed to reach the database (kept across calls, so the
    /// scheduler's own retries do not restart the clock).
    down_since: Option<Instant>,
}

impl Link {
    /// Runs `op` on the connection (made first if needed). A transient failure drops the
    /// connection and, with `retry`, tries again after a pause, until `retry_for` has passed
    /// since the database was last reached.
    fn run<T>(
        &mut self,
        target: &Target,
        retry: bool,
        mut op: impl AsyncFnMut(&mut Client) -> Result<T, Failure>,
    ) -> Result<T, PostgresError> {
        let mut pause = Duration::from_millis(100);
        loop {
            let reason = match self.attempt(target, &mut op) {
                Ok(done) => {
                    self.down_since = None;
                    return Ok(done);
                }
                Err(Failure::Final(err)) => {
                    self.down_since = None; // it answered
                    return Err(err);
                }
                Err(Failure::Transient(reason)) => reason,
            };
            self.client = None;
            let unreachable =
                |retried, reason| PostgresError::Unreachable { database: target.database.clone(), retried, reason };
            if !retry {
                return Err(unreachable(Duration::ZERO, reason));
            }
            let elapsed = self.down_since.get_or_insert_with(Instant::now).elapsed();
            if elapsed >= target.retry_for {
                return Err(unreachable(elapsed, reason));
            }
            let wait = pause.min(target.retry_for - elapsed);
            tracing::warn!(sink = %target.sink, database = %target.database, retry_in_ms = wait.as_millis() as u64,
                "cannot reach PostgreSQL: {reason}; retrying");
            std::thread::sleep(wait);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn attempt<T>(
        &mut self,
        target: &Target,
        op: &mut impl AsyncFnMut(&mut Client) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let Self { runtime, client, .. } = self;
        let runtime = match runtime {
            Some(runtime) => runtime,
            None => runtime.insert(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| Failure::Final(PostgresError::Runtime(err)))?,
            ),
        };
        // An attempt that hangs (a network gone quiet) counts as a lost connection.
        let limit = target.retry_for.max(Duration::from_secs(30));
        runtime.block_on(async {
            let attempt = async {
                let client = match client {
                    Some(client) => client,
                    None => client.insert(connect(target).await?),
                };
                op(client).await
            };
            tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| {
                Err(Failure::Transient(format!("no answer within {}", humantime::format_duration(limit))))
            })
        })
    }
}

/// A new connection, its connection task spawned on the current runtime.
async fn connect(target: &Target) -> Result<Client, Failure> {
    let (client, connection) = target.connection.connect(NoTls).await.map_err(|err| {
        if error::transient(&err) {
            Failure::Transient(error::describe(&err))
        } else {
            Failure::Final(PostgresError::Connect { database: target.database.clone(), message: error::describe(&err) })
        }
    })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {err}");
        }
    });
    Ok(client)
}

/// A failed statement: transient, a refused row (a COPY line) or refused otherwise.
fn failure(err: tokio_postgres::Error, target: &Target, rows: Option<(&Layout, &Staged)>) -> Failure {
    let message = error::describe(&err);
    if error::transient(&err) {
        return Failure::Transient(message);
    }
    let table = target.table.to_string();
    let row = rows.and_then(|(layout, staged)| {
        let line = staged.lines.get(error::copy_line(&err)?.checked_sub(1)?)?;
        Some(row_label(layout, &target.key, line))
    });
    match row {
        Some(row) => Failure::Final(PostgresError::Row { table, row, message }),
        None => Failure::Final(PostgresError::Refused { table, message }),
    }
}

/// The progress table made if missing, then the target table checked (or created).
async fn prepare(client: &mut Client, target: &Target, layout: &Layout) -> Result<Vec<Encoding>, Failure> {
    let fail = |err| failure(err, target, None);
    prepare_progress(client, target).await?;
    match schema::columns(client, &target.table).await.map_err(fail)? {
        Some(found) => {
            let unique = if target.key.is_empty() {
                Vec::new()
            } else {
                schema::unique_keys(client, &target.table).await.map_err(fail)?
            };
            schema::compare(layout, &found, &target.key, &unique).map_err(|problems| table_error(target, problems))
        }
        None if target.create_table => {
            create_if_missing(client, &target.table, &schema::create_table(&target.table, layout, &target.key))
                .await
                .map_err(fail)?;
            tracing::info!(sink = %target.sink, table = %target.table, columns = %layout.names(), "created the table");
            Ok(vec![Encoding::Plain; layout.columns.len()])
        }
        None => Err(table_error(target, vec![missing_table(target, layout)])),
    }
}

/// The progress table made if missing, or checked to have the shape this run records (per
/// batch, or per partition and batch in a cluster).
async fn prepare_progress(client: &mut Client, target: &Target) -> Result<(), Failure> {
    let fail = |err| failure(err, target, None);
    let progress = &target.progress;
    let Some(found) = schema::columns(client, progress).await.map_err(fail)? else {
        let create = if target.per_partition {
            schema::create_partition_progress(progress)
        } else {
            schema::create_progress(progress)
        };
        return create_if_missing(client, progress, &create).await.map_err(fail);
    };
    let partitioned = found.iter().any(|c| c.name == schema::PARTITION_COLUMN);
    let problem = match (target.per_partition, partitioned) {
        (true, false) => {
            "records one process's batches (it has no source_partition column), and a cluster records \
                          each partition's: set progress_table to a table of the cluster's own"
        }
        (false, true) => {
            "records a cluster's batches per partition (it has a source_partition column), and this \
                          pipeline runs on its own: set progress_table to another table"
        }
        _ => return Ok(()),
    };
    Err(Failure::Final(PostgresError::Table {
        table: progress.to_string(),
        database: target.database.clone(),
        problems: vec![problem.to_string()],
    }))
}

fn table_error(target: &Target, problems: Vec<String>) -> Failure {
    Failure::Final(PostgresError::Table {
        table: target.table.to_string(),
        database: target.database.clone(),
        problems,
    })
}

fn missing_table(target: &Target, layout: &Layout) -> String {
    format!(
        "does not exist; create it ({}) or set create_table = true",
        schema::create_table(&target.table, layout, &target.key).replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE")
    )
}

/// Runs `sql`, a `CREATE TABLE IF NOT EXISTS` of `table`, if the table is missing (asking
/// first keeps the server's "already exists" notice out of the log); another session creating
/// it at the same moment (a duplicate in the catalog) is not an error.
async fn create_if_missing(client: &Client, table: &TableName, sql: &str) -> Result<(), tokio_postgres::Error> {
    if schema::exists(client, table).await? {
        return Ok(());
    }
    match client.batch_execute(sql).await {
        Err(err) if err.code().is_some_and(|c| matches!(c.code(), "42P07" | "23505")) => Ok(()),
        other => other,
    }
}

/// The batch's records as COPY lines; in upsert mode the last record of each key only.
fn stage(
    target: &Target,
    layout: &Layout,
    encodings: &[Encoding],
    partitions: &[Partition],
    batch: BatchRef<'_>,
) -> Result<Staged, PostgresError> {
    let key_columns: Vec<usize> =
        target.key.iter().filter_map(|k| layout.columns.iter().position(|c| &c.name == k)).collect();
    let mut lines: Vec<String> = Vec::new();
    let mut by_key: FxHashMap<String, usize> = FxHashMap::default();
    for record in records(partitions) {
        let mut line = String::new();
        layout.encode(encodings, record, &mut line).map_err(|bad| PostgresError::Row {
            table: target.table.to_string(),
            row: record_label(&layout.ty, record),
            message: bad.to_string(),
        })?;
        if key_columns.is_empty() {
            lines.push(line);
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let key = key_columns.iter().map(|&i| fields[i]).collect::<Vec<_>>().join("\t");
        match by_key.get(&key) {
            Some(&at) => lines[at] = line,
            None => {
                by_key.insert(key, lines.len());
                lines.push(line);
            }
        }
    }
    Ok(Staged { time_ms: batch.time_ms, task: batch.task.map(str::to_string), lines })
}

/// One transaction: the progress row (per partition and batch for a cluster's task), then the
/// rows. False if the batch was committed before.
async fn commit_batch(client: &mut Client, target: &Target, layout: &Layout, staged: &Staged) -> Result<bool, Failure> {
    let fail = |err| failure(err, target, Some((layout, staged)));
    let tx = client.transaction().await.map_err(fail)?;
    let time = i64::try_from(staged.time_ms).unwrap_or(i64::MAX);
    let (pipeline, sink, progress) = (&target.pipeline, &target.sink, &target.progress);
    let claimed = match &staged.task {
        None => tx.execute(&schema::claim_batch(progress), &[pipeline, sink, &time]).await,
        Some(task) => tx.execute(&schema::claim_partition_batch(progress), &[pipeline, sink, task, &time]).await,
    }
    .map_err(fail)?;
    if claimed == 0 {
        tx.rollback().await.map_err(fail)?;
        return Ok(false);
    }
    let columns = column_list(layout.columns.iter().map(|c| c.name.as_str()));
    let table = target.table.sql();
    if target.key.is_empty() {
        copy(&tx, &table, &columns, &staged.lines).await.map_err(fail)?;
    } else {
        let stage = format!("pg_temp.{}", quote(STAGE));
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA",
            quote(STAGE)
        ))
        .await
        .map_err(fail)?;
        copy(&tx, &stage, &columns, &staged.lines).await.map_err(fail)?;
        tx.batch_execute(&upsert(target, layout, &stage)).await.map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(true)
}

/// `INSERT INTO <table> SELECT ... FROM <stage> ON CONFLICT (<key>) DO UPDATE SET ...`.
fn upsert(target: &Target, layout: &Layout, stage: &str) -> String {
    let columns = column_list(layout.columns.iter().map(|c| c.name.as_str()));
    let updates: Vec<String> = layout
        .columns
        .iter()
        .filter(|c| !target.key.contains(&c.name))
        .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.name)))
        .collect();
    let action =
        if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
    format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({}) {action}",
        target.table.sql(),
        column_list(target.key.iter().map(String::as_str))
    )
}

/// `COPY <into> (<columns>) FROM STDIN` of `lines`, in chunks.
async fn copy(tx: &Transaction<'_>, into: &str, columns: &str, lines: &[String]) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in(&format!("COPY {into} ({columns}) FROM STDIN")).await?;
    let mut sink = std::pin::pin!(sink);
    let mut chunk = Vec::with_capacity(COPY_CHUNK.min(lines.len() * 32 + 1));
    for line in lines {
        chunk.extend_from_slice(line.as_bytes());
        chunk.push(b'\n');
        if chunk.len() >= COPY_CHUNK {
            sink.send(Cursor::new(std::mem::take(&mut chunk))).await?;
        }
    }
    if !chunk.is_empty() {
        sink.send(Cursor::new(chunk)).await?;
    }
    sink.as_mut().finish().await
}

/// Longest value a message shows of a row.
const SHOWN_CHARS: usize = 80;

/// `row with key (word) = (w5)`, or in append mode the first three columns.
fn row_label(layout: &Layout, key: &[String], line: &str) -> String {
    let values = layout::fields(line);
    let shown: Vec<usize> = if key.is_empty() {
        (0..layout.columns.len().min(3)).collect()
    } else {
        key.iter().filter_map(|k| layout.columns.iter().position(|c| &c.name == k)).collect()
    };
    let more = if key.is_empty() && layout.columns.len() > 3 { ", …" } else { "" };
    let names: Vec<&str> = shown.iter().map(|&i| layout.columns[i].name.as_str()).collect();
    let values: Vec<String> = shown
        .iter()
        .map(|&i| match values.get(i).cloned().flatten() {
            Some(value) => crate::fields::shorten(&value, SHOWN_CHARS).into_owned(),
            None => "NULL".into(),
        })
        .collect();
    let what = if key.is_empty() { "row" } else { "row with key" };
    format!("{what} ({}{more}) = ({}{more})", names.join(", "), values.join(", "))
}

/// `record ["w5", 40000]`: a record we refused before the database saw it.
fn record_label(ty: &TypeDesc, record: &[u8]) -> String {
    let mut json = String::new();
    crate::codec::render(ty, record, &mut json);
    format!("record {}", crate::fields::shorten(&json, 2 * SHOWN_CHARS))
}

/// What `sluice check` found about a sink's table.
#[derive(Debug)]
pub(crate) enum Checked {
    /// The database could not be reached: not checked.
    Unreachable(String),
    /// The database refused the connection (a wrong password, a missing database).
    Refused(String),
    /// The table is missing or does not fit.
    Problems(Vec<String>),
}

/// Connects once (no retries) and checks the table against `layout` without changing
/// anything: a missing table is fine with `create_table`.
pub(crate) fn check_table(target: &Target, layout: &Layout) -> Result<(), Checked> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Checked::Unreachable(err.to_string()))?;
    let limit = Duration::from_secs(10);
    let checked = runtime.block_on(async { tokio::time::timeout(limit, check(target, layout)).await });
    checked.unwrap_or_else(|_| {
        Err(Checked::Unreachable(format!("no answer within {}", humantime::format_duration(limit))))
    })
}

/// Connects and compares, changing nothing.
async fn check(target: &Target, layout: &Layout) -> Result<(), Checked> {
    let client = connect(target).await.map_err(|failure| match failure {
        Failure::Transient(reason) => Checked::Unreachable(reason),
        Failure::Final(err) => Checked::Refused(err.to_string()),
    })?;
    let refused = |err: tokio_postgres::Error| Checked::Refused(error::describe(&err));
    match schema::columns(&client, &target.table).await.map_err(refused)? {
        None if target.create_table => Ok(()),
        None => Err(Checked::Problems(vec![missing_table(target, layout)])),
        Some(found) => {
            let unique = schema::unique_keys(&client, &target.table).await.map_err(refused)?;
            schema::compare(layout, &found, &target.key, &unique).map(drop).map_err(Checked::Problems)
        }
    }
}
