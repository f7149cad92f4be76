//! Opening the store a config names (`store:`): SQLite (its directory
//! created if needed) or PostgreSQL.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, StoreConfig};

use super::{PostgresStore, SqliteStore, Store, StoreError};

/// Why the configured store could not be opened. Each message names the
/// place and ends with the cause, so it reads whole when printed alone.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("creating the store directory {}: {cause}", dir.display())]
    CreateDir { dir: PathBuf, cause: std::io::Error },
    #[error("opening the store {}: {cause}", path.display())]
    Sqlite { path: PathBuf, cause: StoreError },
    #[error("opening the PostgreSQL store at {host}:{port}: {cause}")]
    Postgres {
        host: String,
        port: u16,
        cause: StoreError,
    },
}

/// Opens the configured store, creating its directory if needed.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, OpenError> {
    match &config.store {
        StoreConfig::Sqlite { path } => {
            let path = config.resolve_path(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|cause| OpenError::CreateDir {
                    dir: dir.to_path_buf(),
                    cause,
                })?;
            }
            let store = SqliteStore::open(&path)
                .await
                .map_err(|cause| OpenError::Sqlite { path, cause })?;
            Ok(Arc::new(store))
        }
        StoreConfig::Postgres(target) => {
            let store = PostgresStore::open(target)
                .await
                .map_err(|cause| OpenError::Postgres {
                    host: target.host.clone(),
                    port: target.port,
                    cause,
                })?;
            Ok(Arc::new(store))
        }
    }
}
