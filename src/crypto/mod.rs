//! Encryption at rest: envelope encryption of credential records and master-key handling.
//!
//! Each sealed record gets its own random data key (XChaCha20-Poly1305); the data key is wrapped
//! by the master key. The record id is bound as associated data into both layers, so a sealed
//! blob copied onto another row does not open. A database dump alone decrypts nothing, and key
//! rotation only re-wraps data keys. This module knows nothing about the store or the vault.

mod chain;
mod envelope;
mod keys;

pub use chain::ChainKey;
pub use envelope::{Sealed, open, rewrap, seal};
pub use keys::{KeySource, Keyring, MasterKey, generate_key_b64};

/// Everything that can go wrong opening or sealing a record. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "record {record} was sealed with master key {record_key}, but the loaded master key is {loaded}; \
         start vault-mcp with the key this vault was created with (VAULT_MCP_MASTER_KEY or the key file), \
         or add the old key as a second line of the key file"
    )]
    UnknownKey {
        record: String,
        record_key: String,
        loaded: String,
    },
    #[error(
        "record {record} failed authentication: it was modified, moved to another row, or is corrupt"
    )]
    Tampered { record: String },
    #[error("record {record} is not in a format this version understands ({why})")]
    Malformed { record: String, why: String },
    #[error("master key: {0}")]
    Key(String),
}
