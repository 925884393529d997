//! Checkpoint directories that appear whole or not at all.
//!
//! Every file is written and fsynced inside `checkpoints/.tmp-<tag>/`, then `manifest.json` (file
//! names, sizes and checksums) is written last, and the directory is renamed to
//! `checkpoints/<tag>/`. Resume only trusts directories whose manifest matches their files, so a
//! crash at any moment leaves the previous checkpoint as the newest valid one. Old checkpoints
//! are deleted only after the new one is durable.

use crate::atomic::{sync_dir, write_atomic};
use crate::error::{CoreError, Result};
use crate::rng::stable_hash;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Name of the completion marker, written last.
pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "cpt-checkpoint";
const FORMAT_VERSION: u32 = 1;

/// What a manifest records about one file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// FNV-1a 64 checksum of the content, hex.
    pub checksum: String,
}

/// The completion marker of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `cpt-checkpoint`.
    pub format: String,
    /// Layout version of the checkpoint directory.
    pub version: u32,
    /// Global optimizer step the checkpoint was taken after.
    pub step: u64,
    /// The cpt version that wrote it.
    pub writer: String,
    /// Checksum of the resolved run config, to detect a changed config on resume.
    pub config_hash: String,
    /// Every file of the checkpoint.
    pub files: Vec<ManifestEntry>,
}

/// A checkpoint found on disk and verified.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    /// Its directory.
    pub path: PathBuf,
    /// Its verified manifest.
    pub manifest: Manifest,
}

impl CheckpointDir {
    /// Read one file of this checkpoint.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path.join(name);
        fs::read(&path).map_err(|e| CoreError::io(path, e))
    }
}

/// Directory name of the checkpoint taken after global step `step`; `experience_end` marks the
/// one taken after an experience was finished and evaluated, which sorts after a mid-experience
/// checkpoint of the same step.
pub fn tag_for_step(step: u64, experience_end: bool) -> String {
    if experience_end {
        format!("step-{step:09}-end")
    } else {
        format!("step-{step:09}")
    }
}

/// Checksum used in manifests (hex FNV-1a 64).
pub fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", stable_hash(bytes))
}

/// Write a checkpoint of `files` (name, content) under `root/<tag>`, atomically, then delete all
/// but the newest `keep_last` complete checkpoints (0 keeps all).
pub fn save_checkpoint(
    root: &Path,
    tag: &str,
    step: u64,
    config_hash: &str,
    files: &[(String, Vec<u8>)],
    keep_last: usize,
) -> Result<PathBuf> {
    save_checkpoint_with(&AtomicFiles, root, tag, step, config_hash, files, keep_last)
}

/// Where checkpoint files are written: the real file system, or a stand-in that fails on
/// purpose (a full disk) in tests.
pub trait FileSink {
    /// Write `bytes` to `path` whole or not at all.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()>;
}

/// The real file system, through [`write_atomic`].
pub struct AtomicFiles;

impl FileSink for AtomicFiles {
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomic(path, bytes)
    }
}

/// [`save_checkpoint`] through `sink`. On any write error (a full disk, say) the partial
/// checkpoint is removed, earlier checkpoints are untouched, and the error says so.
pub fn save_checkpoint_with(
    sink: &dyn FileSink,
    root: &Path,
    tag: &str,
    step: u64,
    config_hash: &str,
    files: &[(String, Vec<u8>)],
    keep_last: usize,
) -> Result<PathBuf> {
    let final_dir = root.join(tag);
    let tmp_dir = root.join(format!(".tmp-{tag}"));
    fs::create_dir_all(root).map_err(|e| CoreError::io(root, e))?;
    let written = write_contents(sink, &tmp_dir, step, config_hash, files).and_then(|()| {
        if final_dir.exists() {
            // Only an unverifiable leftover can hold this tag (resume starts from the newest valid
            // checkpoint and every later tag is new): replace it.
            fs::remove_dir_all(&final_dir).map_err(|e| CoreError::io(&final_dir, e))?;
        }
        fs::rename(&tmp_dir, &final_dir).map_err(|e| CoreError::io(&final_dir, e))?;
        sync_dir(Some(root))
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp_dir);
        return Err(CoreError::Checkpoint {
            path: final_dir,
            message: format!("not written ({e}); earlier checkpoints are intact"),
        });
    }
    prune(root, keep_last)?;
    Ok(final_dir)
}

fn write_contents(
    sink: &dyn FileSink,
    dir: &Path,
    step: u64,
    config_hash: &str,
    files: &[(String, Vec<u8>)],
) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    }
    fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    let mut entries = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        sink.write(&dir.join(name), bytes)?;
        entries.push(ManifestEntry {
            name: name.clone(),
            bytes: bytes.len() as u64,
            checksum: checksum(bytes),
        });
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        step,
        writer: format!("cpt {}", env!("CARGO_PKG_VERSION")),
        config_hash: config_hash.to_string(),
        files: entries,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    sink.write(&dir.join(MANIFEST), &json)
}

/// Verify one checkpoint directory: manifest present and well formed, every file present with
/// its recorded size and checksum.
pub fn verify_checkpoint(dir: &Path) -> Result<CheckpointDir> {
    let bad = |message: String| CoreError::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    let manifest_path = dir.join(MANIFEST);
    let bytes =
        fs::read(&manifest_path).map_err(|e| bad(format!("no readable {MANIFEST}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{MANIFEST} is malformed: {e}")))?;
    if manifest.format != FORMAT || manifest.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} v{} is not {FORMAT} v{FORMAT_VERSION}",
            manifest.format, manifest.version
        )));
    }
    for entry in &manifest.files {
        let content =
            fs::read(dir.join(&entry.name)).map_err(|e| bad(format!("{}: {e}", entry.name)))?;
        if content.len() as u64 != entry.bytes || checksum(&content) != entry.checksum {
            return Err(bad(format!(
                "{} does not match its manifest entry",
                entry.name
            )));
        }
    }
    Ok(CheckpointDir {
        path: dir.to_path_buf(),
        manifest,
    })
}

/// The newest complete checkpoint under `root`, skipping (with a warning) any that fails
/// verification. `None` when there is none.
pub fn latest_checkpoint(root: &Path) -> Result<Option<CheckpointDir>> {
    for dir in complete_dirs(root)?.into_iter().rev() {
        match verify_checkpoint(&dir) {
            Ok(found) => return Ok(Some(found)),
            Err(e) => tracing::warn!("ignoring checkpoint: {e}"),
        }
    }
    Ok(None)
}

/// Checkpoint directories (by name, not yet verified), oldest first.
fn complete_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|e| CoreError::io(root, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Delete leftovers of interrupted saves and all but the newest `keep_last` checkpoints.
fn prune(root: &Path, keep_last: usize) -> Result<()> {
    for entry in fs::read_dir(root)
        .map_err(|e| CoreError::io(root, e))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    if keep_last == 0 {
        return Ok(());
    }
    let dirs = complete_dirs(root)?;
    for old in dirs.iter().take(dirs.len().saturating_sub(keep_last)) {
        fs::remove_dir_all(old).map_err(|e| CoreError::io(old, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(tag: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            ("a.bin".into(), tag.as_bytes().to_vec()),
            ("b.json".into(), b"{}".to_vec()),
        ]
    }

    #[test]
    fn newest_valid_checkpoint_wins_and_retention_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        for step in [10, 20, 30] {
            save_checkpoint(
                dir.path(),
                &tag_for_step(step, false),
                step,
                "h",
                &files(&step.to_string()),
                2,
            )
            .unwrap();
        }
        let names: Vec<String> = complete_dirs(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![tag_for_step(20, false), tag_for_step(30, false)]
        );
        let latest = latest_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(latest.manifest.step, 30);
        assert_eq!(latest.read("a.bin").unwrap(), b"30");
    }

    #[test]
    fn a_directory_without_manifest_or_with_a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(dir.path(), "step-000000010", 10, "h", &files("10"), 0).unwrap();
        let newer =
            save_checkpoint(dir.path(), "step-000000020", 20, "h", &files("20"), 0).unwrap();
        fs::write(newer.join("a.bin"), b"29").unwrap();
        assert_eq!(
            latest_checkpoint(dir.path())
                .unwrap()
                .unwrap()
                .manifest
                .step,
            10
        );
        fs::remove_file(newer.join(MANIFEST)).unwrap();
        assert_eq!(
            latest_checkpoint(dir.path())
                .unwrap()
                .unwrap()
                .manifest
                .step,
            10
        );
    }

    /// A disk with room for `budget` more bytes: writes past it fail with ENOSPC, after
    /// putting part of the data on disk, as a real full disk does.
    struct LimitedDisk {
        budget: std::cell::Cell<usize>,
    }

    impl FileSink for LimitedDisk {
        fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
            crate::atomic::write_atomic_with(path, |file| {
                use std::io::Write;
                let room = self.budget.get().min(bytes.len());
                file.write_all(&bytes[..room])?;
                self.budget.set(self.budget.get() - room);
                if room < bytes.len() {
                    return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
                }
                Ok(())
            })
        }
    }

    fn snapshot_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                for (name, bytes) in snapshot_dir(&path) {
                    out.push((
                        format!("{}/{name}", path.file_name().unwrap().to_string_lossy()),
                        bytes,
                    ));
                }
            } else {
                out.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read(&path).unwrap(),
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_full_disk_leaves_the_previous_checkpoint_intact_and_no_litter() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![
            ("a.bin".to_string(), vec![7u8; 1000]),
            ("b.json".to_string(), b"{}".to_vec()),
        ];
        save_checkpoint(dir.path(), "step-000000001", 1, "h", &big, 2).unwrap();
        let before = snapshot_dir(dir.path());
        // Fail inside the first file, inside the second, and at the manifest.
        for budget in [10, 1001, 1003] {
            let disk = LimitedDisk {
                budget: std::cell::Cell::new(budget),
            };
            let err = save_checkpoint_with(&disk, dir.path(), "step-000000002", 2, "h", &big, 1)
                .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("intact"), "{msg}");
            assert_eq!(
                snapshot_dir(dir.path()),
                before,
                "budget {budget}: disk changed"
            );
            assert_eq!(
                latest_checkpoint(dir.path())
                    .unwrap()
                    .unwrap()
                    .manifest
                    .step,
                1
            );
        }
    }

    #[test]
    fn an_experience_end_checkpoint_sorts_after_its_mid_experience_twin() {
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(dir.path(), &tag_for_step(7, true), 7, "h", &files("end"), 0).unwrap();
        save_checkpoint(
            dir.path(),
            &tag_for_step(7, false),
            7,
            "h",
            &files("mid"),
            0,
        )
        .unwrap();
        assert_eq!(
            latest_checkpoint(dir.path())
                .unwrap()
                .unwrap()
                .read("a.bin")
                .unwrap(),
            b"end"
        );
    }
}
