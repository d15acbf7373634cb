//! Plugins in Python and JavaScript for `sluice plugin new --lang` and `sluice plugin build`:
//! the guest SDKs (`sdk/python/sluice/`, `sdk/js/`) and the WIT contract (`sdk/wit/`) this
//! binary carries, so a plugin directory anywhere on disk gets its SDK copied in and builds
//! without a checkout; and the tools that turn such a directory into an ABI 2 component
//! (componentize-py, componentize-qjs), found through an environment variable or installed
//! into the cache directory by the project's own setup scripts, which this binary carries too.
//!
//! **Owns:** the embedded SDK and WIT files, finding the tools, the component build of a
//! Python or JavaScript plugin directory. **Never touches:** the Rust build and loading the
//! result (`plugin.rs`), the engine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A guest language other than Rust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guest {
    Python,
    Js,
}

/// The WIT contract, as `sdk/wit/sluice.wit`.
const WIT: &str = include_str!("../../../sdk/wit/sluice.wit");

/// The Python SDK: the package `sluice/` (paths inside it).
const PYTHON_SDK: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../sdk/python/sluice/__init__.py")),
    ("codec.py", include_str!("../../../sdk/python/sluice/codec.py")),
    ("component.py", include_str!("../../../sdk/python/sluice/component.py")),
    ("errors.py", include_str!("../../../sdk/python/sluice/errors.py")),
    ("functions.py", include_str!("../../../sdk/python/sluice/functions.py")),
    ("host.py", include_str!("../../../sdk/python/sluice/host.py")),
    ("local.py", include_str!("../../../sdk/python/sluice/local.py")),
    ("text.py", include_str!("../../../sdk/python/sluice/text.py")),
    ("typedesc.py", include_str!("../../../sdk/python/sluice/typedesc.py")),
    ("README.md", include_str!("../../../sdk/python/README.md")),
];

/// The JavaScript SDK, as `sluice/` of a plugin directory.
const JS_SDK: &[(&str, &str)] = &[
    ("sluice.js", include_str!("../../../sdk/js/sluice.js")),
    ("component.js", include_str!("../../../sdk/js/component.js")),
    ("README.md", include_str!("../../../sdk/js/README.md")),
];

impl Guest {
    /// The language of the plugin directory `dir`, by its entry module.
    pub(super) fn of(dir: &Path) -> Option<Self> {
        if dir.join("app.py").is_file() {
            Some(Self::Python)
        } else if dir.join("app.js").is_file() {
            Some(Self::Js)
        } else {
            None
        }
    }

    /// The SDK's files as a plugin directory holds them, under `sluice/`.
    pub(super) fn sdk(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Python => PYTHON_SDK,
            Self::Js => JS_SDK,
        }
    }

    fn tool_name(self) -> &'static str {
        match self {
            Self::Python => "componentize-py",
            Self::Js => "componentize-qjs",
        }
    }

    /// The variable naming the tool's command, which overrides the cached install.
    fn tool_variable(self) -> &'static str {
        match self {
            Self::Python => "SLUICE_COMPONENTIZE_PY",
            Self::Js => "SLUICE_COMPONENTIZE_QJS",
        }
    }

    /// The project's setup script for the tool: installs it into the cache directory (once)
    /// and prints its path.
    fn setup_script(self) -> &'static str {
        match self {
            Self::Python => include_str!("../../../scripts/setup-python-guests.sh"),
            Self::Js => include_str!("../../../scripts/setup-js-guests.sh"),
        }
    }

    /// The tool's command: `$SLUICE_COMPONENTIZE_*`, else what the setup script installed
    /// (its progress goes to stderr).
    fn tool(self) -> Result<PathBuf, String> {
        if let Some(command) = std::env::var_os(self.tool_variable()).filter(|c| !c.is_empty()) {
            return Ok(command.into());
        }
        // From a file, stdin closed: nothing the script runs can read the script as input.
        let mut script = tempfile::NamedTempFile::new().map_err(|err| format!("cannot write a setup script: {err}"))?;
        script
            .write_all(self.setup_script().as_bytes())
            .map_err(|err| format!("cannot write a setup script: {err}"))?;
        let output = Command::new("bash")
            .arg(script.path())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|err| format!("cannot run bash to install {}: {err}", self.tool_name()))?;
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        match (output.status.success(), path.is_empty()) {
            (true, false) => Ok(path.into()),
            _ => Err(format!(
                "cannot install {} ({}); install it yourself and name it in {}",
                self.tool_name(),
                output.status,
                self.tool_variable()
            )),
        }
    }
}

/// Builds the plugin directory `dir` into the component `dir/target/<file>.wasm`, written
/// whole then renamed; the tool's diagnostics go to stderr. Its SDK is `dir/sluice/` (as
/// `plugin new` copied it), else the one this binary carries.
pub(super) fn build(guest: Guest, dir: &Path, file: &str) -> Result<PathBuf, String> {
    let tool = guest.tool()?;
    let work = tempfile::tempdir().map_err(|err| format!("cannot make a build directory: {err}"))?;
    write_files(&work.path().join("wit"), &[("sluice.wit", WIT)])?;
    let built = work.path().join("out.wasm");
    let mut command = Command::new(&tool);
    match guest {
        Guest::Python => {
            command.arg("-d").arg(work.path().join("wit")).args(["-w", "plugin", "componentize", "--stub-wasi"]);
            command.arg("-p").arg(dir);
            if !dir.join("sluice/__init__.py").is_file() {
                write_files(&work.path().join("sdk/sluice"), guest.sdk())?;
                command.arg("-p").arg(work.path().join("sdk"));
            }
            command.arg("app").arg("-o").arg(&built).current_dir(dir);
        }
        Guest::Js => {
            let root = work.path().join("app");
            copy_sources(dir, &root)?;
            if !root.join("sluice/sluice.js").is_file() {
                write_files(&root.join("sluice"), guest.sdk())?;
            }
            let entry = "import './sluice/component.js';\nimport './app.js';\nexport { functions } from './sluice/sluice.js';\n";
            write_files(&root, &[(".sluice-entry.js", entry)])?;
            command.arg("-w").arg(work.path().join("wit")).args(["-j", ".sluice-entry.js", "--module-root", "."]);
            command.args(["--stub-wasi", "--sync", "-n", "plugin", "-o"]).arg(&built).current_dir(&root);
        }
    }
    // Its output is diagnostics: to stderr (stdout is the plugin and its functions).
    let status = command
        .env("RUST_BACKTRACE", "0")
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|err| format!("cannot run {}: {err}", tool.display()))?;
    if !status.success() {
        return Err(format!("{} failed on {} ({status})", guest.tool_name(), dir.display()));
    }
    let target = dir.join("target");
    std::fs::create_dir_all(&target).map_err(|err| format!("cannot make {}: {err}", target.display()))?;
    let (partial, out) = (target.join(format!(".{file}.wasm.tmp")), target.join(format!("{file}.wasm")));
    std::fs::copy(&built, &partial)
        .and_then(|_| std::fs::rename(&partial, &out))
        .map_err(|err| format!("cannot write {}: {err}", out.display()))?;
    Ok(out)
}

/// Writes `files` (path under `dir`, text) into `dir`.
pub(super) fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<(), String> {
    for (path, text) in files {
        let target = dir.join(path);
        let written =
            target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&target, text));
        written.map_err(|err| format!("cannot write {}: {err}", target.display()))?;
    }
    Ok(())
}

/// Copies a JavaScript plugin's sources (not its tests, dependencies, build output or
/// hidden files) from `from` to `to`.
fn copy_sources(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|err| format!("cannot make {}: {err}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|err| format!("cannot read {}: {err}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|err| format!("cannot read {}: {err}", from.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let skipped = name.starts_with('.') || ["node_modules", "target", "test", "out"].contains(&name.as_str());
        if skipped || name.ends_with(".wasm") {
            continue;
        }
        let (source, copy) = (entry.path(), to.join(&name));
        if source.is_dir() {
            copy_sources(&source, &copy)?;
        } else {
            std::fs::copy(&source, &copy).map_err(|err| format!("cannot copy {}: {err}", source.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the SDKs' directories is carried, and nothing else: a module added to an
    /// SDK and not here would be missing from every plugin `plugin new` makes.
    #[test]
    fn the_carried_sdks_are_the_sdk_directories() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let listed = |dir: &Path, ends: &[&str]| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| ends.iter().any(|end| n.ends_with(end)))
                .collect();
            names.sort();
            names
        };
        let carried = |files: &[(&str, &str)], except: &str| -> Vec<String> {
            let mut names: Vec<String> = files.iter().map(|(p, _)| p.to_string()).filter(|p| p != except).collect();
            names.sort();
            names
        };
        assert_eq!(carried(PYTHON_SDK, "README.md"), listed(&sdk.join("python/sluice"), &[".py"]));
        assert_eq!(carried(JS_SDK, "README.md"), listed(&sdk.join("js"), &[".js"]));
    }

    #[test]
    fn a_directory_is_python_or_javascript_by_its_entry_module() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Guest::of(dir.path()), None);
        std::fs::write(dir.path().join("app.js"), "").unwrap();
        assert_eq!(Guest::of(dir.path()), Some(Guest::Js));
        std::fs::write(dir.path().join("app.py"), "").unwrap();
        assert_eq!(Guest::of(dir.path()), Some(Guest::Python));
    }
}
