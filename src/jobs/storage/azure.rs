//! Azure Blob Storage (and Azurite) backup storage: a small client of the
//! Blob REST API on reqwest: Put Blob (Put Block + Put Block List above
//! one block), Get Blob, Get Blob Properties, List Blobs, Delete Blob,
//! signed with Shared Key (the account key) or authorised by a SAS token.
//!
//! Why not the SDK: the official `azure_storage_blob` 1.1 has no Shared
//! Key (account key) credential, only Entra ID tokens or a SAS already in
//! the URL, and with `azure_core` adds 20 crates; the community
//! `azure_storage_blobs` is deprecated. These calls on the reqwest, hmac,
//! sha2 and base64 medic already builds cost no new crate
//! (docs/jobs-and-drills.md, "Azure Blob").

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use super::{StoredCopy, copy_time};
use crate::config::AzureConfig;

/// The REST API version medic speaks (Put Blob up to 5000 MiB, blocks up
/// to 4000 MiB).
const API_VERSION: &str = "2021-12-02";
/// Files up to this size go in one Put Blob; larger ones in blocks of at
/// least this size (azcopy's default), more when 50,000 blocks (the
/// service's limit per blob) would not hold the file.
const BLOCK: u64 = 8 << 20;
const MAX_BLOCKS: u64 = 50_000;
/// The largest block the service takes.
const MAX_BLOCK: u64 = 4000 << 20;

/// How requests are authorised.
enum Auth {
    /// The decoded account key.
    SharedKey(Vec<u8>),
    /// The SAS token's query string (no leading `?`).
    Sas(String),
}

/// A container and its prefix; the credential is read on first use.
pub struct Container {
    config: Box<AzureConfig>,
    http: reqwest::Client,
    auth: OnceCell<Auth>,
}

impl Container {
    pub fn new(config: AzureConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A stalled transfer fails; a long one does not (the job's
            // timeout bounds the whole run).
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Container {
            config: Box::new(config),
            http,
            auth: OnceCell::new(),
        }
    }

    /// `azure://account/container/prefix`.
    pub fn describe(&self) -> String {
        format!(
            "azure://{}/{}/{}",
            self.config.account, self.config.container, self.config.prefix
        )
    }

    async fn auth(&self) -> Result<&Auth, String> {
        self.auth
            .get_or_try_init(|| async {
                if let Some(k) = &self.config.key {
                    let k = k.resolve().map_err(|e| format!("key: {e}"))?;
                    let bytes = B64
                        .decode(k.expose().trim())
                        .map_err(|e| format!("key: not base64 ({e})"))?;
                    return Ok(Auth::SharedKey(bytes));
                }
                if let Some(s) = &self.config.sas {
                    let s = s.resolve().map_err(|e| format!("sas: {e}"))?;
                    let token = s.expose().trim().trim_start_matches('?').to_string();
                    return Ok(Auth::Sas(token));
                }
                Err("no credential (`key` or `sas`)".to_string())
            })
            .await
    }

    /// The account's endpoint, no trailing slash.
    fn endpoint(&self) -> String {
        match &self.config.endpoint_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{}.blob.core.windows.net", self.config.account),
        }
    }

    /// The URL of the container (`blob` None) or of blob `prefix+name`,
    /// with the query `params`.
    fn url(&self, blob: Option<&str>, params: &[(&str, &str)]) -> Result<Url, String> {
        let mut s = format!("{}/{}", self.endpoint(), self.config.container);
        if let Some(name) = blob {
            s.push('/');
            s.push_str(&encode_path(&format!("{}{name}", self.config.prefix)));
        }
        let mut url = Url::parse(&s).map_err(|e| format!("{s}: {e}"))?;
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }

    /// Sends one request, signed; the response if its status is 2xx, else
    /// an error with the service's code and message.
    async fn send(
        &self,
        method: Method,
        mut url: Url,
        headers: &[(&str, String)],
        body: Vec<u8>,
        what: &str,
    ) -> Result<reqwest::Response, String> {
        let auth = self.auth().await.map_err(|e| format!("{what}: {e}"))?;
        let date = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), API_VERSION.into()));
        let length = body.len();
        let mut authorization = None;
        match auth {
            Auth::SharedKey(key) => {
                let to_sign =
                    string_to_sign(method.as_str(), length, &all, &self.config.account, &url);
                authorization = Some(format!(
                    "SharedKey {}:{}",
                    self.config.account,
                    sign(key, &to_sign)
                ));
            }
            Auth::Sas(token) => {
                let q = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{token}"),
                    _ => token.clone(),
                };
                url.set_query(Some(&q));
            }
        }
        let mut req = self.http.request(method, url);
        for (k, v) in &all {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req = req.header("content-length", length.to_string()).body(body);
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{what} on {}: {}", self.describe(), err_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(format!("{what}: {}", service_error(resp).await))
    }

    /// Creates the container (Create Container; one that exists already
    /// is fine). medic never calls it on its own: creating storage is the
    /// operator's decision; tests and set-up scripts do.
    pub async fn create_container(&self) -> Result<(), String> {
        let what = format!("create container {}", self.describe());
        match self
            .send(
                Method::PUT,
                self.url(None, &[("restype", "container")])?,
                &[],
                Vec::new(),
                &what,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.contains("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Uploads the file at `from` as `name`, and reads its size back.
    pub async fn put(&self, name: &str, from: &Path) -> Result<(), String> {
        let size = tokio::fs::metadata(from)
            .await
            .map_err(|e| format!("read {}: {e}", from.display()))?
            .len();
        let mut f = tokio::fs::File::open(from)
            .await
            .map_err(|e| format!("read {}: {e}", from.display()))?;
        let what = format!("upload {name} to {}", self.describe());
        if size <= BLOCK {
            let body = read_chunk(&mut f, size, from).await?;
            self.send(
                Method::PUT,
                self.url(Some(name), &[])?,
                &[("x-ms-blob-type", "BlockBlob".into())],
                body,
                &what,
            )
            .await?;
        } else {
            let block = block_size(size).ok_or_else(|| {
                format!(
                    "{what}: {size} bytes is more than a block blob holds ({MAX_BLOCKS} blocks of 4000 MiB)"
                )
            })?;
            let mut ids = Vec::new();
            let mut left = size;
            while left > 0 {
                let n = left.min(block);
                let body = read_chunk(&mut f, n, from).await?;
                // Every block id of a blob has the same length.
                let id = B64.encode(format!("{:06}", ids.len()));
                self.send(
                    Method::PUT,
                    self.url(Some(name), &[("comp", "block"), ("blockid", &id)])?,
                    &[],
                    body,
                    &format!("{what} (block {})", ids.len()),
                )
                .await?;
                ids.push(id);
                left -= n;
            }
            let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
            for id in &ids {
                xml.push_str(&format!("<Latest>{id}</Latest>"));
            }
            xml.push_str("</BlockList>");
            self.send(
                Method::PUT,
                self.url(Some(name), &[("comp", "blocklist")])?,
                &[("content-type", "application/xml".into())],
                xml.into_bytes(),
                &format!("{what} (block list)"),
            )
            .await?;
        }
        // Read back: the blob is there, whole.
        let head = self
            .send(
                Method::HEAD,
                self.url(Some(name), &[])?,
                &[],
                Vec::new(),
                &format!("read back {name}"),
            )
            .await?;
        let got = head
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if got != Some(size) {
            return Err(format!(
                "uploaded {name} reads back as {} bytes, not {size}",
                got.map_or_else(|| "unknown".to_string(), |n| n.to_string())
            ));
        }
        Ok(())
    }

    /// Appends every copy of `job` to `out`.
    pub async fn list(&self, job: &str, out: &mut Vec<StoredCopy>) -> Result<(), String> {
        let prefix = format!("{}{job}-", self.config.prefix);
        let mut marker = String::new();
        loop {
            let mut params = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix.as_str()),
            ];
            if !marker.is_empty() {
                params.push(("marker", marker.as_str()));
            }
            let url = self.url(None, &params)?;
            let resp = self
                .send(
                    Method::GET,
                    url,
                    &[],
                    Vec::new(),
                    &format!("list {}", self.describe()),
                )
                .await?;
            let xml = resp
                .text()
                .await
                .map_err(|e| format!("list {}: {e}", self.describe()))?;
            for blob in elements(&xml, "Blob") {
                let Some(key) = element(blob, "Name").map(unescape) else {
                    continue;
                };
                let name = key.strip_prefix(&self.config.prefix).unwrap_or(&key);
                if let Some(taken_at) = copy_time(job, name) {
                    out.push(StoredCopy {
                        name: name.to_string(),
                        taken_at,
                        size: element(blob, "Content-Length")
                            .and_then(|s| s.trim().parse().ok())
                            .unwrap_or(0),
                    });
                }
            }
            match element(&xml, "NextMarker").map(unescape) {
                Some(m) if !m.is_empty() => marker = m,
                _ => break,
            }
        }
        Ok(())
    }

    /// Downloads copy `name` into `scratch`.
    pub async fn fetch(&self, name: &str, scratch: &Path) -> Result<PathBuf, String> {
        let mut resp = self
            .send(
                Method::GET,
                self.url(Some(name), &[])?,
                &[],
                Vec::new(),
                &format!("download {name}"),
            )
            .await?;
        let dest = scratch.join(name);
        let mut f = tokio::fs::File::create(&dest)
            .await
            .map_err(|e| format!("create {}: {e}", dest.display()))?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("download {name}: {}", err_chain(&e)))?
        {
            f.write_all(&chunk)
                .await
                .map_err(|e| format!("write {}: {e}", dest.display()))?;
        }
        f.flush().await.map_err(|e| format!("write: {e}"))?;
        Ok(dest)
    }

    /// Deletes copy `name` (gone already counts as deleted).
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        match self
            .send(
                Method::DELETE,
                self.url(Some(name), &[])?,
                &[],
                Vec::new(),
                &format!("delete {name}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.contains("BlobNotFound") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The block size for a file of `size` bytes: [`BLOCK`], or larger so that
/// [`MAX_BLOCKS`] hold it (whole MiB); `None` past what a blob holds.
fn block_size(size: u64) -> Option<u64> {
    let need = size.div_ceil(MAX_BLOCKS).div_ceil(1 << 20) << 20;
    let b = need.max(BLOCK);
    (b <= MAX_BLOCK).then_some(b)
}

async fn read_chunk(f: &mut tokio::fs::File, n: u64, from: &Path) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)
        .await
        .map_err(|e| format!("read {}: {e}", from.display()))?;
    Ok(buf)
}

/// The Shared Key string to sign of a Blob service request (version
/// 2015-02-21 and later: a zero Content-Length is an empty line).
/// `headers` are lowercase; only the `x-ms-` ones and Content-Type count.
fn string_to_sign(
    method: &str,
    content_length: usize,
    headers: &[(String, String)],
    account: &str,
    url: &Url,
) -> String {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut ms: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| (k.as_str(), v.trim()))
        .collect();
    ms.sort();
    let mut s = format!(
        "{method}\n\n\n{length}\n\n{}\n\n\n\n\n\n{}\n",
        get("content-type"),
        get("range")
    );
    for (k, v) in ms {
        s.push_str(&format!("{k}:{v}\n"));
    }
    // CanonicalizedResource: /account/path, then the query parameters
    // sorted by name, decoded, `name:value` on lines of their own.
    s.push_str(&format!("/{account}{}", url.path()));
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    let mut i = 0;
    while i < params.len() {
        let name = params[i].0.clone();
        let mut values = Vec::new();
        while i < params.len() && params[i].0 == name {
            values.push(params[i].1.clone());
            i += 1;
        }
        s.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    s
}

/// base64(HMAC-SHA256(key, text)).
fn sign(key: &[u8], text: &str) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// Percent-encodes a blob name for the URL path (`/` kept).
fn encode_path(name: &str) -> String {
    let mut s = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The text of the first `<tag>...</tag>` in `xml` (an empty element
/// `<tag />` counts as absent).
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    elements(xml, tag).next()
}

/// The texts of every `<tag>...</tag>` in `xml`, in order. The List Blobs
/// answer is flat and machine-written: no attributes on these tags, no
/// CDATA, so this is all the XML it needs.
fn elements<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let text = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(text)
    })
}

/// XML's five entities and numeric references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `403 AuthenticationFailed: Server failed to authenticate the request...`
async fn service_error(resp: reqwest::Response) -> String {
    let status: StatusCode = resp.status();
    let code = resp
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.text().await.unwrap_or_default();
    let code = code
        .or_else(|| element(&body, "Code").map(unescape))
        .unwrap_or_default();
    let message = element(&body, "Message")
        .map(unescape)
        .and_then(|m| m.lines().next().map(String::from))
        .unwrap_or_default();
    let mut s = format!("{status}");
    if !code.is_empty() {
        s.push_str(&format!(" {code}"));
    }
    if !message.is_empty() {
        s.push_str(&format!(": {message}"));
    }
    s.chars().take(400).collect()
}

/// A reqwest error with its source chain ("error sending request" alone
/// says nothing).
fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_sign_follows_the_shared_key_layout() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/backups?restype=container&comp=list&prefix=pg%2Fdb-",
        )
        .unwrap();
        let headers = vec![
            ("x-ms-version".to_string(), API_VERSION.to_string()),
            (
                "x-ms-date".to_string(),
                "Fri, 04 Dec 2026 18:00:00 GMT".to_string(),
            ),
        ];
        let s = string_to_sign("GET", 0, &headers, "devstoreaccount1", &url);
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:Fri, 04 Dec 2026 18:00:00 GMT\nx-ms-version:2021-12-02\n\
             /devstoreaccount1/devstoreaccount1/backups\n\
             comp:list\nprefix:pg/db-\nrestype:container"
        );
        // A body's length is signed; a zero length is an empty line.
        let put = string_to_sign("PUT", 12, &headers, "a", &url);
        assert!(put.starts_with("PUT\n\n\n12\n"), "{put:?}");
    }

    #[test]
    fn list_answers_are_read_with_entities_and_markers() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" ContainerName="c"><Prefix>p/</Prefix><Blobs><Blob><Name>p/a&amp;b-1.dump</Name><Properties><Content-Length>42</Content-Length></Properties></Blob><Blob><Name>p/c</Name><Properties><Content-Length>7</Content-Length></Properties></Blob></Blobs><NextMarker>m&#x21;</NextMarker></EnumerationResults>"#;
        let names: Vec<String> = elements(xml, "Blob")
            .filter_map(|b| element(b, "Name").map(unescape))
            .collect();
        assert_eq!(names, ["p/a&b-1.dump", "p/c"]);
        assert_eq!(
            element(xml, "NextMarker").map(unescape).as_deref(),
            Some("m!")
        );
        assert_eq!(element("<NextMarker />", "NextMarker"), None);
        assert_eq!(unescape("a &bogus; b"), "a &bogus; b");
    }

    #[test]
    fn blocks_grow_only_when_fifty_thousand_would_not_hold_the_file() {
        assert_eq!(block_size(9 << 20), Some(BLOCK));
        assert_eq!(block_size(MAX_BLOCKS * BLOCK), Some(BLOCK));
        assert_eq!(block_size(MAX_BLOCKS * BLOCK + 1), Some(BLOCK + (1 << 20)));
        assert_eq!(block_size(MAX_BLOCKS * MAX_BLOCK + 1), None);
        assert_eq!(encode_path("pg/a b+c.dump"), "pg/a%20b%2Bc.dump");
    }
}
