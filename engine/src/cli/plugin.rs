//! `sluice plugin new` and `sluice plugin build`: the plugin author's start and build. `new`
//! writes a plugin from `engine/templates/` — a Rust crate (`plugin/`), or a Python
//! (`plugin-py/`) or JavaScript (`plugin-js/`) directory with the guest SDK copied in — with
//! functions of each common kind and their unit tests, and the same sample pipeline, input
//! and golden files for all three; `build` compiles one (Rust for the wasm target, installing
//! it with rustup when missing; Python and JavaScript into a component, `guest.rs`) and loads
//! the result as the engine would.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use super::guest::{self, Guest};
use super::{PluginArgs, output};
use crate::runtime;

/// The target plugins are built for.
const TARGET: &str = "wasm32-unknown-unknown";

/// The language of a new plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Lang {
    /// A Rust crate (an ABI 1 module; `sluice-sdk`'s `abi2` feature makes a component).
    Rust,
    /// A Python module, `app.py` (an ABI 2 component, built with componentize-py).
    Python,
    /// A JavaScript module, `app.js` (an ABI 2 component, built with componentize-qjs).
    Js,
}

/// Files of every new plugin: path in it, template text.
const SAMPLE: &[(&str, &str)] = &[
    ("pipeline.toml", include_str!("../../templates/plugin/pipeline.toml")),
    ("input.txt", include_str!("../../templates/plugin/input.txt")),
    ("expected/batch_counts.jsonl", include_str!("../../templates/plugin/expected/batch_counts.jsonl")),
    ("expected/running_totals.jsonl", include_str!("../../templates/plugin/expected/running_totals.jsonl")),
];

/// The files of a new Rust plugin crate.
const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../templates/plugin/Cargo.toml.in")),
    ("src/lib.rs", include_str!("../../templates/plugin/src/lib.rs")),
    ("README.md", include_str!("../../templates/plugin/README.md")),
    (".gitignore", include_str!("../../templates/plugin/gitignore")),
];

/// The files of a new Python plugin (the SDK is copied in besides).
const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/plugin-py/app.py")),
    ("test_app.py", include_str!("../../templates/plugin-py/test_app.py")),
    ("README.md", include_str!("../../templates/plugin-py/README.md")),
    (".gitignore", include_str!("../../templates/plugin-py/gitignore")),
];

/// The files of a new JavaScript plugin (the SDK is copied in besides).
const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("../../templates/plugin-js/app.js")),
    ("test/app.test.js", include_str!("../../templates/plugin-js/test/app.test.js")),
    ("package.json", include_str!("../../templates/plugin-js/package.json")),
    ("README.md", include_str!("../../templates/plugin-js/README.md")),
    (".gitignore", include_str!("../../templates/plugin-js/gitignore")),
];

impl Lang {
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Rust => RUST,
            Self::Python => PYTHON,
            Self::Js => JS,
        }
    }

    fn guest(self) -> Option<Guest> {
        match self {
            Self::Rust => None,
            Self::Python => Some(Guest::Python),
            Self::Js => Some(Guest::Js),
        }
    }

    /// Where `plugin build` puts the plugin `file` (in its directory).
    fn wasm(self, file: &str) -> String {
        match self {
            Self::Rust => format!("target/{TARGET}/release/{file}.wasm"),
            Self::Python | Self::Js => format!("target/{file}.wasm"),
        }
    }

    /// How the new plugin's tests run.
    fn test_command(self) -> &'static str {
        match self {
            Self::Rust => "cargo test",
            Self::Python => "python3 -m unittest",
            Self::Js => "node --test",
        }
    }
}

/// Where the crate's `sluice-sdk` comes from.
#[derive(Debug)]
pub(super) enum Sdk {
    /// A directory holding the SDK's Cargo.toml.
    Path(PathBuf),
    /// A version requirement on the registry.
    Version(String),
}

/// `sluice plugin new DIR --lang LANG`: the plugin named after DIR's last component.
pub(super) fn new(dir: &Path, lang: Lang, sdk: Option<Sdk>) -> ExitCode {
    match write_plugin(dir, lang, sdk) {
        Ok(name) => {
            outln!("created plugin `{name}` in {}", dir.display());
            outln!("next: cd {} && {} && sluice plugin build", dir.display(), lang.test_command());
            outln!("then: sluice test pipeline.toml --input lines=input.txt --expect expected");
            ExitCode::SUCCESS
        }
        Err(why) => {
            errln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

fn write_plugin(dir: &Path, lang: Lang, sdk: Option<Sdk>) -> Result<String, String> {
    // `plugin new .` (an empty directory) is named after the directory itself.
    let named = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = named.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if let Some(problem) = name_problem(&name) {
        return Err(format!("{}: {problem}", dir.display()));
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{}: exists and is not empty", dir.display()));
    }
    let sdk = match (lang, sdk) {
        (Lang::Python | Lang::Js, Some(_)) => {
            return Err(
                "--sdk and --sdk-version are for Rust plugins (a Python or JS plugin gets its SDK copied in)".into()
            );
        }
        (Lang::Python | Lang::Js, None) => String::new(),
        (Lang::Rust, Some(Sdk::Version(version))) => format!("sluice-sdk = \"{version}\""),
        (Lang::Rust, Some(Sdk::Path(path))) => sdk_path(&path)?,
        (Lang::Rust, None) => sdk_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")).map_err(|why| {
            format!("{why}: pass --sdk PATH (the sdk/ directory of a Sluice checkout) or --sdk-version VERSION")
        })?,
    };
    let file = name.replace('-', "_");
    let wasm = lang.wasm(&file);
    let fill = |text: &str| {
        text.replace("{{name}}", &name).replace("{{file}}", &file).replace("{{sdk}}", &sdk).replace("{{wasm}}", &wasm)
    };
    let texts: Vec<(&str, String)> =
        SAMPLE.iter().chain(lang.files()).map(|(path, text)| (*path, fill(text))).collect();
    let texts: Vec<(&str, &str)> = texts.iter().map(|(path, text)| (*path, text.as_str())).collect();
    guest::write_files(dir, &texts)?;
    if let Some(guest) = lang.guest() {
        guest::write_files(&dir.join("sluice"), guest.sdk())?;
    }
    Ok(name)
}

/// The dependency line for the SDK at `path`, which must hold the SDK's Cargo.toml.
fn sdk_path(path: &Path) -> Result<String, String> {
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"sluice-sdk\"") {
        return Err(format!("no Sluice SDK at {}", path.display()));
    }
    let path = path.canonicalize().map_err(|err| format!("{}: {err}", path.display()))?;
    // TOML's literal string: no escapes, so any path without a `'` is written as it is.
    Ok(format!("sluice-sdk = {{ path = '{}' }}", path.display()))
}

/// Why `name` cannot name a plugin crate (and its `.wasm`), if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Some("a plugin's name starts with a lower-case letter (a-z)");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return Some("a plugin's name has only a-z, 0-9, `_` and `-`");
    }
    None
}

/// `sluice plugin build [DIR]`: a Rust crate (`Cargo.toml`), or a Python (`app.py`) or
/// JavaScript (`app.js`) plugin directory.
pub(super) fn build(dir: &Path, plugins: &PluginArgs) -> ExitCode {
    let wasm = match built(dir) {
        Ok(wasm) => wasm,
        Err(why) => {
            errln!("error: {why}");
            return ExitCode::FAILURE;
        }
    };
    // Loaded as a pipeline allowing it everything would: a plugin that needs `[capabilities]`
    // builds too (a pipeline refuses it, naming what to allow, without them).
    let all = runtime::Capabilities { clocks: true, random: true };
    let named = |path: &PathBuf| path.file_stem().and_then(|n| n.to_str()).unwrap_or("plugin").to_string();
    let allowed = wasm.iter().map(|path| (named(path), all)).collect();
    let runtime = match plugins.runtime().map(|runtime| runtime.with_capabilities(allowed)) {
        Ok(runtime) => runtime,
        Err(err) => {
            errln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for path in wasm {
        let name = named(&path);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        match runtime.load(&name, &path) {
            Ok(version) => {
                outln!("{} ({size} bytes, sha256 {})", path.display(), version.short_hash());
                let width = version.functions.keys().map(String::len).max().unwrap_or(0);
                for info in version.functions.values() {
                    outln!("  {:<width$}  {:<14} {} -> {}", info.name, info.kind.name(), info.input, info.output);
                }
            }
            Err(err) => {
                errln!("error: {}: built, but the engine refuses it: {err}", path.display());
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Builds the plugin in `dir`, whatever its language: the `.wasm` files made.
fn built(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        ensure_target()?;
        return cargo_build(&manifest);
    }
    let Some(guest) = Guest::of(dir) else {
        return Err(format!(
            "{}: no Cargo.toml, app.py or app.js: give the directory of a plugin (`sluice plugin new` makes one)",
            dir.display()
        ));
    };
    let named = dir.canonicalize().map_err(|err| format!("{}: {err}", dir.display()))?;
    let name = named.file_name().and_then(|n| n.to_str()).unwrap_or("plugin");
    Ok(vec![guest::build(guest, &named, &name.replace('-', "_"))?])
}

/// Installs the wasm target with rustup when it is missing (no rustup: cargo says what is wrong).
fn ensure_target() -> Result<(), String> {
    let Ok(listed) = Command::new("rustup").args(["target", "list", "--installed"]).output() else { return Ok(()) };
    if String::from_utf8_lossy(&listed.stdout).lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    errln!("installing the {TARGET} target (rustup target add {TARGET})");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("rustup target add {TARGET} failed ({status})")),
        Err(err) => Err(format!("cannot run rustup: {err}")),
    }
}

/// Builds `manifest`'s crate for the wasm target (cargo's diagnostics on stderr) into the
/// crate's own `target/`, where its pipeline looks (whatever CARGO_TARGET_DIR says); the
/// `.wasm` files it made.
fn cargo_build(manifest: &Path) -> Result<Vec<PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET, "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(manifest.parent().unwrap_or(Path::new(".")).join("target"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        return Err(format!("cargo build of {} failed ({})", manifest.display(), output.status));
    }
    let manifest = manifest.canonicalize().map_err(|err| format!("{}: {err}", manifest.display()))?;
    let mut wasm = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let ours =
            message["manifest_path"].as_str().is_some_and(|p| Path::new(p).canonicalize().is_ok_and(|p| p == manifest));
        if message["reason"] != "compiler-artifact" || !ours {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
        let built =
            files.filter(|f| f.ends_with(".wasm")).map(|f| Path::new(f).canonicalize().unwrap_or_else(|_| f.into()));
        wasm.extend(built);
    }
    if wasm.is_empty() {
        return Err(format!(
            "{}: cargo built no .wasm: a plugin crate has `crate-type = [\"cdylib\", \"rlib\"]` under [lib]",
            manifest.display()
        ));
    }
    Ok(wasm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_name_is_lower_case_letters_digits_and_dashes() {
        assert_eq!(name_problem("top-k_2"), None);
        assert!(name_problem("2fast").is_some());
        assert!(name_problem("Top").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem("").is_some());
    }

    #[test]
    fn a_new_crate_is_refused_over_a_non_empty_directory_and_without_an_sdk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let err = write_plugin(dir.path(), Lang::Rust, None).unwrap_err();
        assert!(err.contains("exists and is not empty") || err.contains("a plugin's name"), "{err}");
        let target = dir.path().join("fresh");
        let err = write_plugin(&target, Lang::Rust, Some(Sdk::Path(dir.path().to_path_buf()))).unwrap_err();
        assert!(err.starts_with("no Sluice SDK at"), "{err}");
        assert_eq!(write_plugin(&target, Lang::Rust, Some(Sdk::Version("0.1".into()))).unwrap(), "fresh");
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"fresh\"") && manifest.contains("sluice-sdk = \"0.1\""), "{manifest}");
        let pipeline = std::fs::read_to_string(target.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("fresh = \"target/wasm32-unknown-unknown/release/fresh.wasm\""), "{pipeline}");
    }

    #[test]
    fn a_new_python_or_js_plugin_has_its_sdk_and_the_shared_sample() {
        let dir = tempfile::tempdir().unwrap();
        let py = dir.path().join("stats-py");
        assert_eq!(write_plugin(&py, Lang::Python, None).unwrap(), "stats-py");
        assert!(py.join("sluice/__init__.py").is_file() && py.join("app.py").is_file());
        let pipeline = std::fs::read_to_string(py.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("stats-py = \"target/stats_py.wasm\""), "{pipeline}");
        let js = dir.path().join("stats");
        write_plugin(&js, Lang::Js, None).unwrap();
        assert!(js.join("sluice/sluice.js").is_file() && js.join("test/app.test.js").is_file());
        assert_eq!(Guest::of(&js), Some(Guest::Js));
        let err = write_plugin(&dir.path().join("other"), Lang::Js, Some(Sdk::Version("0.1".into()))).unwrap_err();
        assert!(err.contains("are for Rust plugins"), "{err}");
    }
}
