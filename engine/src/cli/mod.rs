//! The `sluice` command line. What it prints goes through `output`: a closed standard output
//! or error (`sluice ... | head`) ends that output; the command still exits with its own status.

mod output;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::fields::{MAX_INTERVAL, MAX_INTERVAL_TEXT};
use crate::harness::input::Cut;
use crate::pipeline::Pipeline;
use crate::runtime::{self, Limits, PluginRuntime};
use crate::sources;
use crate::topology::RunOptions;

/// A line on standard output; see `output`.
macro_rules! outln {
    ($($arg:tt)*) => { output::out(format_args!($($arg)*)) };
}

/// A line on standard error; see `output`.
macro_rules! errln {
    ($($arg:tt)*) => { output::err(format_args!($($arg)*)) };
}

// After the macros, which they use.
mod guest;
mod plugin;
mod test;

/// Sluice: a micro-batch stream engine whose user logic runs as hot-swappable WebAssembly plugins.
///
/// A pipeline file (TOML) names sources, stages and sinks; each stage calls a function of a
/// plugin built with sluice-sdk. Start with `sluice check PIPELINE`, then `sluice run PIPELINE`.
/// While it runs, overwrite a plugin's .wasm file to hot-swap it at the next batch boundary.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing syntax), e.g. "info", "debug", "sluice=debug". Overrides RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline until its sources end or SIGINT/SIGTERM (then drain and exit 0).
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
        /// Worker threads that run partitions (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Do not watch plugin files for new versions.
        #[arg(long)]
        no_hot_swap: bool,
        /// Serve /metrics and the admin API here (the next free port if taken, like Spark's UI).
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_UI)]
        ui: SocketAddr,
        /// Do not serve /metrics or the admin API.
        #[arg(long)]
        no_ui: bool,
        /// Start over: set the pipeline's checkpoint directory aside (renamed, not deleted)
        /// instead of resuming from it.
        #[arg(long)]
        fresh: bool,
        /// Do not print the one-line summary of every batch (warnings and errors still show).
        #[arg(long, short)]
        quiet: bool,
        /// The token the admin API requires (`Authorization: Bearer <token>`); required when
        /// --ui is not a loopback address.
        #[command(flatten)]
        token: TokenArgs,
        /// Serve the admin API over HTTPS only, with this certificate (PEM, the chain after
        /// it); needs --tls-key.
        #[arg(long, env = "SLUICE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
        #[arg(long, env = "SLUICE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Largest plugin a deploy may upload, MiB (larger: 413).
        #[arg(long, value_name = "MIB", default_value_t = (runtime::MAX_PLUGIN_BYTES >> 20) as u16,
              value_parser = clap::value_parser!(u16).range(1..=(runtime::MAX_PLUGIN_BYTES >> 20) as i64))]
        max_upload_mib: u16,
        /// In a cluster, this process's member name (overrides `cluster.member`; default
        /// `<host>-<pid>`); on Kubernetes, the pod's name.
        #[arg(long, env = "SLUICE_MEMBER", value_parser = member_name)]
        member: Option<String>,
    },
    /// Upload a new version of a plugin to a running engine; it is validated, then swapped in
    /// at the next batch boundary.
    Deploy {
        /// The plugin's name in the pipeline file.
        plugin: String,
        /// The new .wasm file.
        #[arg(required_unless_present = "abort_shadow")]
        file: Option<PathBuf>,
        /// Run the new version in the serving one's shadow instead: on the same batches, its
        /// output discarded, each batch compared (records that differ, errors, time per call:
        /// `sluice status`). `sluice promote` makes it serve.
        #[arg(long, conflicts_with = "abort_shadow")]
        shadow: bool,
        /// With --shadow: promote it by itself after N batches in a row with no error in
        /// either version and no more differing than --max-diff.
        #[arg(long, value_name = "N", requires = "shadow", value_parser = clap::value_parser!(u32).range(1..))]
        promote_after: Option<u32>,
        /// With --promote-after: the share of the serving output (0 to 1) allowed to differ.
        #[arg(long, value_name = "SHARE", requires = "promote_after", default_value_t = 0.0)]
        max_diff: f64,
        /// Drop the plugin's shadow.
        #[arg(long, conflicts_with = "file")]
        abort_shadow: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Make a plugin's shadow (`deploy --shadow`) serve from the next batch boundary.
    Promote {
        /// The plugin's name in the pipeline file.
        plugin: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Make the version that served before the current one serve again (next batch boundary).
    Rollback {
        /// The plugin's name in the pipeline file.
        plugin: String,
        /// Go back to this earlier version (a prefix of its content hash, as `status` shows),
        /// not just the one before; the current version stays in the history.
        #[arg(long, value_name = "HASH")]
        to: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop reading a source of a running engine (a socket is held back by TCP, a directory's
    /// new files wait); batches go on.
    Pause {
        /// The source's name in the pipeline file.
        source: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Read a paused source again.
    Resume {
        /// The source's name in the pipeline file.
        source: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a running engine's pipeline, last batch, sources and plugin versions (JSON).
    Status {
        /// A cluster's member: print the cluster as a table instead — each live member, the
        /// version of each plugin it serves, its last batch, its partitions with their lag.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Run a pipeline on files instead of its sources, deterministically, with the real
    /// plugins: print each stage's output per batch, or compare every sink's output with golden
    /// files (`--expect DIR`) and exit 1 with the difference.
    ///
    /// Each line of an input file is one record (for a source of whole records, its JSON); a
    /// line holding only `---` ends a batch. Batch N runs at time N × batch_interval; after the
    /// last batch every event-time window closes. Nothing is written outside the golden
    /// directory: sinks and checkpoints are not touched.
    Test {
        /// The pipeline file.
        pipeline: PathBuf,
        /// A source's records: `--input SOURCE=FILE`, one per source.
        #[arg(long = "input", value_name = "SOURCE=FILE", value_parser = source_file, required = true)]
        inputs: Vec<(String, PathBuf)>,
        /// Cut the files every N records instead of at `---` lines.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        batch_lines: Option<u32>,
        /// Compare each sink's records with `DIR/<sink>.jsonl` (see `--bless`).
        #[arg(long, value_name = "DIR")]
        expect: Option<PathBuf>,
        /// Write the golden files of `--expect DIR` from this run instead of comparing.
        #[arg(long, requires = "expect")]
        bless: bool,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Make and build plugins: `sluice plugin new NAME`, `sluice plugin build [DIR]`.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Parse a pipeline, load every plugin and check every stage; list all problems and exit 1
    /// if there are any.
    Check {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Make a plugin in DIR (named after DIR's last component): functions of each common kind
    /// with unit tests, a sample pipeline, sample input and golden files. It builds and tests
    /// out of the box: `cargo test` (Python: `python3 -m unittest`, JS: `node --test`), `sluice
    /// plugin build`, `sluice test`.
    New {
        /// The new plugin's directory (absent or empty).
        dir: PathBuf,
        /// Its language: a Rust crate, or a Python or JavaScript module built into a component
        /// (ABI 2) with the guest SDK copied in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: plugin::Lang,
        /// The `sluice-sdk` to depend on: the sdk/ directory of a Sluice checkout (default: the
        /// one this binary was built from).
        #[arg(long, value_name = "PATH", conflicts_with = "sdk_version")]
        sdk: Option<PathBuf>,
        /// Depend on `sluice-sdk` of this version from the registry instead of a path.
        #[arg(long, value_name = "VERSION")]
        sdk_version: Option<String>,
    },
    /// Build the plugin in DIR: a Rust crate for wasm32-unknown-unknown (installing the target
    /// if it is missing), a Python or JavaScript one (`app.py`, `app.js`) into a component
    /// (installing componentize-py or componentize-qjs into the cache if missing); print each
    /// .wasm's path, size, and its functions with their kinds and types.
    Build {
        /// The plugin's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
}

/// `--input SOURCE=FILE`.
fn source_file(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((source, file)) if !source.is_empty() && !file.is_empty() => Ok((source.to_string(), PathBuf::from(file))),
        _ => Err("expected SOURCE=FILE, e.g. lines=input.txt".into()),
    }
}

/// `--member`: a name that can be part of the store's object names.
fn member_name(name: &str) -> Result<String, String> {
    // clap's value parsers report a String.
    match crate::cluster::member_name_problem(name) {
        Some(problem) => Err(problem.into()),
        None => Ok(name.to_string()),
    }
}

/// Where `sluice run` serves its admin API by default.
pub(crate) const DEFAULT_UI: &str = "127.0.0.1:4040";

#[derive(Debug, clap::Args)]
struct RemoteArgs {
    /// The running engine's admin address (its `run --ui`): `HOST:PORT`, or
    /// `https://HOST:PORT` when it serves HTTPS (`run --tls-cert`).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_UI)]
    ui: String,
    /// With an `https://` address: trust only this CA certificate (PEM), e.g. the engine's own
    /// self-signed one; without it the public web's roots are trusted.
    #[arg(long, env = "SLUICE_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The engine's admin token, if it has one.
    #[command(flatten)]
    token: TokenArgs,
}

/// An admin token, given as is or in a file (a mounted secret: not on the command line, where
/// `ps` shows it).
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The admin token.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A file holding the admin token (its first line).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE", value_name = "FILE", conflicts_with = "admin_token")]
    admin_token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token, if one is given; why the file gives none.
    fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.admin_token_file else { return Ok(self.admin_token.clone()) };
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--admin-token-file {}: cannot read it: {err}", path.display()))?;
        match text.lines().next().map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => Ok(Some(token.to_string())),
            None => {
                Err(format!("--admin-token-file {}: expected the token on its first line, found none", path.display()))
            }
        }
    }
}

#[derive(Debug, clap::Args)]
struct PluginArgs {
    /// Deadline of one plugin call (one partition); at least 10ms, at most 24h.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_call_timeout)]
    call_timeout: Duration,
    /// Budget for loading a plugin: instantiating it (its start function), asking its ABI
    /// version and every function's description, together. A module that takes longer is
    /// refused (class `deadline`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    validate_timeout: Duration,
    /// Memory cap of one plugin instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = runtime::DEFAULT_MEMORY_LIMIT >> 20)]
    memory_limit_mib: usize,
    /// Where compiled plugins are cached by content hash (default: $SLUICE_CACHE_DIR, else
    /// $XDG_CACHE_HOME/sluice, else ~/.cache/sluice), each file checked against a MAC keyed by
    /// $SLUICE_CACHE_KEY_FILE (else ~/.config/sluice/cache.key, made on first use).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile plugins on every start instead of caching them.
    #[arg(long)]
    no_cache: bool,
}

impl PluginArgs {
    fn runtime(&self) -> Result<PluginRuntime, runtime::StartError> {
        let dir = if self.no_cache { None } else { self.cache_dir.clone().or_else(default_cache_dir) };
        let key = runtime::default_key_file();
        let cache = match (dir, key) {
            (Some(dir), Some(key)) => match runtime::CompileCache::open(dir, &key) {
                Ok(cache) => Some(cache),
                Err(why) => {
                    tracing::warn!("{why}: plugins are compiled on every start");
                    None
                }
            },
            _ => None,
        };
        let limits = Limits { timeout: self.call_timeout, memory: self.memory_limit_mib.saturating_mul(1 << 20) };
        Ok(PluginRuntime::new(limits, cache)?.with_validate_timeout(self.validate_timeout))
    }
}

/// `--call-timeout`: a human duration within the bounds a stage's `timeout` has.
// A `String` error: clap's value parser shows it as the argument's problem, and nothing else sees it.
fn parse_call_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if timeout < Duration::from_millis(10) {
        return Err("must be at least 10ms (deadlines are checked every 10ms)".into());
    }
    if timeout > MAX_INTERVAL {
        return Err(format!("must be at most {MAX_INTERVAL_TEXT}"));
    }
    Ok(timeout)
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("sluice"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("sluice"))
}

/// `sluice deploy PLUGIN FILE`: the upload, refused here when the engine would refuse it unread.
fn deploy(plugin: &str, file: &Path, query: &str, remote: &RemoteArgs) -> ExitCode {
    match std::fs::read(file) {
        Ok(bytes) if bytes.len() > runtime::MAX_PLUGIN_BYTES => {
            errln!(
                "error: {}: refused before upload: plugin `{plugin}`: too_large: the module is {} bytes; a plugin may be at most {} bytes",
                file.display(),
                bytes.len(),
                runtime::MAX_PLUGIN_BYTES
            );
            ExitCode::FAILURE
        }
        Ok(bytes) => remote_call(remote, &format!("/api/plugins/{plugin}/deploy{query}"), Some(bytes)),
        Err(err) => {
            errln!("error: cannot read {}: {err}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Run { quiet: true, .. });
    init_logging(cli.log.as_deref(), quiet);
    match cli.command {
        Command::Check { pipeline, plugins } => check(&pipeline, &plugins),
        Command::Plugin { command: PluginCommand::New { dir, lang, sdk, sdk_version } } => {
            let sdk = sdk.map(plugin::Sdk::Path).or(sdk_version.map(plugin::Sdk::Version));
            plugin::new(&dir, lang, sdk)
        }
        Command::Plugin { command: PluginCommand::Build { dir, plugins } } => plugin::build(&dir, &plugins),
        Command::Test { pipeline, inputs, batch_lines, expect, bless, plugins } => {
            let cut = batch_lines.map_or(Cut::Marker, |n| Cut::Lines(n as usize));
            test::run(&pipeline, &plugins, &inputs, cut, expect.as_deref(), bless)
        }
        Command::Deploy { plugin, abort_shadow: true, remote, .. } => {
            remote_call(&remote, &format!("/api/plugins/{plugin}/abort-shadow"), Some(Vec::new()))
        }
        Command::Deploy { plugin, file, shadow, promote_after, max_diff, remote, .. } => {
            let file = file.expect("clap requires FILE without --abort-shadow");
            let query = match (shadow, promote_after) {
                (false, _) => String::new(),
                (true, None) => "?shadow=true".to_string(),
                (true, Some(n)) => format!("?shadow=true&promote_after={n}&max_diff={max_diff}"),
            };
            deploy(&plugin, &file, &query, &remote)
        }
        Command::Promote { plugin, remote } => {
            remote_call(&remote, &format!("/api/plugins/{plugin}/promote"), Some(Vec::new()))
        }
        Command::Rollback { plugin, to, remote } => {
            let query = to.map(|hash| format!("?to={hash}")).unwrap_or_default();
            remote_call(&remote, &format!("/api/plugins/{plugin}/rollback{query}"), Some(Vec::new()))
        }
        Command::Status { cluster: false, remote } => remote_call(&remote, "/api/status", None),
        Command::Status { cluster: true, remote } => match remote_answer(&remote, "/api/status", None) {
            Ok(text) => match status::cluster_table(&text) {
                Ok(table) => {
                    outln!("{table}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    errln!("error: {}: {why}", remote.ui);
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::Pause { source, remote } => {
            remote_call(&remote, &format!("/api/sources/{source}/pause"), Some(Vec::new()))
        }
        Command::Resume { source, remote } => {
            remote_call(&remote, &format!("/api/sources/{source}/resume"), Some(Vec::new()))
        }
        Command::Run {
            pipeline,
            plugins,
            workers,
            no_hot_swap,
            ui,
            no_ui,
            token,
            tls_cert,
            tls_key,
            max_upload_mib,
            fresh,
            quiet: _,
            member,
        } => {
            let admin_token = match token.token() {
                Ok(token) => token,
                Err(why) => {
                    eprintln!("error: {why}");
                    return ExitCode::from(2);
                }
            };
            let mut options = RunOptions {
                watch_plugins: !no_hot_swap,
                fresh,
                admin_addr: (!no_ui).then_some(ui),
                admin_token,
                admin_tls: tls_cert.zip(tls_key).map(|(cert, key)| crate::admin::TlsFiles { cert, key }),
                max_upload: usize::from(max_upload_mib) << 20,
                member,
                ..RunOptions::default()
            };
            if let Some(workers) = workers {
                options.workers = workers;
            }
            run(&pipeline, &plugins, &options)
        }
    }
}

fn init_logging(filter: Option<&str>, quiet: bool) {
    let mut filter = filter
        .map(tracing_subscriber::EnvFilter::new)
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    if quiet {
        filter = filter.add_directive("sluice::batch=warn".parse().expect("a valid directive"));
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::LogWriter)
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// What to load a pipeline for: `check` also proves the directories a run writes writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Check,
    Run,
}

fn load(path: &Path, plugins: &PluginArgs, purpose: Purpose) -> Result<Pipeline, ExitCode> {
    let runtime = plugins.runtime().map_err(|err| {
        errln!("error: {err}");
        ExitCode::FAILURE
    })?;
    let loaded = match purpose {
        Purpose::Check => Pipeline::check(path, &runtime),
        Purpose::Run => Pipeline::load(path, &runtime),
    };
    loaded.map_err(|errors| {
        let n = errors.errors.len();
        errln!("{errors}");
        errln!("error: {} has {n} problem{}", path.display(), if n == 1 { "" } else { "s" });
        ExitCode::FAILURE
    })
}

fn check(path: &Path, plugins: &PluginArgs) -> ExitCode {
    let pipeline = match load(path, plugins, Purpose::Check) {
        Ok(pipeline) => pipeline,
        Err(code) => return code,
    };
    for warning in &pipeline.warnings {
        errln!("warning: {}: {}: {}", path.display(), warning.location, warning.message);
    }
    let graph = &pipeline.graph;
    outln!(
        "{}: ok: {}, {}, {}",
        path.display(),
        plural(graph.sources, "source"),
        plural(pipeline.file.config.stages.len(), "stage"),
        plural(graph.sinks.len(), "sink")
            + &if graph.dead_letters.is_empty() {
                String::new()
            } else {
                format!(", {}", plural(graph.dead_letters.len(), "dead-letter sink"))
            }
    );
    for (index, name, file) in pipeline.registry.plugins() {
        let version = pipeline.registry.current(index);
        outln!("  plugin {name}: {} (sha256 {}): {}", file.display(), version.short_hash(), version.function_list());
    }
    for stream in &graph.streams[graph.sources..] {
        outln!("  stage {}: {}", stream.name, stream.ty);
    }
    for line in guarantees(&pipeline) {
        outln!("  {line}");
    }
    ExitCode::SUCCESS
}

/// One line per source → sink path: `path files (directory) → out (file): exactly once`.
fn guarantees(pipeline: &Pipeline) -> Vec<String> {
    let config = &pipeline.file.config;
    // A cluster's progress is its partitions' logs in the checkpoint store.
    let checkpointed = config.pipeline.checkpoint_dir.is_some() || config.cluster.is_some();
    let graph = &pipeline.graph;
    let sinks = graph.sinks.iter().map(|node| (&node.config, graph.sources_of(node.input)));
    let letters = graph.dead_letters.iter().enumerate().map(|(i, c)| (c, graph.sources_of_dead_letter(i)));
    let mut lines = Vec::new();
    for (sink, sources) in sinks.chain(letters) {
        let (sink_guarantee, why) = sink.probe_guarantee(&config.pipeline.name);
        for source in sources {
            let source = &config.sources[source];
            let guarantee = sources::end_to_end(source.guarantee(), sink_guarantee, checkpointed);
            let mut notes: Vec<&str> = why.iter().map(String::as_str).collect();
            notes.extend(source.guarantee_note());
            if !checkpointed {
                notes.push("no checkpoint_dir");
            }
            lines.push(format!(
                "path {} ({}) → {} ({}): {}{}",
                source.name(),
                source.describe(),
                sink.name(),
                sink.kind(),
                guarantee.name(),
                if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) }
            ));
        }
    }
    lines
}

/// Calls the admin API of a running engine: POST with `body`, else GET; prints the JSON answer.
fn remote_call(remote: &RemoteArgs, path: &str, body: Option<Vec<u8>>) -> ExitCode {
    match remote_answer(remote, path, body) {
        Ok(text) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&text)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(text);
            outln!("{pretty}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// A TLS client that trusts the CA certificates in `path` (PEM) and no other.
fn client_tls(path: &Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let pem = std::fs::read(path).map_err(|err| format!("cannot read it: {err}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| format!("expected PEM certificates: {err}"))?;
        roots.add(cert).map_err(|err| format!("not a CA certificate rustls can use: {err}"))?;
    }
    if roots.is_empty() {
        return Err("expected PEM certificates (-----BEGIN CERTIFICATE-----), found none".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// The answer of the admin API to a call (see [`remote_call`]); a failure is reported here.
fn remote_answer(remote: &RemoteArgs, path: &str, body: Option<Vec<u8>>) -> Result<String, ExitCode> {
    let url = match remote.ui.starts_with("http://") || remote.ui.starts_with("https://") {
        true => format!("{}{path}", remote.ui.trim_end_matches('/')),
        false => format!("http://{}{path}", remote.ui),
    };
    let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120));
    if let Some(path) = &remote.ca_cert {
        let config = client_tls(path).map_err(|why| {
            eprintln!("error: --ca-cert {}: {why}", path.display());
            ExitCode::from(2)
        })?;
        agent = agent.tls_config(config);
    }
    let agent = agent.build();
    let request = match &body {
        Some(_) => agent.post(&url),
        None => agent.get(&url),
    };
    let token = remote.token.token().map_err(|why| {
        eprintln!("error: {why}");
        ExitCode::from(2)
    })?;
    let request = match &token {
        Some(token) => request.set("Authorization", &format!("Bearer {token}")),
        None => request,
    };
    let response = match body {
        Some(bytes) => request.send_bytes(&bytes),
        None => request.call(),
    };
    match response {
        Ok(response) => Ok(response.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, response)) => {
            let text = response.into_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or(text);
            errln!("error: {url}: {code}: {message}");
            Err(ExitCode::FAILURE)
        }
        Err(err) => {
            errln!(
                "error: cannot reach a running sluice at {} ({err}); is `sluice run` serving there (--ui)?",
                remote.ui
            );
            Err(ExitCode::FAILURE)
        }
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn run(path: &Path, plugins: &PluginArgs, options: &RunOptions) -> ExitCode {
    let pipeline = match load(path, plugins, Purpose::Run) {
        Ok(pipeline) => pipeline,
        Err(code) => return code,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Err(err) = handle_signals(stop_tx) {
        errln!("error: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    match pipeline.run(options, stop_rx) {
        Ok(report) => {
            tracing::info!(
                batches = report.batches,
                failed_batches = report.failed_batches,
                records = report.records,
                invalid_lines = report.invalid_lines,
                late_records = report.late_records,
                diverted_records = report.diverted_records,
                replayed_batches = report.replayed_batches,
                swaps = report.swaps,
                auto_rollbacks = report.auto_rollbacks,
                "pipeline stopped"
            );
            if let Some(fatal) = report.fatal {
                if pipeline.file.config.pipeline.checkpoint_dir.is_some() {
                    errln!("error: {fatal}; stopped without checkpointing it: `sluice run` again replays it");
                } else {
                    errln!(
                        "error: {fatal}; stopped: without checkpoint_dir this batch's output is lost (set checkpoint_dir so a restart replays it)"
                    );
                }
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            errln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT/SIGTERM: stop receiving and drain. A second SIGINT (Ctrl-C again) exits at once;
/// repeated SIGTERMs do not (supervisors such as `timeout` signal the child and then its whole
/// process group, so one stop request can arrive twice).
fn handle_signals(stop: watch::Sender<bool>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Registered before this returns: a SIGTERM from then on is a stop, never the default exit.
    let (mut term, mut int) = {
        let _runtime = signals.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    std::thread::Builder::new().name("sluice-signals".into()).spawn(move || {
        signals.block_on(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("stopping: receivers stop, received batches finish, then exit (Ctrl-C again to exit now)");
            let _ = stop.send(true);
            loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("already stopping"),
                    _ = int.recv() => break,
                }
            }
            tracing::warn!("second SIGINT: exiting without draining");
            std::process::exit(130);
        });
    })?;
    Ok(())
}
