//! Atomic file replacement: write beside the target under a scratch name, fsync, rename over the
//! target, fsync the directory. A crash or error leaves either the old file or the new one,
//! never half of one (see RELIABILITY.md, "Atomic files").

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// The scratch name used while `path` is being written: `path` + `.tmp`.
pub(crate) fn scratch_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Write `bytes` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let scratch = scratch_path(path);
    let written = (|| {
        let mut file = File::create(&scratch).map_err(|e| DataError::io(&scratch, e))?;
        file.write_all(bytes)
            .map_err(|e| DataError::io(&scratch, e))?;
        file.sync_all().map_err(|e| DataError::io(&scratch, e))
    })();
    if let Err(e) = written {
        // Best effort: the scratch file is garbage now, and the real error is the one to report.
        let _ = std::fs::remove_file(&scratch);
        return Err(e);
    }
    commit(&scratch, path)
}

/// Rename a fully written and synced `scratch` file over `path`, then sync the directory so the
/// rename itself survives a crash. On failure the scratch file is removed.
pub(crate) fn commit(scratch: &Path, path: &Path) -> Result<()> {
    if let Err(e) = std::fs::rename(scratch, path) {
        let _ = std::fs::remove_file(scratch);
        return Err(DataError::io(path, e));
    }
    sync_parent(path)
}

/// fsync the directory holding `path` (a no-op where directories cannot be opened, e.g. Windows).
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        let dir = File::open(parent).map_err(|e| DataError::io(parent, e))?;
        dir.sync_all().map_err(|e| DataError::io(parent, e))?;
    }
    #[cfg(not(unix))]
    let _ = parent;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_file_and_leaves_no_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!scratch_path(&path).exists());
    }

    #[test]
    fn unwritable_scratch_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        // The target's directory does not exist, so the scratch file cannot be created.
        let path = dir.path().join("missing").join("a.json");
        let err = write_atomic(&path, b"new").unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(err.to_string().contains("a.json.tmp"), "{err}");
    }

    #[test]
    fn failed_rename_keeps_target_and_removes_scratch() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file, so the final rename fails.
        let path = dir.path().join("target");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"old").unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert_eq!(std::fs::read(path.join("keep")).unwrap(), b"old");
        assert!(!scratch_path(&path).exists());
    }
}
