//! This node's secrets master key(s): where they come from, checked at boot.
//!
//! ```text
//!  --dev                  fixed, publicly known key (loud WARN; never in production)
//!  PICLOUD_SECRET_KEY     base64 of 32 bytes (+ PICLOUD_SECRET_KEY_PREVIOUS: comma-separated)
//!  <data>/secret.key      first key line current, later lines previous ("#" comments)
//!  none, joining          the cluster's keys, received at join over the join's TLS
//!                         channel and stored in <data>/secret.key (0600) before use
//!  none of these          generate <data>/secret.key (0600) and WARN: every node needs it
//! ```
//!
//! "Joining" is a first start with `--join` (the data dir holds no node
//! yet): [`SecretKeys::load`] then answers `None` and [`store_received`]
//! writes what the join handed over.
//!
//! A key is never logged or printed; only its id (the first 8 bytes of its
//! SHA-256, in hex) is.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use picloud_storage::StateReader;
use picloud_storage::secret_box::{Keyring, MasterKey, sealed_key_id};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The key file's name inside the data dir.
pub const KEY_FILE_NAME: &str = "secret.key";
/// Environment variable of the current key.
pub const ENV_CURRENT: &str = "PICLOUD_SECRET_KEY";
/// Environment variable of previous keys (comma-separated).
pub const ENV_PREVIOUS: &str = "PICLOUD_SECRET_KEY_PREVIOUS";
/// The most previous keys a node holds.
pub const PREVIOUS_KEYS_MAX: usize = 8;

/// What `--dev` seals with: derived from a public phrase, so it protects nothing.
const DEV_KEY_PHRASE: &[u8] = b"picloud insecure development secrets key";

const DEV_WARNING: &str =
    "--dev: secrets are sealed with a fixed, publicly known key; never use --dev for real secrets";

/// Where the current key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Dev,
    Env,
    File(PathBuf),
    /// Generated on this start into this file.
    Generated(PathBuf),
    /// Received from the cluster at join and stored in this file.
    Joined(PathBuf),
}

/// This node's keyring and where it came from.
#[derive(Debug, Clone)]
pub struct SecretKeys {
    pub keyring: Arc<Keyring>,
    pub source: KeySource,
}

impl SecretKeys {
    /// Resolves the keys from `--dev`, the environment and the data dir.
    /// With `joining` (a first start with `--join`) and no key configured,
    /// answers `None`: the join brings the cluster's keys.
    pub fn load(data_dir: &Path, dev: bool, joining: bool) -> anyhow::Result<Option<SecretKeys>> {
        let current = std::env::var(ENV_CURRENT)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let previous = std::env::var(ENV_PREVIOUS).ok().unwrap_or_default();
        if joining && !dev && current.is_none() && !data_dir.join(KEY_FILE_NAME).exists() {
            if !previous.trim().is_empty() {
                bail!(
                    "{ENV_PREVIOUS} is set without {ENV_CURRENT}: set both, or neither to receive the cluster's keys at join"
                );
            }
            return Ok(None);
        }
        resolve(data_dir, dev, current.as_deref(), &previous).map(Some)
    }

    /// The keys a join received (already stored in `path`).
    pub fn joined(keyring: Arc<Keyring>, path: PathBuf) -> SecretKeys {
        SecretKeys {
            keyring,
            source: KeySource::Joined(path),
        }
    }

    /// Logs where the key came from (id only) and what the operator must know.
    pub fn log_at_boot(&self) {
        let key_id = self.keyring.current().id_hex();
        match &self.source {
            KeySource::Dev => {
                tracing::warn!(key_id, "{DEV_WARNING}");
                eprintln!("WARNING: {DEV_WARNING}");
            }
            KeySource::Env => tracing::info!(key_id, "secrets master key from {ENV_CURRENT}"),
            KeySource::File(path) => {
                tracing::info!(key_id, file = %path.display(), "secrets master key from the key file")
            }
            KeySource::Joined(path) => tracing::info!(
                key_id,
                file = %path.display(),
                "secrets master key received from the cluster at join and stored in the key file: back it up"
            ),
            KeySource::Generated(path) => tracing::warn!(
                key_id,
                file = %path.display(),
                "generated a new secrets master key: back this file up, without it the secrets are lost; nodes that join this cluster with no key configured receive it at join"
            ),
        }
        let previous = self.keyring.previous_ids();
        if !previous.is_empty() {
            tracing::info!(previous = %previous.join(","), "previous secrets keys held for rotation");
        }
    }

    /// Warns about stored secrets this node cannot open (a wrong key).
    pub fn check_stored(&self, reader: &StateReader) -> anyhow::Result<()> {
        let mut foreign: Vec<String> = Vec::new();
        let mut count = 0usize;
        for app in reader.apps()? {
            for (_, record) in reader.secrets(&app.name)? {
                if let Some(id) = self.foreign_key_id(&record.sealed) {
                    count += 1;
                    if !foreign.contains(&id) {
                        foreign.push(id);
                    }
                }
            }
        }
        if count > 0 {
            tracing::error!(
                secrets = count,
                sealed_with = %foreign.join(","),
                this_node = %self.keyring.describe(),
                "this node's secrets master key cannot open {count} stored secret(s): secrets.get fails with secret_key_mismatch until it is started with the cluster's {ENV_CURRENT}"
            );
        }
        Ok(())
    }

    /// The id of the key `sealed` names when this node does not hold it.
    pub fn foreign_key_id(&self, sealed: &[u8]) -> Option<String> {
        sealed_key_id(sealed).filter(|id| !self.keyring.holds(id))
    }

    /// What `GET /_/api/v1/cluster/status` shows about this node's key.
    pub fn status_json(&self) -> Value {
        let source = match &self.source {
            KeySource::Dev => "dev",
            KeySource::Env => "env",
            KeySource::File(_) => "file",
            KeySource::Generated(_) => "generated",
            KeySource::Joined(_) => "joined",
        };
        let mut status = json!({
            "key_id": self.keyring.current().id_hex(),
            "previous_key_ids": self.keyring.previous_ids(),
            "source": source,
        });
        if self.source == KeySource::Dev {
            status["warning"] = json!(DEV_WARNING);
        }
        status
    }
}

fn resolve(
    data_dir: &Path,
    dev: bool,
    env_current: Option<&str>,
    env_previous: &str,
) -> anyhow::Result<SecretKeys> {
    let mut previous = env_previous
        .split(',')
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .enumerate()
        .map(|(index, text)| parse_key(text, &format!("{ENV_PREVIOUS} entry {}", index + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let path = data_dir.join(KEY_FILE_NAME);
    let (current, source) = if dev {
        if env_current.is_some() {
            bail!("--dev uses a fixed development key: unset {ENV_CURRENT} or drop --dev");
        }
        let digest = Sha256::digest(DEV_KEY_PHRASE);
        (MasterKey::from_bytes(digest.into()), KeySource::Dev)
    } else if let Some(text) = env_current {
        (parse_key(text, ENV_CURRENT)?, KeySource::Env)
    } else if path.exists() {
        let (current, from_file) = read_key_file(&path)?;
        previous.extend(from_file);
        (current, KeySource::File(path))
    } else {
        (generate_key_file(&path)?, KeySource::Generated(path))
    };
    if previous.len() > PREVIOUS_KEYS_MAX {
        bail!(
            "{} previous secrets keys given; at most {PREVIOUS_KEYS_MAX} (drop keys no secret is sealed with any more)",
            previous.len()
        );
    }
    previous.retain(|key| key.id_hex() != current.id_hex());
    Ok(SecretKeys {
        keyring: Arc::new(Keyring::new(current, previous)),
        source,
    })
}

/// A master key from its base64 text (32 bytes); `what` names its origin.
pub fn parse_key(text: &str, what: &str) -> anyhow::Result<MasterKey> {
    // Never echo the text: it is (nearly) a key.
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow::anyhow!("{what} is not valid base64 (expected 32 random bytes in base64, e.g. from `head -c 32 /dev/urandom | base64`)"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
        anyhow::anyhow!(
            "{what} decodes to {} bytes; a secrets master key is exactly 32 bytes",
            bytes.len()
        )
    })?;
    Ok(MasterKey::from_bytes(key))
}

/// The current key (first key line) and previous keys (later lines).
fn read_key_file(path: &Path) -> anyhow::Result<(MasterKey, Vec<MasterKey>)> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "the secrets key file is readable by other users: chmod 600 it");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut keys = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(index, line)| parse_key(line, &format!("{} line {}", path.display(), index + 1)));
    let current = keys
        .next()
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("{} holds no key", path.display()))?;
    Ok((current, keys.collect::<anyhow::Result<Vec<_>>>()?))
}

/// The key file's opening comment.
const KEY_FILE_HEADER: &str = "# PiCloud secrets master key (first key line: current; later lines: previous keys).\n# Every node of a cluster needs the same key. Keep a backup: without it the secrets are lost.";

fn generate_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let bytes: [u8; 32] = rand::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{KEY_FILE_HEADER}\n{}", STANDARD.encode(bytes))?;
    file.sync_all()?;
    Ok(MasterKey::from_bytes(bytes))
}

/// Writes the keys a join received to `path` (0600): the current key, then
/// the previous ones, through a temporary file renamed into place, so a
/// crash leaves either no key file (the next start joins again and receives
/// them again) or a whole one.
pub fn store_received(path: &Path, keyring: &Keyring) -> anyhow::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut text = format!("{KEY_FILE_HEADER}\n# Received from the cluster at join.\n");
    for key in std::iter::once(keyring.current()).chain(keyring.previous()) {
        text.push_str(&STANDARD.encode(key.bytes()));
        text.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn env_beats_file_and_previous_keys_join_the_ring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = resolve(dir.path(), false, None, "").expect("generate");
        assert!(matches!(generated.source, KeySource::Generated(_)));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE_NAME))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The next start reads the same key back.
        let again = resolve(dir.path(), false, None, "").expect("file");
        assert_eq!(
            again.keyring.current().id_hex(),
            generated.keyring.current().id_hex()
        );
        let from_env = resolve(dir.path(), false, Some(&encoded(1)), &encoded(2)).expect("env");
        assert_eq!(from_env.source, KeySource::Env);
        assert_eq!(
            from_env.keyring.current().id_hex(),
            MasterKey::from_bytes([1; 32]).id_hex()
        );
        assert_eq!(from_env.keyring.previous().len(), 1);
        let dev = resolve(dir.path(), true, None, "").expect("dev");
        assert_eq!(dev.status_json()["source"], "dev");
        assert!(dev.status_json()["warning"].is_string());
    }

    #[test]
    fn received_keys_are_stored_and_read_back_as_the_same_ring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE_NAME);
        let ring = Keyring::new(
            MasterKey::from_bytes([3; 32]),
            vec![MasterKey::from_bytes([4; 32])],
        );
        store_received(&path, &ring).expect("store");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = resolve(dir.path(), false, None, "").expect("read back");
        assert_eq!(read.source, KeySource::File(path));
        assert_eq!(read.keyring.current().id_hex(), ring.current().id_hex());
        assert_eq!(read.keyring.previous_ids(), ring.previous_ids());
    }

    #[test]
    fn bad_keys_are_refused_with_a_clear_message_that_hides_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = resolve(dir.path(), false, Some("not*base64"), "").expect_err("bad");
        assert!(
            error
                .to_string()
                .contains("PICLOUD_SECRET_KEY is not valid base64")
        );
        assert!(!error.to_string().contains("not*base64"));
        let short = STANDARD.encode([1u8; 16]);
        let error = resolve(dir.path(), false, Some(&short), "").expect_err("short");
        assert!(error.to_string().contains("16 bytes"), "{error}");
        let error = resolve(dir.path(), true, Some(&encoded(1)), "").expect_err("both");
        assert!(error.to_string().contains("--dev"));
        let error = resolve(dir.path(), false, Some(&encoded(1)), "x,").expect_err("previous");
        assert!(
            error
                .to_string()
                .contains("PICLOUD_SECRET_KEY_PREVIOUS entry 1")
        );
    }
}
