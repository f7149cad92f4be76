//! `redis.flush`: FLUSHALL ASYNC, or SCAN MATCH + batched UNLINK.

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFlushParams {
    /// A config target of kind `redis`.
    pub target: String,
    /// Only keys matching this glob; absent: everything.
    pub pattern: Option<String>,
}
