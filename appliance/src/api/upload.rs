//! Request bodies streamed to a file on the data dir with a cap, so no body is ever held whole in
//! the memory of the process that captures, and one over the cap costs at most the cap on disk,
//! briefly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

/// Under the data dir: bodies being received. Anything here at start is from a process that died
/// mid-upload.
const UPLOAD_DIR: &str = "uploads";

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the body is larger than the {cap} bytes allowed here")]
    TooLarge { cap: u64 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the request body: {0}")]
    Body(axum::Error),
}

/// A received body on disk; the file is removed when this is dropped.
pub struct Upload {
    path: PathBuf,
}

impl Upload {
    /// The whole body, for a verifier that checks bytes in memory (only ever after the token
    /// was checked and within the cap).
    pub async fn read(&self) -> Result<Vec<u8>, UploadError> {
        tokio::fs::read(&self.path)
            .await
            .map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: std::io::Error) -> UploadError {
        UploadError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("could not remove {}: {err}", self.path.display());
            }
        }
    }
}

/// Removes what an earlier process left in the upload directory.
pub fn clear_stale(data_dir: &Path) {
    let dir = data_dir.join(UPLOAD_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("removed an unfinished upload {}", path.display()),
            Err(err) => tracing::warn!("could not remove {}: {err}", path.display()),
        }
    }
}

/// Streams `body` into a new file under `data_dir`, refusing it once it passes `cap` bytes (at
/// once when its declared length already does).
pub async fn receive(
    headers: &HeaderMap,
    body: Body,
    data_dir: &Path,
    cap: u64,
) -> Result<Upload, UploadError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(UploadError::TooLarge { cap });
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = data_dir.join(UPLOAD_DIR);
    let io_error = |path: &Path, source| UploadError::Io {
        path: path.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|source| io_error(&dir, source))?;
    let upload = Upload {
        path: dir.join(format!(
            "{}-{}.part",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )),
    };
    let mut file = tokio::fs::File::create(&upload.path)
        .await
        .map_err(|source| upload.io_error(source))?;
    let mut body = body;
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UploadError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received = received.saturating_add(data.len() as u64);
        if received > cap {
            return Err(UploadError::TooLarge { cap });
        }
        file.write_all(&data)
            .await
            .map_err(|source| upload.io_error(source))?;
    }
    file.flush()
        .await
        .map_err(|source| upload.io_error(source))?;
    Ok(upload)
}
