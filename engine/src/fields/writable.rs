//! Whether a directory the pipeline file names can be written, as `sluice check` asks before a
//! run finds out at its first batch.
//!
//! - A missing directory is created, level by level, as the run would create it; then a probe
//!   file is created in it and removed. Directories made only to prove they can be are removed
//!   again (innermost first, and only while empty), so a check leaves the tree as it found it.
//! - An existing path must be a directory, and a probe file must be creatable in it.
//! - The probe is named `.sluice-check-<pid>`: a leading `.` is what sinks, checkpoints and
//!   directory sources already skip.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// What stands in the way of writing files into a directory, naming it (and the level of it at
/// fault, when that is a parent).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WritableError {
    /// The path is a file (or another non-directory).
    #[error("{} is not a directory", dir.display())]
    NotADirectory {
        /// The directory asked for.
        dir: PathBuf,
    },
    /// A parent level is a file.
    #[error("cannot create the directory {}: {} is not a directory", dir.display(), at.display())]
    ParentNotADirectory {
        /// The directory asked for.
        dir: PathBuf,
        /// The level in the way.
        at: PathBuf,
    },
    /// A level cannot be looked at.
    #[error("cannot use {}: {}{source}", dir.display(), Level(at.as_deref()))]
    Unusable {
        /// The directory asked for.
        dir: PathBuf,
        /// The parent at fault; `None`: `dir` itself.
        at: Option<PathBuf>,
        /// Why.
        source: std::io::Error,
    },
    /// A missing level cannot be created.
    #[error("cannot create the directory {}: {}{source}", dir.display(), Level(at.as_deref()))]
    Uncreatable {
        /// The directory asked for.
        dir: PathBuf,
        /// The parent at fault; `None`: `dir` itself.
        at: Option<PathBuf>,
        /// Why.
        source: std::io::Error,
    },
    /// The directory is there, but no file can be created in it.
    #[error("cannot create files in {}: {source}", dir.display())]
    NoFiles {
        /// The directory asked for.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Nothing when the problem is the directory itself, else `<parent>: `.
struct Level<'a>(Option<&'a Path>);

impl std::fmt::Display for Level<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(at) => write!(f, "{}: ", at.display()),
            None => Ok(()),
        }
    }
}

/// `Ok` if `dir` is, or can be made, a directory files can be created in; else what stands in
/// the way.
pub(crate) fn writable_dir(dir: &Path) -> Result<(), WritableError> {
    // `None` when the problem is `dir` itself, else the parent at fault.
    let level = |at: &Path| (at != dir).then(|| at.to_path_buf());
    // The missing levels, innermost first, up to the first that exists.
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) if at == dir => return Err(WritableError::NotADirectory { dir: dir.to_path_buf() }),
            Ok(_) => {
                return Err(WritableError::ParentNotADirectory { dir: dir.to_path_buf(), at: at.to_path_buf() });
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    _ => break, // the working directory
                }
            }
            Err(source) => return Err(WritableError::Unusable { dir: dir.to_path_buf(), at: level(at), source }),
        }
    }
    let mut created = Vec::new();
    let result = create_and_probe(dir, &missing, &mut created, &level);
    for made in created.iter().rev() {
        let _ = std::fs::remove_dir(made);
    }
    result
}

fn create_and_probe<'a>(
    dir: &Path,
    missing: &[&'a Path],
    created: &mut Vec<&'a Path>,
    level: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<(), WritableError> {
    for &at in missing.iter().rev() {
        match std::fs::create_dir(at) {
            Ok(()) => created.push(at),
            Err(err) if err.kind() == ErrorKind::AlreadyExists && at.is_dir() => {}
            Err(source) => {
                return Err(WritableError::Uncreatable { dir: dir.to_path_buf(), at: level(at), source });
            }
        }
    }
    let probe = dir.join(format!(".sluice-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(WritableError::NoFiles { dir: dir.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_proven_creatable_and_not_left_behind() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        assert!(writable_dir(&dir).is_ok());
        assert!(!root.path().join("a").exists(), "the check leaves nothing behind");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(writable_dir(&dir).is_ok());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the probe is removed");
    }

    #[test]
    fn a_file_in_the_way_or_an_uncreatable_directory_is_named() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let problem = writable_dir(&file).unwrap_err().to_string();
        assert!(problem.ends_with("file is not a directory"), "{problem}");
        let problem = writable_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(problem.starts_with("cannot use ") && problem.contains("file/sub: "), "{problem}");
        let problem = writable_dir(Path::new("/proc/forbidden")).unwrap_err().to_string();
        assert!(problem.starts_with("cannot create the directory /proc/forbidden: No such file"), "{problem}");
        let problem = writable_dir(Path::new("/proc/forbidden/ckpt")).unwrap_err().to_string();
        assert!(
            problem.starts_with("cannot create the directory /proc/forbidden/ckpt: /proc/forbidden: "),
            "{problem}"
        );
    }
}
