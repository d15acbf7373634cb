//! A pipeline ready to run: the parsed file, its plugins loaded and validated, its graph
//! resolved. [`Pipeline::load`] is what `sluice check` runs; [`Pipeline::run`] (in `topology/`,
//! which builds and runs the topology) what `sluice run` runs after it. This file only loads and
//! assembles, and knows nothing of running.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, ConfigErrors, PipelineFile};
use sluice_sdk::TypeDesc;

use crate::graph::{DeadLetter, Graph};
use crate::runtime::registry::PluginRegistry;
use crate::runtime::{PluginRuntime, PluginVersion};
use crate::sinks::SinkConfig;

/// A validated pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// The pipeline file.
    pub file: PipelineFile,
    /// Its resolved graph.
    pub graph: Graph,
    /// Its plugins and their serving versions.
    pub registry: Arc<PluginRegistry>,
    /// Loads new versions (None for pipelines of native versions: no hot swap).
    pub(crate) runtime: Option<PluginRuntime>,
    /// What `Pipeline::check` could not check (a database that did not answer); empty after
    /// `Pipeline::load`.
    pub warnings: Vec<ConfigError>,
}

impl Pipeline {
    /// Parses and validates `path`, loads every plugin and checks every stage against it.
    /// Returns every problem found, each naming the file and field.
    pub fn load(path: &Path, runtime: &PluginRuntime) -> Result<Self, ConfigErrors> {
        Self::load_with(path, runtime, false)
    }

    /// What `sluice check` runs: [`Pipeline::load`], and also whether every directory a run
    /// writes can be created and written ([`PipelineFile::check_directories`]) and whether each
    /// sink's external system takes its records (`SinkConfig::check`: a table and its
    /// columns; a system that does not answer is a warning in [`Pipeline::warnings`]). A run
    /// does not ask: a sink that cannot write fails its batch, which a restart replays.
    pub(crate) fn check(path: &Path, runtime: &PluginRuntime) -> Result<Self, ConfigErrors> {
        Self::load_with(path, runtime, true)
    }

    fn load_with(path: &Path, runtime: &PluginRuntime, checking: bool) -> Result<Self, ConfigErrors> {
        let file = PipelineFile::load(path)?;
        let runtime = &runtime.clone().with_capabilities(file.capabilities());
        let mut errors = file.validate();
        if checking {
            errors.extend(file.check_directories());
        }
        let mut versions = Vec::new();
        for (name, plugin_path) in &file.config.plugins {
            let resolved = file.resolve(plugin_path);
            if !resolved.is_file() {
                continue; // reported by validate
            }
            match runtime.load(name, &resolved) {
                Ok(version) => versions.push(version),
                Err(err) => errors.push(ConfigError::new(format!("plugins.{name}"), err.to_string())),
            }
        }
        // Capabilities a plugin does not import do nothing: said, not refused (a swap to a
        // version that imports them may come).
        let needless: Vec<ConfigError> = versions
            .iter()
            .flat_map(|v| {
                let asked = file.config.capabilities.get(&v.plugin).map_or(&[][..], Vec::as_slice);
                asked.iter().filter(|c| !v.imports(c.interface())).map(|c| needless_capability(v, *c))
            })
            .collect();
        let mut pipeline = Self::assemble(file, versions, errors)?;
        pipeline.runtime = Some(runtime.clone());
        pipeline.warnings.extend(needless);
        if checking {
            let mut errors = Vec::new();
            let letter = DeadLetter::type_desc();
            for (config, ty) in sink_types(&pipeline.graph, &letter) {
                let check = config.check(ty);
                errors.extend(check.errors);
                pipeline.warnings.extend(check.warnings);
            }
            if !errors.is_empty() {
                return Err(ConfigErrors { file: pipeline.file.path.clone(), errors });
            }
        }
        Ok(pipeline)
    }

    /// A pipeline from a parsed file and plugin versions made elsewhere (e.g. native twins for
    /// benchmarks). Plugin files named in the file are not read; hot swap is off.
    pub fn from_versions(file: PipelineFile, versions: Vec<PluginVersion>) -> Result<Self, ConfigErrors> {
        let errors = file.validate().into_iter().filter(|e| !e.location.starts_with("plugins.")).collect();
        Self::assemble(file, versions, errors)
    }

    fn assemble(
        file: PipelineFile,
        versions: Vec<PluginVersion>,
        mut errors: Vec<ConfigError>,
    ) -> Result<Self, ConfigErrors> {
        let graph = {
            let by_name: BTreeMap<String, (usize, &PluginVersion)> = versions
                .iter()
                .enumerate()
                .map(|(index, version)| (version.plugin.clone(), (index, version)))
                .collect();
            if errors.is_empty() {
                match Graph::build(&file, &by_name) {
                    Ok(graph) => Some(graph),
                    Err(more) => {
                        errors.extend(more);
                        None
                    }
                }
            } else {
                // Still check what can be checked, to report everything at once.
                if let Err(more) = Graph::build(&file, &by_name) {
                    errors.extend(more);
                }
                None
            }
        };
        if let Some(graph) = &graph {
            // Sinks whose output has columns (a table) check them against the record type.
            let letter = DeadLetter::type_desc();
            for (config, ty) in sink_types(graph, &letter) {
                errors.extend(config.validate_input(ty));
            }
        }
        let Some(graph) = graph.filter(|_| errors.is_empty()) else {
            return Err(ConfigErrors { file: file.path.clone(), errors });
        };
        let plugins = versions
            .into_iter()
            .map(|version| {
                let required = file
                    .config
                    .stages
                    .iter()
                    .filter(|s| s.plugin() == Some(version.plugin.as_str()))
                    .flat_map(|s| s.functions().map(str::to_string))
                    .collect();
                (version, required)
            })
            .collect();
        Ok(Self { file, graph, registry: Arc::new(PluginRegistry::new(plugins)), runtime: None, warnings: Vec::new() })
    }
}

/// Every sink of `graph` with the type of the records it writes (`letter` for dead-letter sinks).
fn sink_types<'a>(graph: &'a Graph, letter: &'a TypeDesc) -> impl Iterator<Item = (&'a SinkConfig, &'a TypeDesc)> {
    let sinks = graph.sinks.iter().map(|node| (&node.config, &graph.streams[node.input].ty));
    sinks.chain(graph.dead_letters.iter().map(move |config| (config, letter)))
}

/// The warning for capability `capability` given to `version`, which does not import it.
fn needless_capability(version: &crate::runtime::PluginVersion, capability: crate::config::Capability) -> ConfigError {
    let why = if version.is_module() {
        "is an ABI 1 module, which gets no WASI".to_string()
    } else {
        format!("imports no {}*", capability.interface())
    };
    ConfigError::new(
        format!("capabilities.{}", version.plugin),
        format!(
            "`{}` {why}: `{}` does nothing until a version that imports it serves",
            version.plugin,
            capability.name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_must_keep_every_function_the_pipeline_uses_timestamp_and_inverse_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(
            &path,
            "[pipeline]\nname = \"t\"\n[plugins]\nclicks = \"unused.wasm\"\n\
             [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n\
             [[stages]]\nname = \"parsed\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"clicks\"\nfunction = \"parse\"\n\
             [[stages]]\nname = \"sessions\"\ninput = \"parsed\"\nop = \"event_window\"\nplugin = \"clicks\"\n\
             timestamp = \"click_time\"\ngap = \"30s\"\n\
             [[sinks]]\nname = \"out\"\ninput = \"sessions\"\ntype = \"print\"\n",
        )
        .unwrap();
        let file = PipelineFile::load(&path).unwrap();
        let all = [sessionize::__sluice_parse, sessionize::__sluice_click_time];
        let pipeline = Pipeline::from_versions(file, vec![PluginRuntime::native("clicks", &all)]).unwrap();
        let without_timestamp = PluginRuntime::native("clicks", &[sessionize::__sluice_parse]);
        let reason = pipeline.registry.validate(0, &without_timestamp).unwrap_err().to_string();
        assert!(reason.contains("function `click_time` is missing"), "{reason}");
        assert!(pipeline.registry.validate(0, &PluginRuntime::native("clicks", &all)).is_ok());
    }
}
