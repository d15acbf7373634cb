//! What every end-to-end test needs: the plugins built for wasm, a line server, the `sluice`
//! binary run on a pipeline in a temporary directory, and a ledger of the file sink's output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The directory of built plugins (`target/plugins`), building them once per test run with the
/// same script the README uses.
pub fn plugins() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(repo().join("scripts/build-plugins.sh")).status().expect("run build-plugins.sh");
            assert!(status.success(), "scripts/build-plugins.sh failed");
            repo().join("target/plugins")
        })
        .clone()
}

pub fn plugin(name: &str) -> PathBuf {
    plugins().join(format!("{name}.wasm"))
}

/// A deterministic corpus: `lines` lines of `words` words from a small vocabulary.
pub fn corpus(lines: usize, words: usize, seed: u64) -> Vec<String> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..lines)
        .map(|_| {
            (0..words)
                .map(|_| {
                    let r = next() % 1000;
                    // Skewed: small ids are frequent, as in real text.
                    format!("w{}", (r * r) / 1000)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Word counts of `lines`, the reference the engine's output must equal.
pub fn count_words<'a>(lines: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        for word in line.split_whitespace() {
            *counts.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Lines of 10 words in `chunks` chunks sent `pause` apart (a stream spanning many batches),
/// and their word counts.
pub fn paced(chunks: usize, lines_per_chunk: usize, pause: Duration, seed: u64) -> (LineServer, BTreeMap<String, u64>) {
    let lines = corpus(chunks * lines_per_chunk, 10, seed);
    let expected = count_words(&lines);
    let feed = lines.chunks(lines_per_chunk).map(join_lines).collect();
    (LineServer::start(Feed::Paced(feed, pause)), expected)
}

/// A TCP server on a free loopback port that serves lines to the first client.
pub struct LineServer {
    pub address: String,
    handle: Option<JoinHandle<()>>,
}

pub enum Feed {
    /// Send everything at once, then close.
    All(Vec<u8>),
    /// Send each chunk, pausing after it, then close.
    Paced(Vec<Vec<u8>>, Duration),
    /// Send everything, then keep the connection open until the client closes it.
    HoldOpen(Vec<u8>),
}

impl LineServer {
    pub fn start(feed: Feed) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            match feed {
                Feed::All(bytes) => conn.write_all(&bytes).unwrap(),
                Feed::HoldOpen(bytes) => {
                    conn.write_all(&bytes).unwrap();
                    // Returns when the client closes the connection.
                    let _ = conn.read(&mut [0u8; 1]);
                    return;
                }
                Feed::Paced(chunks, pause) => {
                    for chunk in chunks {
                        if conn.write_all(&chunk).is_err() {
                            return; // the engine stopped reading (a test that ends early)
                        }
                        std::thread::sleep(pause);
                    }
                }
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
        });
        Self { address, handle: Some(handle) }
    }

    pub fn lines(lines: &[String]) -> Self {
        Self::start(Feed::All(join_lines(lines)))
    }

    pub fn join(mut self) {
        self.handle.take().unwrap().join().unwrap();
    }
}

/// A server that writes the same short line as fast as the client reads, until it closes.
pub fn endless_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let chunk = "a few words on a line\n".repeat(4096);
            while conn.write_all(chunk.as_bytes()).is_ok() {}
        }
    });
    address
}

pub fn join_lines(lines: &[String]) -> Vec<u8> {
    let mut bytes = lines.join("\n").into_bytes();
    bytes.push(b'\n');
    bytes
}

/// A temporary directory with a pipeline file, its plugins and its output.
pub struct Workdir {
    pub dir: tempfile::TempDir,
    /// More environment for every `sluice` started here (e.g. AWS credentials).
    env: Mutex<Vec<(String, String)>>,
}

impl Workdir {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), env: Mutex::new(Vec::new()) }
    }

    /// Sets `key` in the environment of every `sluice` started from now on.
    pub fn set_env(&self, key: &str, value: &str) {
        self.env.lock().unwrap().push((key.to_string(), value.to_string()));
    }

    fn command(&self) -> Command {
        let mut command = Command::new(SLUICE);
        command
            .current_dir(self.dir.path())
            .env("SLUICE_CACHE_DIR", self.path("cache"))
            .env("SLUICE_CACHE_KEY_FILE", self.path("cache.key"))
            .env("RUST_LOG", "info");
        command.envs(self.env.lock().unwrap().iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Copies a built plugin in as `as_name`.wasm.
    pub fn add_plugin(&self, plugin_name: &str, as_name: &str) -> PathBuf {
        let to = self.path(&format!("{as_name}.wasm"));
        std::fs::copy(plugin(plugin_name), &to).unwrap();
        to
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `sluice <args>` to completion in this directory.
    pub fn sluice(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `sluice <args>` as `sluice <args> | head -c <n>` would, for standard output and
    /// error each: a reader takes at most `stdout` (`stderr`) bytes, then closes its end of the
    /// pipe; 0 closes it before sluice starts, so its first write already fails. Returns the exit
    /// code (None: killed by a signal) and what the readers took; panics after `timeout`.
    pub fn sluice_into_closed_pipes(
        &self,
        args: &[&str],
        stdout: usize,
        stderr: usize,
        timeout: Duration,
    ) -> (Option<i32>, String, String) {
        let (out_read, out_write) = std::io::pipe().unwrap();
        let (err_read, err_write) = std::io::pipe().unwrap();
        let head = |pipe: std::io::PipeReader, keep: usize| {
            let pipe = (keep > 0).then_some(pipe); // dropped now: closed before sluice starts
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                if let Some(pipe) = pipe {
                    let _ = pipe.take(keep as u64).read_to_end(&mut taken);
                }
                String::from_utf8_lossy(&taken).into_owned()
            })
        };
        let (out_head, err_head) = (head(out_read, stdout), head(err_read, stderr));
        // The command (holding our copies of the write ends) is dropped once spawned.
        let mut child = self
            .command()
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out_write)
            .stderr(err_write)
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!("sluice {args:?} did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), out_head.join().unwrap(), err_head.join().unwrap())
    }

    /// Starts `sluice run <args>`, collecting its stderr.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self
            .command()
            .arg("run")
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Running { child, log, reader: Some(reader) }
    }

    /// Sum of the file sink's `[word, count]` records over every batch file in `dir`.
    pub fn ledger(&self, dir: &str) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for (_, records) in self.batches(dir) {
            for record in records {
                let pair = record.as_array().expect("a [key, value] record");
                let word = pair[0].as_str().unwrap().to_string();
                *counts.entry(word).or_insert(0) += pair[1].as_u64().unwrap();
            }
        }
        counts
    }

    /// Every batch file of the file sink in `dir`: batch time → records.
    pub fn batches(&self, dir: &str) -> BTreeMap<u64, Vec<serde_json::Value>> {
        let mut batches = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.path(dir)) else { return batches };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let Some(time) = name.strip_prefix("batch-").and_then(|n| n.strip_suffix(".jsonl")) else {
                assert!(name.starts_with('.'), "unexpected file {name} in the sink directory");
                continue;
            };
            let mut text = String::new();
            std::fs::File::open(&path).unwrap().read_to_string(&mut text).unwrap();
            let records = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
            batches.insert(time.parse().unwrap(), records);
        }
        batches
    }
}

/// A running `sluice run`.
pub struct Running {
    pub child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process's resident memory, MiB (0 once it has exited).
    pub fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0);
        kib / 1024
    }

    /// Each completed batch's scheduling delay (ms), from the log.
    pub fn scheduling_delays(&self) -> Vec<u64> {
        self.log()
            .lines()
            .filter_map(|l| l.split("scheduling delay ").nth(1)?.split(' ').next()?.parse().ok())
            .collect()
    }

    /// Waits until the log contains `needle`, or panics with the log after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(start.elapsed() < timeout, "timed out waiting for {needle:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit (panics after `timeout`), returning the exit code and the whole log.
    pub fn finish(mut self, timeout: Duration) -> (i32, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.reader.take().unwrap().join().unwrap();
                return (status.code().unwrap_or(-1), self.log());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("sluice did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The word count pipeline of the contract, reading `address`, writing files to `out/`.
pub fn wordcount_pipeline(address: &str, plugin_file: &str, batch: &str, block: &str) -> String {
    format!(
        r#"[pipeline]
name = "wordcount-test"
batch_interval = "{batch}"
block_interval = "{block}"

[plugins]
wordcount = "{plugin_file}"

[[sources]]
name = "lines"
type = "socket"
address = "{address}"

[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "wordcount"
function = "split_words"

[[stages]]
name = "counts"
input = "words"
op = "reduce_by_key"
plugin = "wordcount"
function = "sum"

[[sinks]]
name = "files"
input = "counts"
type = "file"
path = "out"
"#
    )
}

/// How many `kill -9`s a crash test deals: `default`, or `$SLUICE_CRASH_KILLS`
/// (`scripts/faults.sh` asks for 50 on every path).
pub fn kills(default: usize) -> usize {
    let kills = std::env::var("SLUICE_CRASH_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    println!("kill -9s: {kills} (SLUICE_CRASH_KILLS=N changes it)");
    kills
}

/// A small deterministic generator for kill moments (seed printed, so a failure can be rerun).
pub struct Lcg(u64);

impl Lcg {
    pub fn seeded() -> Self {
        let seed = std::env::var("SLUICE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("crash schedule seed: {seed} (SLUICE_CRASH_SEED={seed} repeats it)");
        Self(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Waits until `done`, or panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Batches with records that a run replayed (its summary lines say "(replayed)").
pub fn replayed_with_records(log: &str) -> usize {
    log.lines().filter(|l| l.contains("(replayed)") && !l.contains(": 0 records")).count()
}

/// Waits for a background test client that prints "acked N" (Kafka, Kinesis); returns N.
pub fn acked(child: Child) -> u64 {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "producer failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().strip_prefix("acked ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("producer said {text}"))
}
