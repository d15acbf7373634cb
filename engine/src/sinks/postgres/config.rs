//! `type = "postgres"`: the config, its validation (fields, then against the stream's record
//! type), the table it holds, and what `sluice check` asks the database.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sluice_sdk::TypeDesc;
use tokio_postgres::config::Host;

use super::error::Unusable;
use super::layout::Layout;
use super::schema::{TableName, TableNameError};
use super::{PostgresSink, Target};
use crate::fields::{ConfigError, MAX_INTERVAL, MAX_INTERVAL_TEXT};
use crate::sinks::{Resource, SinkCheck};

/// `type = "postgres"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Unique name; batches are recorded in the progress table under it.
    pub name: String,
    /// The stream to write (none for a stage's dead-letter sink).
    pub input: Option<String>,
    /// The database: `postgres://user[:password]@host[:port]/database` or `host=... user=...`
    /// (no TLS). Give this or `url_env`.
    pub url: Option<String>,
    /// The environment variable holding the URL (keeps passwords out of the file); it must be
    /// set wherever the pipeline loads (`sluice check` and `run`). Give this or `url`.
    pub url_env: Option<String>,
    /// The table, `name` or `schema.name`, taken literally (case and all).
    pub table: String,
    /// `append` (default): every record a new row. `upsert`: a row per `key`, replaced by the
    /// newest record with that key.
    #[serde(default)]
    pub mode: Mode,
    /// `upsert`: the columns that identify a row (the table's primary key or a unique index).
    pub key: Option<Vec<String>>,
    /// Create the table from the record type when it is missing (default false: a missing
    /// table is an error). Integers become bigint, strings text; `key` the primary key.
    #[serde(default)]
    pub create_table: bool,
    /// How long to keep retrying while the database cannot be reached (default 60s, at most
    /// 24h; back-off 100ms doubling to 5s). Longer than that, the batch fails.
    #[serde(default = "default_retry_for", with = "crate::fields::duration")]
    pub retry_for: Duration,
    /// The table recording which batches each sink committed (default `sluice_progress`, in a
    /// cluster `sluice_partition_progress`, in the target table's schema); created if missing.
    pub progress_table: Option<String>,
}

fn default_retry_for() -> Duration {
    Duration::from_secs(60)
}

/// `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Insert every record.
    #[default]
    Append,
    /// Insert or replace by `key`.
    Upsert,
}

/// The progress table's name when `progress_table` is not given.
pub(crate) const DEFAULT_PROGRESS_TABLE: &str = "sluice_progress";
/// The same in a cluster, whose progress rows are per source partition and batch.
pub(crate) const DEFAULT_PARTITION_PROGRESS_TABLE: &str = "sluice_partition_progress";

/// What is wrong with `url` or `url_env` (never echoing the URL, which may hold a password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// Both fields are given.
    #[error("give `url` or `url_env`, not both")]
    Both,
    /// Neither is.
    #[error("missing: `url = \"postgres://user@host:5432/database\"` or `url_env = \"<variable holding it>\"`")]
    Missing,
    /// `url_env` names a variable that is empty.
    #[error("the environment variable `{var}` is empty; expected a database URL")]
    EnvEmpty {
        /// The variable.
        var: String,
    },
    /// `url_env` names a variable that is not set.
    #[error("the environment variable `{var}` is not set; expected a database URL in it")]
    EnvUnset {
        /// The variable.
        var: String,
    },
    /// The URL does not parse.
    #[error("not a PostgreSQL URL ({reason}); expected e.g. \"postgres://user@127.0.0.1:5432/database\"")]
    NotAUrl {
        /// `url` or `url_env`.
        field: &'static str,
        /// The parser's words.
        reason: String,
    },
    /// The URL names no host.
    #[error("the URL names no host; expected postgres://user@<host>:5432/database")]
    NoHost {
        /// `url` or `url_env`.
        field: &'static str,
    },
    /// The URL asks for TLS.
    #[error("sslmode=require: this sink has no TLS yet; expected sslmode=disable or prefer")]
    Tls {
        /// `url` or `url_env`.
        field: &'static str,
    },
    /// The URL names no user.
    #[error("the URL names no user; expected postgres://<user>@host:5432/database")]
    NoUser {
        /// `url` or `url_env`.
        field: &'static str,
    },
}

impl UrlError {
    /// The field at fault: `url` or `url_env`.
    pub(crate) const fn field(&self) -> &'static str {
        match self {
            Self::Both | Self::Missing => "url",
            Self::EnvEmpty { .. } | Self::EnvUnset { .. } => "url_env",
            Self::NotAUrl { field, .. } | Self::NoHost { field } | Self::Tls { field } | Self::NoUser { field } => {
                field
            }
        }
    }
}

impl PostgresSinkConfig {
    fn at(&self, field: &str) -> String {
        format!("sinks `{}`.{field}", self.name)
    }

    /// The URL, from `url` or the variable `url_env` names; else the problem (naming its field).
    fn url(&self) -> Result<String, UrlError> {
        match (&self.url, &self.url_env) {
            (Some(_), Some(_)) => Err(UrlError::Both),
            (None, None) => Err(UrlError::Missing),
            (Some(url), None) => Ok(url.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(url) if !url.trim().is_empty() => Ok(url),
                Ok(_) => Err(UrlError::EnvEmpty { var: var.clone() }),
                Err(_) => Err(UrlError::EnvUnset { var: var.clone() }),
            },
        }
    }

    /// The connection settings, from the URL; else the problem, naming its field (never
    /// echoing the URL, which may hold a password).
    pub(crate) fn connection(&self) -> Result<tokio_postgres::Config, UrlError> {
        let url = self.url()?;
        let field = if self.url.is_some() { "url" } else { "url_env" };
        let config = tokio_postgres::Config::from_str(&url)
            .map_err(|err| UrlError::NotAUrl { field, reason: err.to_string() })?;
        if config.get_hosts().is_empty() {
            return Err(UrlError::NoHost { field });
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(UrlError::Tls { field });
        }
        if config.get_user().is_none() {
            return Err(UrlError::NoUser { field });
        }
        Ok(config)
    }

    /// The table; valid after [`PostgresSinkConfig::validate`].
    pub(crate) fn table(&self) -> Result<TableName, TableNameError> {
        TableName::parse(&self.table)
    }

    /// The progress table (`in_cluster`: of a cluster's run), beside the target unless it
    /// names its own schema.
    pub(crate) fn progress(&self, in_cluster: bool) -> Result<TableName, TableNameError> {
        let table = self.table()?;
        match &self.progress_table {
            None if in_cluster => Ok(table.sibling(DEFAULT_PARTITION_PROGRESS_TABLE)),
            None => Ok(table.sibling(DEFAULT_PROGRESS_TABLE)),
            Some(name) => TableName::parse(name),
        }
    }

    fn key(&self) -> Vec<String> {
        match self.mode {
            Mode::Upsert => self.key.clone().unwrap_or_default(),
            Mode::Append => Vec::new(),
        }
    }

    /// Checks the fields on their own; every problem, each naming its field.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Err(problem) = self.connection() {
            errors.push(ConfigError::new(self.at(problem.field()), problem.to_string()));
        }
        match (self.table(), self.progress(false)) {
            (Err(problem), _) => errors.push(ConfigError::new(self.at("table"), problem.to_string())),
            (Ok(_), Err(problem)) => errors.push(ConfigError::new(self.at("progress_table"), problem.to_string())),
            (Ok(table), Ok(progress)) if table == progress => errors.push(ConfigError::new(
                self.at("progress_table"),
                format!("`{progress}` is the table the sink writes; expected another table"),
            )),
            (Ok(_), Ok(_)) => {}
        }
        match (self.mode, &self.key) {
            (Mode::Upsert, None) => errors.push(ConfigError::new(
                self.at("key"),
                "mode = \"upsert\" needs `key = [\"<column>\", ...]`: the columns that identify a row",
            )),
            (Mode::Upsert, Some(key)) if key.is_empty() => {
                errors.push(ConfigError::new(self.at("key"), "must name at least one column"))
            }
            (Mode::Upsert, Some(key)) => {
                for (i, column) in key.iter().enumerate() {
                    if key[..i].contains(column) {
                        errors.push(ConfigError::new(self.at("key"), format!("column `{column}` is named twice")));
                    }
                }
            }
            (Mode::Append, Some(_)) => errors.push(ConfigError::new(
                self.at("key"),
                "only mode = \"upsert\" takes `key`; append inserts every record",
            )),
            (Mode::Append, None) => {}
        }
        if self.retry_for > MAX_INTERVAL {
            errors.push(ConfigError::new(
                self.at("retry_for"),
                format!("must be at most {MAX_INTERVAL_TEXT}, found {}", humantime::format_duration(self.retry_for)),
            ));
        }
        errors
    }

    /// Checks the fields against the records of type `ty` the sink will write: they make
    /// columns, and `key` names some of them.
    pub fn validate_input(&self, ty: &TypeDesc) -> Vec<ConfigError> {
        let layout = match Layout::of(ty) {
            Ok(layout) => layout,
            Err(problem) => return vec![ConfigError::new(self.at("input"), problem.to_string())],
        };
        self.key()
            .iter()
            .filter(|column| !layout.columns.iter().any(|c| &c.name == *column))
            .map(|column| {
                ConfigError::new(
                    self.at("key"),
                    format!("`{column}` is not a column of the records (type {ty}: columns {})", layout.names()),
                )
            })
            .collect()
    }

    /// `host:port/database`, as messages name the database (never with the password).
    pub(crate) fn database(config: &tokio_postgres::Config) -> String {
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
        format!("{host}:{port}/{database}")
    }

    /// The table it writes, as a resource no other sink may write.
    pub(crate) fn resources(&self) -> Vec<(&'static str, Resource)> {
        let (Ok(config), Ok(table)) = (self.connection(), self.table()) else {
            return Vec::new(); // reported by validate
        };
        let schema = table.schema.as_deref().unwrap_or("public");
        vec![(
            "table",
            Resource::Table { database: Self::database(&config), table: format!("{schema}.{}", table.name) },
        )]
    }

    fn target(&self, pipeline: &str, in_cluster: bool) -> Result<Target, Unusable> {
        let mut connection = self.connection()?;
        if connection.get_connect_timeout().is_none() {
            connection.connect_timeout(Duration::from_secs(5));
        }
        connection.keepalives_idle(Duration::from_secs(10));
        if connection.get_application_name().is_none() {
            connection.application_name(format!("sluice sink {}", self.name));
        }
        Ok(Target {
            sink: self.name.clone(),
            pipeline: pipeline.to_string(),
            database: Self::database(&connection),
            connection,
            table: self.table()?,
            progress: self.progress(in_cluster)?,
            per_partition: in_cluster,
            key: self.key(),
            create_table: self.create_table,
            retry_for: self.retry_for,
        })
    }

    /// The sink, for records of type `ty`, recording its batches under `pipeline` (per source
    /// partition and batch `in_cluster`).
    pub fn build(&self, pipeline: &str, ty: &TypeDesc, in_cluster: bool) -> PostgresSink {
        PostgresSink::new(self.target(pipeline, in_cluster), ty)
    }

    /// What `sluice check` asks the database: the table exists (or will be created) with
    /// columns that fit records of type `ty`. A database that cannot be reached is a warning:
    /// the run retries it.
    pub fn check(&self, ty: &TypeDesc) -> SinkCheck {
        let mut check = SinkCheck::default();
        let (Ok(target), Ok(layout)) = (self.target("", false), Layout::of(ty)) else {
            return check; // reported by validate and validate_input
        };
        match super::check_table(&target, &layout) {
            Ok(()) => {}
            Err(super::Checked::Unreachable(reason)) => check.warnings.push(ConfigError::new(
                self.at("url"),
                format!("cannot reach PostgreSQL at {} ({reason}); the table was not checked", target.database),
            )),
            Err(super::Checked::Refused(reason)) => check.errors.push(ConfigError::new(self.at("url"), reason)),
            Err(super::Checked::Problems(problems)) => {
                let problems = problems.join("; ");
                check.errors.push(ConfigError::new(
                    self.at("table"),
                    format!("table `{}` in {}: {problems}", target.table, target.database),
                ));
            }
        }
        check
    }
}
