//! Master keys: where they come from (env or a 0600 key file), their fingerprints, and the
//! keyring that holds the current key plus retired keys still accepted for opening records.

use std::path::{Path, PathBuf};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

use super::CryptoError;

/// One 256-bit master key and its public fingerprint (the key id stored next to each record).
#[derive(Clone)]
pub struct MasterKey {
    bytes: std::sync::Arc<SecretBox<[u8; 32]>>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"vault-mcp master key id\0")
            .chain_update(bytes)
            .finalize();
        MasterKey {
            id: format!("k{}", &hex::encode(digest)[..12]),
            bytes: std::sync::Arc::new(SecretBox::new(Box::new(bytes))),
        }
    }

    /// Parse a key written as base64 (standard or url-safe, padded or not) or 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let raw = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            STANDARD
                .decode(t)
                .ok()
                .or_else(|| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')).ok())
        };
        let raw = raw.ok_or_else(|| {
            CryptoError::Key(
                "not valid base64 or hex; generate one with `vault-mcp key generate`".into(),
            )
        })?;
        let arr: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            CryptoError::Key(format!(
                "decodes to {} bytes, a master key must be exactly 32 bytes; generate one with `vault-mcp key generate`",
                raw.len()
            ))
        })?;
        Ok(Self::from_bytes(arr))
    }

    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        Self::from_bytes(b)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        self.bytes.expose_secret()
    }

    /// A separate 256-bit key for another purpose (e.g. signing browser cookies), derived with
    /// HMAC-SHA256 so the master key itself never leaves this module.
    pub fn derive(&self, label: &str) -> zeroize::Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes()).expect("any key length");
        mac.update(b"vault-mcp derived key\0");
        mac.update(label.as_bytes());
        zeroize::Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The key in the form written to key files (base64). Only for `key generate` / rotation.
    pub fn to_b64(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(STANDARD.encode(self.bytes()))
    }
}

/// A new random key as base64 text.
pub fn generate_key_b64() -> zeroize::Zeroizing<String> {
    MasterKey::generate().to_b64()
}

/// Where the keyring was loaded from, so it can be reloaded after a rotation by another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `VAULT_MCP_MASTER_KEY` (comma-separated: current first, then retired keys).
    Env,
    /// A key file: one key per line, current first.
    File(PathBuf),
    /// Built in memory (tests).
    Memory,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => f.write_str("VAULT_MCP_MASTER_KEY"),
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Memory => f.write_str("in-memory key"),
        }
    }
}

/// The current master key plus retired ones (accepted for opening, never for sealing).
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
    source: KeySource,
}

impl Keyring {
    pub fn from_keys(keys: Vec<MasterKey>) -> Self {
        assert!(!keys.is_empty(), "a keyring needs at least one key");
        Keyring {
            keys,
            source: KeySource::Memory,
        }
    }

    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id()).collect()
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    fn parse_list(text: &str, what: &str) -> Result<Vec<MasterKey>, CryptoError> {
        let mut keys = Vec::new();
        for (i, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            keys.push(
                MasterKey::parse(line)
                    .map_err(|e| CryptoError::Key(format!("{what}, entry {}: {e}", i + 1)))?,
            );
        }
        if keys.is_empty() {
            return Err(CryptoError::Key(format!("{what} holds no key")));
        }
        Ok(keys)
    }

    /// Keys from the `VAULT_MCP_MASTER_KEY` value.
    pub fn from_env_value(value: &str) -> Result<Self, CryptoError> {
        Ok(Keyring {
            keys: Self::parse_list(value, "VAULT_MCP_MASTER_KEY")?,
            source: KeySource::Env,
        })
    }

    /// Keys from a key file. Refuses files other users can read, as ssh does.
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            CryptoError::Key(format!("cannot read key file {}: {e}", path.display()))
        })?;
        Ok(Keyring {
            keys: Self::parse_list(&text, &format!("key file {}", path.display()))?,
            source: KeySource::File(path.to_owned()),
        })
    }

    /// Create a key file with a fresh key (mode 0600, never overwriting).
    pub fn create_file(path: &Path) -> Result<Self, CryptoError> {
        let key = MasterKey::generate();
        write_key_file(path, std::slice::from_ref(&key), false)?;
        Ok(Keyring {
            keys: vec![key],
            source: KeySource::File(path.to_owned()),
        })
    }

    /// Re-read the source (after another process rotated the key file). Env and memory are fixed.
    pub fn reload(&self) -> Result<Option<Self>, CryptoError> {
        match &self.source {
            KeySource::File(p) => Self::from_file(p).map(Some),
            _ => Ok(None),
        }
    }

    /// A keyring with `new` as current and every key of this one retired behind it.
    pub fn rotated(&self, new: MasterKey) -> Self {
        let mut keys = vec![new];
        keys.extend(self.keys.iter().cloned());
        Keyring {
            keys,
            source: self.source.clone(),
        }
    }

    /// Only the current key (after all records were re-wrapped, retired keys can go).
    pub fn current_only(&self) -> Self {
        Keyring {
            keys: vec![self.keys[0].clone()],
            source: self.source.clone(),
        }
    }

    /// Write this keyring to a key file (replacing it atomically).
    pub fn save_to(&self, path: &Path) -> Result<(), CryptoError> {
        write_key_file(path, &self.keys, true)
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), CryptoError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| CryptoError::Key(format!("cannot read key file {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::Key(format!(
            "key file {} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), CryptoError> {
    Ok(())
}

fn write_key_file(path: &Path, keys: &[MasterKey], replace: bool) -> Result<(), CryptoError> {
    use std::io::Write;
    let err = |e: std::io::Error| {
        CryptoError::Key(format!("cannot write key file {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut body = zeroize::Zeroizing::new(String::from(
        "# vault-mcp master keys: the first line seals, later lines only open (retired keys).\n",
    ));
    for k in keys {
        body.push_str(&k.to_b64());
        body.push('\n');
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let target = if replace { &tmp } else { path };
    let mut f = opts.open(target).map_err(err)?;
    f.write_all(body.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    if replace {
        std::fs::rename(&tmp, path).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_formats_and_errors() {
        let k = MasterKey::generate();
        let b64 = k.to_b64();
        assert_eq!(MasterKey::parse(&b64).unwrap().id(), k.id());
        let hex = hex::encode(k.bytes());
        assert_eq!(MasterKey::parse(&hex).unwrap().id(), k.id());
        let e = MasterKey::parse("c2hvcnQ=").unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
        assert!(
            MasterKey::parse("!!!")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }

    #[test]
    fn key_file_is_created_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let ring = Keyring::create_file(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let again = Keyring::from_file(&p).unwrap();
        assert_eq!(again.current().id(), ring.current().id());
        // never overwritten by create
        assert!(Keyring::create_file(&p).is_err());
        let rotated = ring.rotated(MasterKey::generate());
        rotated.save_to(&p).unwrap();
        let back = Keyring::from_file(&p).unwrap();
        assert_eq!(back.ids().len(), 2);
        assert_eq!(back.ids()[1], ring.current().id());
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        Keyring::create_file(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
