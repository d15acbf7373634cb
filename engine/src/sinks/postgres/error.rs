//! What goes wrong between the sink and PostgreSQL, and which of it is worth retrying.
//!
//! Transient (retried with back-off for `retry_for`): the connection could not be made or was
//! lost (I/O errors, a closed connection, a timed-out attempt), and the SQLSTATE classes 08
//! (connection exception), 53 (insufficient resources), 57P (shutdown, restart, `cannot
//! connect now`), 40001 and 40P01 (serialization failure, deadlock). Everything else the
//! database says — a bad value, a constraint, a missing table, permissions — is final for the
//! batch: retrying would say the same.

use std::time::Duration;

use tokio_postgres::error::DbError;

use super::config::UrlError;
use super::layout::LayoutError;
use super::schema::TableNameError;

/// The PostgreSQL sink cannot take a batch.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The database could not be reached for `retry_for`.
    #[error("cannot reach PostgreSQL at {database}{}: {reason}", retried_for(*.retried))]
    Unreachable {
        /// `host:port/database`.
        database: String,
        /// How long it was retried.
        retried: Duration,
        /// The last error.
        reason: String,
    },
    /// The table is missing or does not fit the records.
    #[error("table `{table}` in {database}: {}", .problems.join("; "))]
    Table {
        /// The table.
        table: String,
        /// `host:port/database`.
        database: String,
        /// Each problem: a missing column, a column of another type, a missing key.
        problems: Vec<String>,
    },
    /// One row was refused: by the database (a value out of range, a constraint) or before
    /// (a value no column type can hold, a record that does not match its type).
    #[error("table `{table}`: {row}: {message}")]
    Row {
        /// The table.
        table: String,
        /// The row: its key (upsert) or its first columns.
        row: String,
        /// The database's message, or ours.
        message: String,
    },
    /// The database refused the batch for another reason (a constraint checked after the copy,
    /// permissions): its message.
    #[error("table `{table}`: {message}")]
    Refused {
        /// The table.
        table: String,
        /// The database's message, detail and SQLSTATE.
        message: String,
    },
    /// The database refused the connection (a wrong password, a missing database).
    #[error("PostgreSQL at {database} refused the connection: {message}")]
    Connect {
        /// `host:port/database`.
        database: String,
        /// The database's message.
        message: String,
    },
    /// The URL, the table's name or the records' type was unusable when the sink was built.
    #[error(transparent)]
    Config(#[from] Unusable),
    /// The sink's own runtime (that drives its connection) could not start.
    #[error("cannot start the sink's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Why a sink cannot be used as configured, found as it is built (`validate` and
/// `validate_input` refused the same at load).
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unusable {
    /// `url` or `url_env`.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// `table` or `progress_table`.
    #[error(transparent)]
    Table(#[from] TableNameError),
    /// The records' type makes no columns.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// ` (retried for 1m)`, or nothing when it was not retried.
fn retried_for(retried: Duration) -> String {
    if retried.is_zero() {
        return String::new();
    }
    // Whole ms: the Duration's nanoseconds are noise in a message.
    let ms = Duration::from_millis(u64::try_from(retried.as_millis()).unwrap_or(u64::MAX));
    format!(" (retried for {})", humantime::format_duration(ms))
}

/// A failed attempt: retry it, or give up on the batch.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt after a pause: the connection is dropped and made again.
    Transient(String),
    /// Final for this batch.
    Final(PostgresError),
}

/// Whether `err` is worth a retry on a new connection (see the module docs).
pub(crate) fn transient(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        Some(code) => {
            let code = code.code();
            ["08", "53", "57P"].iter().any(|class| code.starts_with(class)) || code == "40001" || code == "40P01"
        }
        // No SQLSTATE: I/O, a closed connection, the protocol broken off.
        None => err.as_db_error().is_none(),
    }
}

/// The database's words: message, detail, hint and SQLSTATE.
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => describe_db(db),
        None => match std::error::Error::source(err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    }
}

fn describe_db(db: &DbError) -> String {
    let mut text = db.message().to_string();
    for extra in [db.detail(), db.hint()].into_iter().flatten() {
        text.push_str(" (");
        text.push_str(extra);
        text.push(')');
    }
    text.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
    text
}

/// The line of a COPY a database error is about (1-based), from its context
/// (`COPY counts, line 3, column value: "40000"`).
pub(crate) fn copy_line(err: &tokio_postgres::Error) -> Option<usize> {
    let context = err.as_db_error()?.where_()?;
    let at = context.find("COPY ")?;
    let rest = &context[at..];
    let line = &rest[rest.find(", line ")? + ", line ".len()..];
    let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
