//! Verification of an RDB file without a Redis server: the `REDIS` magic
//! and a four-digit version, and, from version 5 on, the trailing CRC64
//! (Jones polynomial, reflected, as Redis computes it over every byte
//! before the checksum, stored little-endian in the last 8 bytes) after
//! the EOF opcode `0xFF`. A checksum of 0 means the server saves with
//! `rdbchecksum no`: only the magic and the EOF opcode can be checked then,
//! and the result says so.
//!
//! Why this and not loading the copy into a throwaway `redis-server`:
//! the check needs no Redis binary where the copy is verified (an S3
//! verification host, the backup host), takes one sequential read, and the
//! CRC64 catches any change to the file that the sha256 of the backup run
//! would not know about (a copy whose recorded checksum is missing, or a
//! file broken before medic checksummed it). It does not count keys: the
//! key count is recorded at backup time from INFO keyspace.

use std::path::Path;

use tokio::io::AsyncReadExt;

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdbInfo {
    /// The RDB format version (`REDIS0011` → 11).
    pub version: u32,
    /// The stored CRC64; `None` before version 5; `Some(0)` when the
    /// server saves without a checksum.
    pub crc64: Option<u64>,
}

impl RdbInfo {
    /// The checksum as 16 hex digits, if there is one.
    pub fn crc64_hex(&self) -> Option<String> {
        self.crc64.filter(|c| *c != 0).map(|c| format!("{c:016x}"))
    }

    /// One line for humans.
    pub fn describe(&self) -> String {
        match self.crc64 {
            Some(0) => format!(
                "RDB version {}: no checksum (rdbchecksum no), magic and EOF checked",
                self.version
            ),
            Some(c) => format!("RDB version {}: CRC64 {c:016x} matches", self.version),
            None => format!(
                "RDB version {}: no checksum in this version, magic checked",
                self.version
            ),
        }
    }
}

const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

const fn table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut b = 0;
        while b < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            b += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
}

static TABLE: [u64; 256] = table();

/// Redis's CRC64 of `data`, continuing from `crc` (0 to start).
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    for &b in data {
        crc = TABLE[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Checks the RDB file at `path` (see the module docs).
pub async fn check(path: &Path) -> Result<RdbInfo, String> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let mut head = [0u8; 9];
    f.read_exact(&mut head)
        .await
        .map_err(|_| format!("not an RDB file: {len} bytes, shorter than the REDIS header"))?;
    if &head[..5] != b"REDIS" {
        return Err("not an RDB file: it does not start with the REDIS magic".into());
    }
    let version: u32 = std::str::from_utf8(&head[5..])
        .ok()
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an RDB file: bad version {:?}",
                String::from_utf8_lossy(&head[5..])
            )
        })?;
    if version < 5 {
        return Ok(RdbInfo {
            version,
            crc64: None,
        });
    }
    // Header, at least the EOF opcode, then 8 bytes of checksum.
    if len < 9 + 1 + 8 {
        return Err(format!("RDB file truncated: {len} bytes"));
    }
    let body = len - 8;
    let mut crc = crc64(0, &head);
    let mut read = head.len() as u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut last = 0u8;
    while read < body {
        let want = ((body - read) as usize).min(buf.len());
        f.read_exact(&mut buf[..want])
            .await
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        crc = crc64(crc, &buf[..want]);
        last = buf[want - 1];
        read += want as u64;
    }
    let mut tail = [0u8; 8];
    f.read_exact(&mut tail)
        .await
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    let stored = u64::from_le_bytes(tail);
    if last != 0xff {
        return Err(format!(
            "RDB file truncated or corrupt: no EOF opcode before the checksum (byte {last:#04x})"
        ));
    }
    if stored != 0 && stored != crc {
        return Err(format!(
            "RDB CRC64 mismatch: the file says {stored:016x}, its contents give {crc:016x}: the copy is corrupt"
        ));
    }
    Ok(RdbInfo {
        version,
        crc64: Some(stored),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_is_redis_jones() {
        // The check value in Redis's crc64.c.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        // Incremental equals one pass.
        assert_eq!(crc64(crc64(0, b"1234"), b"56789"), crc64(0, b"123456789"));
    }

    fn rdb(body: &[u8]) -> Vec<u8> {
        let mut v = b"REDIS0011".to_vec();
        v.extend_from_slice(body);
        v.push(0xff);
        let c = crc64(0, &v);
        v.extend_from_slice(&c.to_le_bytes());
        v
    }

    async fn check_bytes(b: &[u8]) -> Result<RdbInfo, String> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b).unwrap();
        check(f.path()).await
    }

    #[tokio::test]
    async fn good_bad_and_unchecksummed_files() {
        let good = rdb(b"\xfa\x09redis-ver\x057.0.0");
        let info = check_bytes(&good).await.unwrap();
        assert_eq!(info.version, 11);
        assert!(info.describe().contains("matches"), "{}", info.describe());

        let mut flipped = good.clone();
        flipped[12] ^= 0x01;
        let e = check_bytes(&flipped).await.unwrap_err();
        assert!(e.contains("CRC64 mismatch"), "{e}");

        let e = check_bytes(&good[..good.len() - 3]).await.unwrap_err();
        assert!(e.contains("truncated") || e.contains("mismatch"), "{e}");

        let e = check_bytes(b"NOTREDIS0011\xff00000000").await.unwrap_err();
        assert!(e.contains("REDIS magic"), "{e}");
        let e = check_bytes(b"RED").await.unwrap_err();
        assert!(e.contains("shorter"), "{e}");

        let mut nosum = good[..good.len() - 8].to_vec();
        nosum.extend_from_slice(&[0; 8]);
        let info = check_bytes(&nosum).await.unwrap();
        assert_eq!(info.crc64, Some(0));
        assert!(info.describe().contains("no checksum"));
    }
}
