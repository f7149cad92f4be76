//! Where backup copies live: named places, each a local directory, an
//! S3-compatible bucket or an Azure Blob container. Copies are named `JOB-YYYYMMDDTHHMMSSZ.dump` (UTC), so names
//! sort by time and say when they were taken.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::{AzureConfig, PlaceConfig, S3Config};

pub mod azure;
mod s3;

/// The timestamp format in copy names: milliseconds, so two runs in one
/// second (a manual run beside a scheduled one) never share a name and
/// the second never overwrites the first's recorded checksum.
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";
/// Names written before milliseconds were added (still recognised).
const STAMP_SECONDS: &str = "%Y%m%dT%H%M%SZ";

/// The name of job `job`'s copy taken at `at`.
pub fn copy_name(job: &str, at: DateTime<Utc>) -> String {
    format!("{job}-{}.dump", at.format(STAMP))
}

/// When a copy of `job` named `name` was taken, if the name is one of
/// its copies.
pub fn copy_time(job: &str, name: &str) -> Option<DateTime<Utc>> {
    let stamp = name
        .strip_prefix(job)?
        .strip_prefix('-')?
        .strip_suffix(".dump")?;
    NaiveDateTime::parse_from_str(stamp, STAMP)
        .or_else(|_| NaiveDateTime::parse_from_str(stamp, STAMP_SECONDS))
        .ok()
        .map(|t| t.and_utc())
}

/// One stored copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCopy {
    pub name: String,
    pub taken_at: DateTime<Utc>,
    pub size: u64,
}

/// One kind of place copies are kept in.
pub enum Storage {
    Local(PathBuf),
    S3(s3::Bucket),
    Azure(azure::Container),
}

/// A named place of a backup job: what verify and retention report on.
#[derive(Debug)]
pub struct Place {
    pub name: String,
    pub storage: Storage,
}

impl Place {
    /// The place of a config entry; a relative directory is resolved
    /// against `base` (`Config::resolve_path`).
    pub fn build(p: &PlaceConfig, resolve: impl Fn(&Path) -> PathBuf) -> Option<Place> {
        let storage = if let Some(d) = &p.directory {
            Storage::Local(resolve(d))
        } else if let Some(s3) = &p.s3 {
            Storage::s3(s3.clone())
        } else {
            Storage::azure(p.azure.clone()?)
        };
        Some(Place {
            name: p.name.clone(),
            storage,
        })
    }

    /// `azure (azure://account/container/prefix)`, for humans.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.storage.describe())
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Storage {
    /// An S3 bucket (the client is built on first use).
    pub fn s3(config: S3Config) -> Self {
        Storage::S3(s3::Bucket::new(config))
    }

    /// An Azure Blob container (the credential is read on first use).
    pub fn azure(config: AzureConfig) -> Self {
        Storage::Azure(azure::Container::new(config))
    }

    /// `directory /x`, `s3://bucket/prefix` or
    /// `azure://account/container/prefix`, for humans.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(d) => format!("directory {}", d.display()),
            Storage::S3(b) => b.describe(),
            Storage::Azure(c) => c.describe(),
        }
    }

    /// Stores the file at `from` as `name`.
    pub async fn put(&self, name: &str, from: &Path) -> Result<(), String> {
        match self {
            Storage::Local(dir) => {
                let dest = dir.join(name);
                if dest != from {
                    tokio::fs::copy(from, &dest)
                        .await
                        .map_err(|e| format!("copy to {}: {e}", dest.display()))?;
                }
                Ok(())
            }
            Storage::S3(b) => b.put(name, from).await,
            Storage::Azure(c) => c.put(name, from).await,
        }
    }

    /// Every copy of `job`, oldest first.
    pub async fn list(&self, job: &str) -> Result<Vec<StoredCopy>, String> {
        let mut out = Vec::new();
        match self {
            Storage::Local(dir) => {
                let mut rd = match tokio::fs::read_dir(dir).await {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(format!("list {}: {e}", dir.display())),
                };
                while let Some(e) = rd
                    .next_entry()
                    .await
                    .map_err(|e| format!("list {}: {e}", dir.display()))?
                {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(taken_at) = copy_time(job, &name) {
                        let size = e.metadata().await.map(|m| m.len()).unwrap_or(0);
                        out.push(StoredCopy {
                            name,
                            taken_at,
                            size,
                        });
                    }
                }
            }
            Storage::S3(b) => b.list(job, &mut out).await?,
            Storage::Azure(c) => c.list(job, &mut out).await?,
        }
        out.sort_by(|a, b| (a.taken_at, &a.name).cmp(&(b.taken_at, &b.name)));
        Ok(out)
    }

    /// A local path holding copy `name`: the file itself for a directory,
    /// a download into `scratch` for S3 and Azure.
    pub async fn fetch(&self, name: &str, scratch: &Path) -> Result<PathBuf, String> {
        match self {
            Storage::Local(dir) => Ok(dir.join(name)),
            Storage::S3(b) => b.fetch(name, scratch).await,
            Storage::Azure(c) => c.fetch(name, scratch).await,
        }
    }

    /// Deletes copy `name`.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        match self {
            Storage::Local(dir) => tokio::fs::remove_file(dir.join(name))
                .await
                .map_err(|e| format!("delete {name}: {e}")),
            Storage::S3(b) => b.delete(name).await,
            Storage::Azure(c) => c.delete(name).await,
        }
    }
}

/// The sha256 of a file, hex, and its size.
pub async fn sha256_file(path: &Path) -> Result<(String, u64), String> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T02:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let n = copy_name("nightly", at);
        assert_eq!(n, "nightly-20260301T020005.000Z.dump");
        assert_eq!(copy_time("nightly", &n), Some(at));
        // Two runs in one second get two names.
        let later = at + chrono::Duration::milliseconds(250);
        assert_eq!(
            copy_name("nightly", later),
            "nightly-20260301T020005.250Z.dump"
        );
        assert_eq!(
            copy_time("nightly", &copy_name("nightly", later)),
            Some(later)
        );
        // Names from before milliseconds still count as copies.
        assert_eq!(
            copy_time("nightly", "nightly-20260301T020005Z.dump"),
            Some(at)
        );
        assert_eq!(copy_time("night", &n), None);
        assert_eq!(copy_time("nightly", "nightly-x.dump"), None);
    }
}
