//! Crash-safe files: a reader sees the old content or the new, never half of either.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory (so the rename itself survives a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, fs::OpenOptions::new())
}

/// [`write_atomic`] for a secret (a private key): the file is readable by its owner only, from
/// its creation on.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    // A mode applies only to a file created; a temporary a killed write left keeps its own,
    // so it goes first.
    options.mode(0o600);
    let _ = fs::remove_file(temporary(path)?);
    write_atomic_with(path, bytes, options)
}

fn write_atomic_with(path: &Path, bytes: &[u8], mut options: fs::OpenOptions) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = temporary(path)?;
    let written = options
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(err) = written.and_then(|()| fs::rename(&tmp, path)) {
        // A full disk must not also keep the half-written copy.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    File::open(dir)?.sync_all()
}

/// Where [`write_atomic`] writes `path` before renaming it: `.NAME.tmp-PID` beside it.
fn temporary(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok(path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Whether `name` is a temporary of [`write_atomic`] (`.NAME.tmp-PID`).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".tmp-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporaries that atomic writes of an earlier process left in `dir` and its
/// subdirectories (killed between create and rename); returns how many. Run at start, before
/// this process writes any.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            removed += remove_stale_temporaries(&path);
        } else if is_temporary(&entry.file_name().to_string_lossy()) {
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!("removed {}, left by an interrupted write", path.display());
                    removed += 1;
                }
                Err(err) => tracing::warn!("cannot remove {}: {err}", path.display()),
            }
        }
    }
    removed
}

/// Cuts a JSON-lines file back to its last complete line (a process killed, or a disk that
/// filled, mid-record), so the next record does not land glued onto half of one. Returns the
/// bytes cut.
pub fn repair_cut_line(path: &Path) -> io::Result<u64> {
    let mut file = match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    // Read back from the end in blocks until a newline (or the start) turns up.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + at as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(len - keep)
}

/// Moves a damaged file aside as `NAME.damaged-<unix time>` so the daemon can start without it
/// and nobody loses what it held; returns where it went.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{}", since_epoch.as_secs()));
    let aside = path.with_file_name(name);
    fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("vigil-files-{}", std::process::id()));
        let path = dir.join("state").join("plugin.bin");
        write_atomic(&path, b"first").expect("write");
        write_atomic(&path, b"second").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn a_cut_last_line_is_cut_back_to_the_last_whole_one() {
        let dir = std::env::temp_dir().join(format!("vigil-cut-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("eve.json");
        fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").expect("write");
        assert_eq!(repair_cut_line(&path).expect("repair"), 5);
        assert_eq!(fs::read(&path).expect("read"), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(repair_cut_line(&path).expect("again"), 0);
        fs::write(&path, b"no newline at all").expect("write");
        assert_eq!(repair_cut_line(&path).expect("repair"), 17);
        assert_eq!(fs::read(&path).expect("read"), b"");
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("vigil-stale-{}", std::process::id()));
        fs::create_dir_all(dir.join("state")).expect("dir");
        fs::write(dir.join(".devices.json.tmp-123"), b"x").expect("write");
        fs::write(dir.join("state").join(".p.bin.tmp-9"), b"x").expect("write");
        fs::write(dir.join("devices.json"), b"{}").expect("write");
        fs::write(dir.join("notes.tmp-1"), b"x").expect("write");
        assert_eq!(remove_stale_temporaries(&dir), 2);
        assert!(dir.join("devices.json").exists());
        assert!(dir.join("notes.tmp-1").exists());
        fs::remove_dir_all(dir).expect("cleanup");
    }
}
