//! Where the compressed chunks of the gzip layers this store wrote are, so that a layer written
//! later reuses the ones whose input it shares instead of compressing them again (see
//! `cairn_layer::ChunkCache`).
//!
//! One small file per blob, `gzip-chunks/<hex of the blob digest>`: records of 48 bytes (the
//! chunk's key, then its offset and length in the blob, little-endian). Written after the blob is
//! committed, without fsync: this is a cache. A torn or foreign file (length not a multiple of
//! 48) is ignored, a record whose blob is gone finds nothing, and the layer codec checks every
//! chunk it is handed before using it; prune removes a blob's file with the blob.

use cairn_layer::{ChunkCache, ChunkKey, ChunkRecord};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const RECORD: usize = 48;

/// The index files' directory in the store root.
const DIR: &str = "gzip-chunks";

/// key → (hex of the blob digest, offset, length).
type Locations = HashMap<ChunkKey, (Arc<str>, u64, u64)>;

/// The chunk index of a store, loaded on first use and kept up to date as layers are written.
#[derive(Debug)]
pub(crate) struct ChunkIndex {
    dir: PathBuf,
    blobs: PathBuf,
    map: RwLock<Locations>,
}

impl ChunkIndex {
    /// Reads every index file under `root/gzip-chunks`.
    pub(crate) fn load(root: &Path) -> ChunkIndex {
        let dir = root.join(DIR);
        let mut map = HashMap::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(bytes) = fs::read(e.path()) else {
                continue;
            };
            let hex: Arc<str> = name.into();
            for r in parse(&bytes).unwrap_or_default() {
                map.insert(r.key, (hex.clone(), r.offset, r.len));
            }
        }
        ChunkIndex {
            dir,
            blobs: root.join("blobs/sha256"),
            map: RwLock::new(map),
        }
    }

    /// Records where the chunks of the blob `digest` (`sha256:<hex>`) are.
    pub(crate) fn add(&self, digest: &str, records: &[ChunkRecord]) -> io::Result<()> {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return Ok(());
        };
        if records.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let mut data = Vec::with_capacity(records.len() * RECORD);
        for r in records {
            data.extend_from_slice(&r.key);
            data.extend_from_slice(&r.offset.to_le_bytes());
            data.extend_from_slice(&r.len.to_le_bytes());
        }
        let tmp = self.dir.join(format!(".{hex}.{}.tmp", std::process::id()));
        fs::write(&tmp, &data)?;
        fs::rename(&tmp, self.dir.join(hex))?;
        let hex: Arc<str> = hex.into();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for r in records {
            map.insert(r.key, (hex.clone(), r.offset, r.len));
        }
        Ok(())
    }

    /// Forgets the chunks of the blob `hex` (prune removed it).
    pub(crate) fn remove_file_of(root: &Path, hex: &str) {
        let _ = fs::remove_file(root.join(DIR).join(hex));
    }
}

impl ChunkCache for ChunkIndex {
    fn get(&self, key: &ChunkKey) -> Option<Vec<u8>> {
        let (hex, offset, len) = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()?;
        // A compressed chunk is at most a little larger than its 1 MiB input.
        if len > 4 << 20 {
            return None;
        }
        let f = fs::File::open(self.blobs.join(&*hex)).ok()?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }
}

/// The records of an index file; None if it is not one.
fn parse(bytes: &[u8]) -> Option<Vec<ChunkRecord>> {
    if bytes.len() % RECORD != 0 {
        return None;
    }
    bytes
        .chunks_exact(RECORD)
        .map(|r| {
            Some(ChunkRecord {
                key: r[..32].try_into().ok()?,
                offset: u64::from_le_bytes(r[32..40].try_into().ok()?),
                len: u64::from_le_bytes(r[40..48].try_into().ok()?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_round_trip_and_torn_ones_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("blobs/sha256")).unwrap();
        let blob = "ab".repeat(32);
        fs::write(t.path().join("blobs/sha256").join(&blob), b"0123456789").unwrap();
        let idx = ChunkIndex::load(t.path());
        let rec = ChunkRecord {
            key: [7; 32],
            offset: 2,
            len: 5,
        };
        idx.add(&format!("sha256:{blob}"), &[rec]).unwrap();
        assert_eq!(idx.get(&[7; 32]).unwrap(), b"23456");
        let again = ChunkIndex::load(t.path());
        assert_eq!(again.get(&[7; 32]).unwrap(), b"23456");
        assert!(again.get(&[8; 32]).is_none());
        // Torn: ignored. Blob gone: nothing found.
        fs::write(
            t.path().join("gzip-chunks").join("cd".repeat(32)),
            [1u8; 47],
        )
        .unwrap();
        assert_eq!(ChunkIndex::load(t.path()).map.read().unwrap().len(), 1);
        fs::remove_file(t.path().join("blobs/sha256").join(&blob)).unwrap();
        assert!(ChunkIndex::load(t.path()).get(&[7; 32]).is_none());
        ChunkIndex::remove_file_of(t.path(), &blob);
        assert_eq!(ChunkIndex::load(t.path()).map.read().unwrap().len(), 0);
    }
}
