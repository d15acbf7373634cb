//! The compile cache: plugins compiled once, kept as wasmtime artifacts under the cache
//! directory, `<content hash>-<engine fingerprint>.cwasm`. wasmtime runs an artifact's machine
//! code as it finds it (`deserialize` trusts its input), so a file there is used only if it
//! carries the right MAC: each file is a 32-byte HMAC-SHA256 tag of its own name and the
//! rest, then the artifact (the name in the tag: a sealed artifact copied over another
//! plugin's name is refused too). The key is 32 random bytes in a file of its own, outside the cache directory
//! (`$SLUICE_CACHE_KEY_FILE`, else `$XDG_CONFIG_HOME/sluice/cache.key`, else
//! `~/.config/sluice/cache.key`), made on first use, readable by its owner only: someone who
//! can write the cache (a shared volume) but not read the key cannot plant code. A file whose
//! tag does not match is not loaded: the plugin is compiled again and the file replaced.
//!
//! **Owns:** the key, the file format, sealing and checking. **Never touches:** compiling
//! (`mod.rs`), the plugin files.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of the key and of a tag.
const TAG: usize = 32;

/// Where compiled plugins are kept, and the key of their MACs.
#[derive(Clone)]
pub struct CompileCache {
    pub(crate) dir: PathBuf,
    key: [u8; TAG],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Why the cache cannot be used (the runtime then compiles every time).
#[derive(Debug, thiserror::Error)]
pub enum CacheKeyError {
    /// The key file cannot be read or made.
    #[error("the compile cache's key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not a key.
    #[error("the compile cache's key {path}: expected {TAG} bytes, found {found}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        found: usize,
    },
    /// Others may read or write the key file.
    #[error("the compile cache's key {path}: others may read or write it (mode {mode:o}): chmod 600 it")]
    Open {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// The key file's default place: `$SLUICE_CACHE_KEY_FILE`, `$XDG_CONFIG_HOME/sluice/cache.key`
/// or `~/.config/sluice/cache.key`.
pub(crate) fn default_key_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("SLUICE_CACHE_KEY_FILE") {
        return Some(PathBuf::from(file));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("sluice").join("cache.key"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config").join("sluice").join("cache.key"))
}

impl CompileCache {
    /// The cache in `dir`, with the key in `key_file` (made if missing).
    pub fn open(dir: PathBuf, key_file: &Path) -> Result<Self, CacheKeyError> {
        let io = |source| CacheKeyError::Io { path: key_file.to_path_buf(), source };
        let file = match std::fs::File::open(key_file) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                make_key(key_file).map_err(io)?;
                std::fs::File::open(key_file).map_err(io)?
            }
            Err(err) => return Err(io(err)),
        };
        // The mode of the file read, not of whatever the path names a moment later.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CacheKeyError::Open { path: key_file.to_path_buf(), mode });
            }
        }
        let mut bytes = Vec::with_capacity(TAG);
        file.take(TAG as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
        let key = <[u8; TAG]>::try_from(bytes.as_slice())
            .map_err(|_| CacheKeyError::Malformed { path: key_file.to_path_buf(), found: bytes.len() })?;
        Ok(Self { dir, key })
    }

    /// The MAC of file `name` holding `artifact`: over the name's length, the name, the artifact.
    fn mac(&self, name: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac.update(artifact);
        mac
    }

    /// The content of file `name` holding `artifact`: its tag, then it.
    pub(crate) fn seal(&self, name: &str, artifact: &[u8]) -> Vec<u8> {
        let mut file = self.mac(name, artifact).finalize().into_bytes().to_vec();
        file.extend_from_slice(artifact);
        file
    }

    /// The artifact in `file`, the content of file `name`, if its tag is right (compared in
    /// constant time).
    pub(crate) fn open_sealed<'a>(&self, name: &str, file: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, artifact) = file.split_at_checked(TAG)?;
        self.mac(name, artifact).verify_slice(tag).ok().map(|()| artifact)
    }
}

/// A new random key in `path` (mode 600; its directory made), or the one another process made
/// first: written whole to a file of its own, then linked into place, so no process reads a
/// half-written key.
fn make_key(path: &Path) -> std::io::Result<Vec<u8>> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut key = [0u8; TAG];
    getrandom::getrandom(&mut key).map_err(|err| std::io::Error::other(err.to_string()))?;
    // A temporary file is its owner's only (mode 600).
    let mut file = tempfile::Builder::new().prefix(".cache.key.").tempfile_in(dir)?;
    file.write_all(&key)?;
    file.as_file().sync_all()?;
    match std::fs::hard_link(file.path(), path) {
        Ok(()) => Ok(key.to_vec()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_artifact_opens_and_any_change_or_other_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("keys/cache.key");
        let cache = CompileCache::open(dir.path().join("cache"), &key).unwrap();
        let again = CompileCache::open(dir.path().join("cache"), &key).unwrap();
        assert_eq!(cache.key, again.key, "the key is made once and kept");
        let sealed = cache.seal("a.cwasm", b"machine code");
        assert_eq!(again.open_sealed("a.cwasm", &sealed), Some(&b"machine code"[..]));
        for at in [0, 31, 32, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert_eq!(cache.open_sealed("a.cwasm", &tampered), None, "byte {at} changed");
        }
        assert_eq!(cache.open_sealed("a.cwasm", &sealed[..20]), None, "too short for a tag");
        assert_eq!(cache.open_sealed("b.cwasm", &sealed), None, "sealed as another plugin's file");
        let other = CompileCache::open(dir.path().join("cache"), &dir.path().join("other.key")).unwrap();
        assert_eq!(other.open_sealed("a.cwasm", &sealed), None, "sealed under another key");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_may_read_or_one_of_the_wrong_length_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("cache.key");
        std::fs::write(&key, [7u8; TAG]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CompileCache::open(dir.path().into(), &key).unwrap_err();
        assert!(err.to_string().contains("others may read or write it (mode 644)"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(CompileCache::open(dir.path().into(), &key).is_ok());
        std::fs::write(&key, [7u8; 5]).unwrap();
        let err = CompileCache::open(dir.path().into(), &key).unwrap_err();
        assert!(err.to_string().contains("expected 32 bytes, found 5"), "{err}");
    }
}
