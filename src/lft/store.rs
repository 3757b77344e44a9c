//! The content-addressed attachment store: `data_dir/lft/objects/ab/cdef...`
//! holds the bytes of the attachment whose SHA-256 is `abcdef...`, and
//! `...json` beside it its [`Meta`]. Writes go to a temporary file that is
//! renamed into place, so an object is either complete or absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{LftError, Result};

/// What is known about a stored attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// File name from the message, when it named one.
    pub file_name: Option<String>,
    /// `type/subtype`.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// `Message-ID` of the message it came from.
    pub message_id: Option<String>,
    /// The member that injected the message.
    pub source_member: String,
    /// When it was stored (Unix time).
    pub time: u64,
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `s` is a SHA-256 in lowercase hex (64 characters).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The store under one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store in `dir` (`data_dir/lft/objects`); created on first write.
    pub fn new(dir: &Path) -> Store {
        Store {
            root: dir.to_path_buf(),
        }
    }

    /// Path of the content of `sha` (which must be valid).
    pub fn object_path(&self, sha: &str) -> PathBuf {
        let (head, tail) = sha.split_at(2.min(sha.len()));
        self.root.join(head).join(tail)
    }

    fn meta_path(&self, sha: &str) -> PathBuf {
        self.object_path(sha).with_extension("json")
    }

    /// Whether the object and its metadata are present.
    pub fn contains(&self, sha: &str) -> bool {
        is_sha256(sha) && self.object_path(sha).is_file() && self.meta_path(sha).is_file()
    }

    /// The metadata of `sha`, when stored.
    pub fn meta(&self, sha: &str) -> Result<Option<Meta>> {
        if !is_sha256(sha) {
            return Ok(None);
        }
        match std::fs::read(self.meta_path(sha)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                LftError::Corrupt(format!("{}: {e}", self.meta_path(sha).display()))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LftError::io(&self.meta_path(sha), e)),
        }
    }

    /// Stores `data` with `meta` (whose `sha256` and `size` are set from the
    /// data). Idempotent: an object already present is kept; returns false then.
    pub fn put(&self, data: &[u8], mut meta: Meta) -> Result<(bool, Meta)> {
        meta.sha256 = sha256_hex(data);
        meta.size = data.len() as u64;
        if self.contains(&meta.sha256) {
            let existing = self.meta(&meta.sha256)?.unwrap_or(meta);
            return Ok((false, existing));
        }
        let object = self.object_path(&meta.sha256);
        let dir = object.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| LftError::io(&dir, e))?;
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| LftError::Corrupt(e.to_string()))?;
        write_atomic(&object, data)?;
        write_atomic(&self.meta_path(&meta.sha256), &json)?;
        Ok((true, meta))
    }
}

/// Writes `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(LftError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            sha256: String::new(),
            file_name: Some("a.bin".into()),
            content_type: "application/pdf".into(),
            size: 0,
            message_id: Some("m@x".into()),
            source_member: "gw1".into(),
            time: 1,
        }
    }

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let (new, m) = store.put(b"hello", meta()).unwrap();
        assert!(new);
        assert_eq!(
            m.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(m.size, 5);
        let path = store.object_path(&m.sha256);
        assert!(
            path.ends_with("2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(store.meta(&m.sha256).unwrap(), Some(m.clone()));
        let (again, _) = store.put(b"hello", meta()).unwrap();
        assert!(!again);
        assert!(store.contains(&m.sha256));
        assert!(!store.contains(&"0".repeat(64)));
        assert_eq!(store.meta(&"0".repeat(64)).unwrap(), None);
        assert_eq!(store.meta("../etc").unwrap(), None);
    }

    #[test]
    fn sha_syntax_and_hex() {
        for (s, ok) in [
            ("a".repeat(64), true),
            ("A".repeat(64), false),
            ("a".repeat(63), false),
            (format!("{}g", "a".repeat(63)), false),
            ("../../../../etc/passwd".into(), false),
        ] {
            assert_eq!(is_sha256(&s), ok, "{s}");
        }
        assert_eq!(unhex(&hex(b"\x00\xffab")).unwrap(), b"\x00\xffab");
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
