//! S3 (and S3-compatible) backup storage: the `aws` feature. Without it a
//! bucket is still described, but every operation refuses (loading the
//! config refused it already; this is the backstop).

#[cfg(feature = "aws")]
use std::path::Path;
use std::path::PathBuf;

#[cfg(feature = "aws")]
use aws_sdk_s3::Client;
#[cfg(feature = "aws")]
use aws_sdk_s3::config::{BehaviorVersion, Region};
#[cfg(feature = "aws")]
use aws_sdk_s3::primitives::ByteStream;
#[cfg(feature = "aws")]
use tokio::io::AsyncWriteExt;
#[cfg(feature = "aws")]
use tokio::sync::OnceCell;

#[cfg(feature = "aws")]
use super::{StoredCopy, copy_time};
use crate::config::S3Config;

/// A bucket and its prefix; the client is built on first use.
pub struct Bucket {
    config: Box<S3Config>,
    #[cfg(feature = "aws")]
    client: OnceCell<Client>,
}

impl Bucket {
    pub fn new(config: S3Config) -> Self {
        Bucket {
            config: Box::new(config),
            #[cfg(feature = "aws")]
            client: OnceCell::new(),
        }
    }

    /// `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.config.bucket, self.config.prefix)
    }
}

#[cfg(not(feature = "aws"))]
impl Bucket {
    fn refused(&self) -> String {
        crate::features::Feature::Aws.needed_by(&format!("backup storage {}", self.describe()))
    }

    pub async fn put(&self, _name: &str, _from: &std::path::Path) -> Result<(), String> {
        Err(self.refused())
    }

    pub async fn list(&self, _job: &str, _out: &mut Vec<super::StoredCopy>) -> Result<(), String> {
        Err(self.refused())
    }

    pub async fn fetch(&self, _name: &str, _scratch: &std::path::Path) -> Result<PathBuf, String> {
        Err(self.refused())
    }

    pub async fn delete(&self, _name: &str) -> Result<(), String> {
        Err(self.refused())
    }
}

#[cfg(feature = "aws")]
impl Bucket {
    async fn client(&self) -> Result<&Client, String> {
        let config = &self.config;
        self.client
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
        format!("{}{name}", self.config.prefix)
    }

    /// Uploads the file at `from` as `name`, and reads it back.
    pub async fn put(&self, name: &str, from: &Path) -> Result<(), String> {
        let body = ByteStream::from_path(from)
            .await
            .map_err(|e| format!("read {}: {e}", from.display()))?;
        self.client()
            .await?
            .put_object()
            .bucket(&self.config.bucket)
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
            .bucket(&self.config.bucket)
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

    /// Appends every copy of `job` to `out`.
    pub async fn list(&self, job: &str, out: &mut Vec<StoredCopy>) -> Result<(), String> {
        let client = self.client().await?;
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(format!("{}{job}-", self.config.prefix))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| format!("list {}: {}", self.describe(), err_text(&e)))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let name = key.strip_prefix(&self.config.prefix).unwrap_or(key);
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
        Ok(())
    }

    /// Downloads copy `name` into `scratch`.
    pub async fn fetch(&self, name: &str, scratch: &Path) -> Result<PathBuf, String> {
        let mut obj = self
            .client()
            .await?
            .get_object()
            .bucket(&self.config.bucket)
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

    /// Deletes copy `name`.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        self.client()
            .await?
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(|e| format!("delete {name}: {}", err_text(&e)))?;
        Ok(())
    }
}

/// An SDK error with its source chain (the top level alone says only
/// "service error").
#[cfg(feature = "aws")]
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
