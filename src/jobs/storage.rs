//! Where backup copies live: a local directory and/or an S3-compatible
//! bucket. Copies are named `JOB-YYYYMMDDTHHMMSSZ.dump` (UTC), so names
//! sort by time and say when they were taken.

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, NaiveDateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use crate::config::S3Config;

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

/// One place copies are kept.
pub enum Storage {
    Local(PathBuf),
    S3 {
        config: Box<S3Config>,
        client: OnceCell<Client>,
    },
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Storage {
    /// An S3 bucket (the client is built on first use).
    pub fn s3(config: S3Config) -> Self {
        Storage::S3 {
            config: Box::new(config),
            client: OnceCell::new(),
        }
    }

    /// `directory /x` or `s3://bucket/prefix`, for humans.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(d) => format!("directory {}", d.display()),
            Storage::S3 { config, .. } => format!("s3://{}/{}", config.bucket, config.prefix),
        }
    }

    async fn client(&self) -> Result<&Client, String> {
        let Storage::S3 { config, client } = self else {
            return Err("not an S3 storage".into());
        };
        client
            .get_or_try_init(|| async {
                let mut b = match &config.credentials {
                    Some(c) => aws_sdk_s3::Config::builder()
                        .behavior_version(BehaviorVersion::latest())
                        .credentials_provider(c.resolve()?),
                    None => {
                        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
                        aws_sdk_s3::config::Builder::from(&shared)
                    }
                };
                b = b.region(Region::new(config.region.clone()));
                if let Some(url) = &config.endpoint_url {
                    // MinIO, moto and most S3-compatible servers want
                    // path-style URLs.
                    b = b.endpoint_url(url).force_path_style(true);
                }
                Ok(Client::from_conf(b.build()))
            })
            .await
    }

    fn key(&self, name: &str) -> String {
        match self {
            Storage::S3 { config, .. } => format!("{}{name}", config.prefix),
            Storage::Local(_) => name.to_string(),
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
            Storage::S3 { config, .. } => {
                let body = ByteStream::from_path(from)
                    .await
                    .map_err(|e| format!("read {}: {e}", from.display()))?;
                self.client()
                    .await?
                    .put_object()
                    .bucket(&config.bucket)
                    .key(self.key(name))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("upload to {}: {}", self.describe(), err_text(&e)))?;
                // Read back: the object is there, whole.
                let want = tokio::fs::metadata(from)
                    .await
                    .map_err(|e| format!("read {}: {e}", from.display()))?
                    .len();
                let head = self
                    .client()
                    .await?
                    .head_object()
                    .bucket(&config.bucket)
                    .key(self.key(name))
                    .send()
                    .await
                    .map_err(|e| format!("read back {name}: {}", err_text(&e)))?;
                let got = head.content_length().unwrap_or(-1);
                if got != want as i64 {
                    return Err(format!(
                        "uploaded {name} reads back as {got} bytes, not {want}"
                    ));
                }
                Ok(())
            }
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
            Storage::S3 { config, .. } => {
                let client = self.client().await?;
                let mut token = None;
                loop {
                    let page = client
                        .list_objects_v2()
                        .bucket(&config.bucket)
                        .prefix(format!("{}{job}-", config.prefix))
                        .set_continuation_token(token)
                        .send()
                        .await
                        .map_err(|e| format!("list {}: {}", self.describe(), err_text(&e)))?;
                    for o in page.contents() {
                        let Some(key) = o.key() else { continue };
                        let name = key.strip_prefix(&config.prefix).unwrap_or(key);
                        if let Some(taken_at) = copy_time(job, name) {
                            out.push(StoredCopy {
                                name: name.to_string(),
                                taken_at,
                                size: o.size().unwrap_or(0).max(0) as u64,
                            });
                        }
                    }
                    token = page.next_continuation_token().map(String::from);
                    if token.is_none() {
                        break;
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.taken_at, &a.name).cmp(&(b.taken_at, &b.name)));
        Ok(out)
    }

    /// A local path holding copy `name`: the file itself for a directory,
    /// a download into `scratch` for S3.
    pub async fn fetch(&self, name: &str, scratch: &Path) -> Result<PathBuf, String> {
        match self {
            Storage::Local(dir) => Ok(dir.join(name)),
            Storage::S3 { config, .. } => {
                let mut obj = self
                    .client()
                    .await?
                    .get_object()
                    .bucket(&config.bucket)
                    .key(self.key(name))
                    .send()
                    .await
                    .map_err(|e| format!("download {name}: {}", err_text(&e)))?;
                let dest = scratch.join(name);
                let mut f = tokio::fs::File::create(&dest)
                    .await
                    .map_err(|e| format!("create {}: {e}", dest.display()))?;
                while let Some(chunk) = obj
                    .body
                    .try_next()
                    .await
                    .map_err(|e| format!("download {name}: {e}"))?
                {
                    f.write_all(&chunk)
                        .await
                        .map_err(|e| format!("write {}: {e}", dest.display()))?;
                }
                f.flush().await.map_err(|e| format!("write: {e}"))?;
                Ok(dest)
            }
        }
    }

    /// Deletes copy `name`.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        match self {
            Storage::Local(dir) => tokio::fs::remove_file(dir.join(name))
                .await
                .map_err(|e| format!("delete {name}: {e}")),
            Storage::S3 { config, .. } => {
                self.client()
                    .await?
                    .delete_object()
                    .bucket(&config.bucket)
                    .key(self.key(name))
                    .send()
                    .await
                    .map_err(|e| format!("delete {name}: {}", err_text(&e)))?;
                Ok(())
            }
        }
    }
}

/// An SDK error with its source chain (the top level alone says only
/// "service error").
fn err_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
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
