//! `sluice plugin new` and `sluice plugin build`: the plugin author's start and build. `new`
//! writes a crate from `engine/templates/plugin/` (functions of each common kind with unit
//! tests, a sample pipeline, input and golden files); `build` compiles a crate for the wasm
//! target (installing it with rustup when missing) and loads the result as the engine would.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use super::{PluginArgs, output};

/// The target plugins are built for.
const TARGET: &str = "wasm32-unknown-unknown";

/// The files of a new plugin crate: path in the crate, template text.
const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../templates/plugin/Cargo.toml.in")),
    ("src/lib.rs", include_str!("../../templates/plugin/src/lib.rs")),
    ("pipeline.toml", include_str!("../../templates/plugin/pipeline.toml")),
    ("input.txt", include_str!("../../templates/plugin/input.txt")),
    ("expected/batch_counts.jsonl", include_str!("../../templates/plugin/expected/batch_counts.jsonl")),
    ("expected/running_totals.jsonl", include_str!("../../templates/plugin/expected/running_totals.jsonl")),
    ("README.md", include_str!("../../templates/plugin/README.md")),
    (".gitignore", include_str!("../../templates/plugin/gitignore")),
];

/// Where the crate's `sluice-sdk` comes from.
#[derive(Debug)]
pub(super) enum Sdk {
    /// A directory holding the SDK's Cargo.toml.
    Path(PathBuf),
    /// A version requirement on the registry.
    Version(String),
}

/// `sluice plugin new DIR`: the crate named after DIR's last component.
pub(super) fn new(dir: &Path, sdk: Option<Sdk>) -> ExitCode {
    match write_crate(dir, sdk) {
        Ok(name) => {
            outln!("created plugin `{name}` in {}", dir.display());
            outln!("next: cd {} && cargo test && sluice plugin build", dir.display());
            outln!("then: sluice test pipeline.toml --input lines=input.txt --expect expected");
            ExitCode::SUCCESS
        }
        Err(why) => {
            errln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

fn write_crate(dir: &Path, sdk: Option<Sdk>) -> Result<String, String> {
    // `plugin new .` (an empty directory) is named after the directory itself.
    let named = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = named.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if let Some(problem) = name_problem(&name) {
        return Err(format!("{}: {problem}", dir.display()));
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{}: exists and is not empty", dir.display()));
    }
    let sdk = match sdk {
        Some(Sdk::Version(version)) => format!("sluice-sdk = \"{version}\""),
        Some(Sdk::Path(path)) => sdk_path(&path)?,
        None => sdk_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")).map_err(|why| {
            format!("{why}: pass --sdk PATH (the sdk/ directory of a Sluice checkout) or --sdk-version VERSION")
        })?,
    };
    let file = name.replace('-', "_");
    for (path, text) in TEMPLATE {
        let target = dir.join(path);
        let text = text.replace("{{name}}", &name).replace("{{file}}", &file).replace("{{sdk}}", &sdk);
        let written =
            target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&target, text));
        written.map_err(|err| format!("cannot write {}: {err}", target.display()))?;
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

/// `sluice plugin build [DIR]`.
pub(super) fn build(dir: &Path, plugins: &PluginArgs) -> ExitCode {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        errln!("error: {}: no Cargo.toml: give the plugin crate's directory", dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(why) = ensure_target() {
        errln!("error: {why}");
        return ExitCode::FAILURE;
    }
    let wasm = match cargo_build(&manifest) {
        Ok(wasm) => wasm,
        Err(why) => {
            errln!("error: {why}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match plugins.runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            errln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for path in wasm {
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("plugin").to_string();
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
        let err = write_crate(dir.path(), None).unwrap_err();
        assert!(err.contains("exists and is not empty") || err.contains("a plugin's name"), "{err}");
        let target = dir.path().join("fresh");
        let err = write_crate(&target, Some(Sdk::Path(dir.path().to_path_buf()))).unwrap_err();
        assert!(err.starts_with("no Sluice SDK at"), "{err}");
        assert_eq!(write_crate(&target, Some(Sdk::Version("0.1".into()))).unwrap(), "fresh");
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"fresh\"") && manifest.contains("sluice-sdk = \"0.1\""), "{manifest}");
        let pipeline = std::fs::read_to_string(target.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("fresh = \"target/wasm32-unknown-unknown/release/fresh.wasm\""), "{pipeline}");
    }
}
