//! The SQL the sink speaks: names, the progress table, creating the target table from a
//! [`Layout`], and checking an existing table against it.
//!
//! Names are taken literally: `table = "Counts"` is the table `"Counts"`, not `counts`; a `.`
//! separates a schema (`analytics.counts`), else the connection's `search_path` decides. Every
//! name is double-quoted in SQL, so no name is ever read as SQL.

use tokio_postgres::Client;

use super::layout::{Encoding, Kind, Layout};

/// A table, as `table = "[schema.]name"` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableName {
    /// The schema, if given.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
const MAX_NAME_BYTES: usize = 63;

/// What is wrong with a `table` (or `progress_table`) name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TableNameError {
    /// The schema or the table is empty.
    #[error("`{text}` has an empty name; expected \"<table>\" or \"<schema>.<table>\"")]
    Empty {
        /// The name as written.
        text: String,
    },
    /// A part longer than PostgreSQL takes.
    #[error("`{part}` is longer than PostgreSQL's {MAX_NAME_BYTES} bytes for a name")]
    TooLong {
        /// The schema or the table.
        part: String,
    },
    /// A NUL, or more than one `.`.
    #[error("`{text}`: expected \"<table>\" or \"<schema>.<table>\"")]
    Malformed {
        /// The name as written.
        text: String,
    },
}

impl TableName {
    /// `[schema.]name`; else what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, TableNameError> {
        let (schema, name) = match text.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, text),
        };
        for part in schema.iter().chain([&name]) {
            if part.is_empty() {
                return Err(TableNameError::Empty { text: text.to_string() });
            }
            if part.len() > MAX_NAME_BYTES {
                return Err(TableNameError::TooLong { part: part.to_string() });
            }
            if part.contains(['\0', '.']) {
                return Err(TableNameError::Malformed { text: text.to_string() });
            }
        }
        Ok(Self { schema: schema.map(str::to_string), name: name.to_string() })
    }

    /// Quoted for SQL.
    pub(crate) fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }

    /// The same table in the same schema: the progress table beside the target.
    pub(crate) fn sibling(&self, name: &str) -> Self {
        Self { schema: self.schema.clone(), name: name.to_string() }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The quoted names, comma-separated.
pub(crate) fn column_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(quote).collect::<Vec<_>>().join(", ")
}

/// Creates the progress table if missing: one row per batch a sink committed.
pub(crate) fn create_progress(progress: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink text NOT NULL, batch_time bigint NOT NULL, \
         committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink, batch_time))",
        progress.sql()
    )
}

/// Records a batch as committed, unless it already is (then no row is inserted).
pub(crate) fn claim_batch(progress: &TableName) -> String {
    format!("INSERT INTO {} (pipeline, sink, batch_time) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", progress.sql())
}

/// The column a cluster's progress table has and one process's has not.
pub(crate) const PARTITION_COLUMN: &str = "source_partition";

/// Creates a cluster's progress table if missing: one row per source partition (`<topic>-<p>`)
/// and batch a sink committed, whichever member committed it.
pub(crate) fn create_partition_progress(progress: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink text NOT NULL, {PARTITION_COLUMN} text NOT NULL, \
         batch_time bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (pipeline, sink, {PARTITION_COLUMN}, batch_time))",
        progress.sql()
    )
}

/// Records one source partition's output of a batch as committed, unless it already is.
pub(crate) fn claim_partition_batch(progress: &TableName) -> String {
    format!(
        "INSERT INTO {} (pipeline, sink, {PARTITION_COLUMN}, batch_time) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        progress.sql()
    )
}

/// `CREATE TABLE` for `layout`: each column its kind's type, NOT NULL unless it is an
/// `Option`; the primary key `key` when given (upsert).
pub(crate) fn create_table(table: &TableName, layout: &Layout, key: &[String]) -> String {
    let mut columns: Vec<String> = layout
        .columns
        .iter()
        .map(|c| format!("{} {}{}", quote(&c.name), c.kind.sql(), if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    if !key.is_empty() {
        columns.push(format!("PRIMARY KEY ({})", column_list(key.iter().map(String::as_str))));
    }
    format!("CREATE TABLE IF NOT EXISTS {} ({})", table.sql(), columns.join(", "))
}

/// One column of an existing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableColumn {
    /// Its name.
    pub name: String,
    /// Its type's `typname` (a domain's base type's).
    pub typname: String,
    /// Its type as PostgreSQL shows it (`character varying(5)`).
    pub shown: String,
    /// NOT NULL and nothing fills it by itself (no default, identity or generation).
    pub required: bool,
}

/// Whether `table` exists.
pub(crate) async fn exists(client: &Client, table: &TableName) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.sql()]).await?.get(0))
}

/// The columns of `table`, or None if there is no such table.
pub(crate) async fn columns(
    client: &Client,
    table: &TableName,
) -> Result<Option<Vec<TableColumn>>, tokio_postgres::Error> {
    if !exists(client, table).await? {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT a.attname::text, b.typname::text, format_type(a.atttypid, a.atttypmod), \
             a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table.sql()],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|row| TableColumn { name: row.get(0), typname: row.get(1), shown: row.get(2), required: row.get(3) })
            .collect(),
    ))
}

/// The column sets of `table`'s unique indexes without a predicate (what ON CONFLICT can use).
pub(crate) async fn unique_keys(client: &Client, table: &TableName) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid",
            &[&table.sql()],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Checks an existing table's columns against `layout`: every column present with a type its
/// kind accepts, no other column that needs a value, and (upsert) a unique index on exactly
/// `key`. The encoding of each column, or every problem found.
pub(crate) fn compare(
    layout: &Layout,
    found: &[TableColumn],
    key: &[String],
    unique: &[Vec<String>],
) -> Result<Vec<Encoding>, Vec<String>> {
    let mut problems = Vec::new();
    let mut encodings = Vec::with_capacity(layout.columns.len());
    for column in &layout.columns {
        let Some(existing) = found.iter().find(|f| f.name == column.name) else {
            problems.push(format!("column `{}` is missing: expected {}", column.name, expected(column)));
            continue;
        };
        match encoding(column.kind, &existing.typname) {
            Some(encoding) => encodings.push(encoding),
            None => problems.push(format!(
                "column `{}`: expected {}, found {}",
                column.name,
                expected(column),
                existing.shown
            )),
        }
    }
    for extra in found.iter().filter(|f| f.required && !layout.columns.iter().any(|c| c.name == f.name)) {
        problems.push(format!(
            "column `{}` ({}) is NOT NULL without a default, and the records (columns {}) have no value for it",
            extra.name,
            extra.shown,
            layout.names()
        ));
    }
    if !key.is_empty() {
        let mut wanted: Vec<String> = key.to_vec();
        wanted.sort();
        if !unique.contains(&wanted) {
            problems.push(format!(
                "no primary key or unique index on exactly ({}); mode = \"upsert\" needs one",
                key.join(", ")
            ));
        }
    }
    if problems.is_empty() { Ok(encodings) } else { Err(problems) }
}

/// `bigint (for u64; also taken: integer, ...)`.
fn expected(column: &super::layout::Column) -> String {
    let others: Vec<&str> = column.kind.accepted()[1..].iter().map(|(_, shown)| *shown).collect();
    if others.is_empty() {
        format!("{} (for {})", column.kind.sql(), column.ty)
    } else {
        format!("{} (for {}; also taken: {})", column.kind.sql(), column.ty, others.join(", "))
    }
}

/// How a value of `kind` is written to a column of type `typname`, if it can be.
fn encoding(kind: Kind, typname: &str) -> Option<Encoding> {
    if !kind.accepted().iter().any(|(name, _)| *name == typname) {
        return None;
    }
    Some(match typname {
        "timestamptz" => Encoding::EpochMillis { zone: true },
        "timestamp" => Encoding::EpochMillis { zone: false },
        _ => Encoding::Plain,
    })
}
