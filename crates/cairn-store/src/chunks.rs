//! Where the compressed chunks of the gzip layers this store wrote are, so that a layer written
//! later reuses the ones whose input it shares instead of compressing them again (see
//! `cairn_layer::ChunkCache`).
//!
//! One small file per blob, `gzip-chunks-v2/<hex of the blob digest>`: the 16-byte [`MAGIC`],
//! then records of 60 bytes: the chunk's key (32), its offset and length in the blob (u64 LE
//! each), its check (u32 LE: `cairn_layer::chunk_check`, CRC-32 of key ‖ compressed bytes,
//! computed by the writer), and a seal (the first 8 bytes of a sha256 of a tag, the blob's hex
//! and the record's first 52 bytes). Written after the blob is committed, without fsync: this
//! is a cache. A file that is not one (no magic, length not 16 + a multiple of 60) is ignored,
//! so is a record whose seal does not match (torn, garbage, or copied under another blob's
//! name: 2^-64 to get through); a record whose blob is gone finds nothing; and the codec uses
//! the bytes read at a record only if they match its check (and end like a chunk), so a wrong
//! offset or bytes altered since are refused. Loading hashes ~150 bytes per MiB of layer.
//!
//! Format 1 (until 2026-11) was `gzip-chunks/<hex>`, bare 48-byte records whose hits the
//! codec inflated to check them (~40 % of a cached layer's compression CPU). Its files are
//! never read (a new directory, and 16 + 60·m is never a multiple of 48 anyway); a layer written
//! again replaces its blob's old file, and prune removes both formats' files with the blob.

use cairn_layer::{CachedChunk, ChunkCache, ChunkKey, ChunkRecord};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What an index file starts with.
const MAGIC: &[u8; 16] = b"cairn-chunks-v2\n";

/// Bytes per record: key, offset, len, check, seal.
const RECORD: usize = 32 + 8 + 8 + 4 + 8;

/// The part of a record its seal covers.
const SEALED: usize = RECORD - 8;

/// The index files' directory in the store root.
const DIR: &str = "gzip-chunks-v2";

/// Where format 1's files were (never read; removed with their blobs).
const OLD_DIR: &str = "gzip-chunks";

/// Where a chunk is and its check.
#[derive(Debug, Clone)]
struct Location {
    /// Hex of the blob digest.
    blob: Arc<str>,
    offset: u64,
    len: u64,
    check: u32,
}

/// The chunk index of a store, loaded on first use and kept up to date as layers are written.
#[derive(Debug)]
pub(crate) struct ChunkIndex {
    dir: PathBuf,
    old_dir: PathBuf,
    blobs: PathBuf,
    map: RwLock<HashMap<ChunkKey, Location>>,
}

impl ChunkIndex {
    /// Reads every index file under `root/gzip-chunks-v2`.
    pub(crate) fn load(root: &Path) -> ChunkIndex {
        let dir = root.join(DIR);
        let mut map = HashMap::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_hex(&name) {
                continue;
            }
            let Ok(bytes) = fs::read(e.path()) else {
                continue;
            };
            let blob: Arc<str> = name.into();
            for r in parse(&blob, &bytes) {
                map.insert(r.key, location(&blob, &r));
            }
        }
        ChunkIndex {
            dir,
            old_dir: root.join(OLD_DIR),
            blobs: root.join("blobs/sha256"),
            map: RwLock::new(map),
        }
    }

    /// Records where the chunks of the blob `digest` (`sha256:<hex>`) are.
    pub(crate) fn add(&self, digest: &str, records: &[ChunkRecord]) -> io::Result<()> {
        let Some(hex) = digest.strip_prefix("sha256:").filter(|h| is_hex(h)) else {
            return Ok(());
        };
        if records.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let mut data = Vec::with_capacity(MAGIC.len() + records.len() * RECORD);
        data.extend_from_slice(MAGIC);
        for r in records {
            data.extend_from_slice(&encode(hex, r));
        }
        let tmp = self.dir.join(format!(".{hex}.{}.tmp", std::process::id()));
        fs::write(&tmp, &data)?;
        fs::rename(&tmp, self.dir.join(hex))?;
        let _ = fs::remove_file(self.old_dir.join(hex));
        let blob: Arc<str> = hex.into();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for r in records {
            map.insert(r.key, location(&blob, r));
        }
        Ok(())
    }

    /// Forgets the chunks of the blob `hex` (prune removed it): its index file in either format.
    pub(crate) fn remove_file_of(root: &Path, hex: &str) {
        let _ = fs::remove_file(root.join(DIR).join(hex));
        let _ = fs::remove_file(root.join(OLD_DIR).join(hex));
    }
}

impl ChunkCache for ChunkIndex {
    /// The bytes at the recorded place and the recorded check; the codec compares them.
    fn get(&self, key: &ChunkKey) -> Option<CachedChunk> {
        let at = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()?;
        // A compressed chunk is at most a little larger than its 1 MiB input.
        if at.len > 4 << 20 {
            return None;
        }
        let f = fs::File::open(self.blobs.join(&*at.blob)).ok()?;
        let mut bytes = vec![0u8; at.len as usize];
        f.read_exact_at(&mut bytes, at.offset).ok()?;
        Some(CachedChunk {
            bytes,
            check: at.check,
        })
    }
}

fn is_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn location(blob: &Arc<str>, r: &ChunkRecord) -> Location {
    Location {
        blob: blob.clone(),
        offset: r.offset,
        len: r.len,
        check: r.check,
    }
}

/// The seal of a record of the blob `hex`: 64 bits of a sha256 of it and the blob's name.
fn seal(hex: &str, sealed: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"cairn-gzip-chunk-record-v2\0");
    h.update(hex.as_bytes());
    h.update(sealed);
    h.finalize()[..8].try_into().expect("8 of 32 bytes")
}

fn encode(hex: &str, r: &ChunkRecord) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..32].copy_from_slice(&r.key);
    out[32..40].copy_from_slice(&r.offset.to_le_bytes());
    out[40..48].copy_from_slice(&r.len.to_le_bytes());
    out[48..52].copy_from_slice(&r.check.to_le_bytes());
    let s = seal(hex, &out[..SEALED]);
    out[SEALED..].copy_from_slice(&s);
    out
}

/// The records of the index file of the blob `hex` whose seal matches; none if it is not an
/// index file.
fn parse(hex: &str, bytes: &[u8]) -> Vec<ChunkRecord> {
    let Some(records) = bytes.strip_prefix(MAGIC) else {
        return Vec::new();
    };
    if records.len() % RECORD != 0 {
        return Vec::new();
    }
    records
        .chunks_exact(RECORD)
        .filter(|r| r[SEALED..] == seal(hex, &r[..SEALED]))
        .map(|r| {
            let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
            ChunkRecord {
                key: r[..32].try_into().expect("32 bytes"),
                offset: u64_at(32),
                len: u64_at(40),
                check: u32::from_le_bytes(r[48..52].try_into().expect("4 bytes")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_layer::chunk_check;

    fn record(key: u8, offset: u64, len: u64, bytes: &[u8]) -> ChunkRecord {
        ChunkRecord {
            key: [key; 32],
            offset,
            len,
            check: chunk_check(&[key; 32], bytes),
        }
    }

    #[test]
    fn index_files_round_trip_and_torn_ones_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("blobs/sha256")).unwrap();
        let blob = "ab".repeat(32);
        fs::write(t.path().join("blobs/sha256").join(&blob), b"0123456789").unwrap();
        let idx = ChunkIndex::load(t.path());
        let rec = record(7, 2, 5, b"23456");
        idx.add(&format!("sha256:{blob}"), &[rec]).unwrap();
        let hit = idx.get(&[7; 32]).unwrap();
        assert_eq!(hit.bytes, b"23456");
        assert_eq!(hit.check, rec.check);
        let again = ChunkIndex::load(t.path());
        assert_eq!(again.get(&[7; 32]).unwrap(), hit);
        assert!(again.get(&[8; 32]).is_none());
        // Torn, or without the magic: ignored. Blob gone: nothing found.
        let other = t.path().join(DIR).join("cd".repeat(32));
        let mut torn = fs::read(t.path().join(DIR).join(&blob)).unwrap();
        torn.pop();
        fs::write(&other, &torn).unwrap();
        assert_eq!(ChunkIndex::load(t.path()).map.read().unwrap().len(), 1);
        fs::write(&other, &torn[MAGIC.len()..]).unwrap();
        assert_eq!(ChunkIndex::load(t.path()).map.read().unwrap().len(), 1);
        fs::remove_file(t.path().join("blobs/sha256").join(&blob)).unwrap();
        assert!(ChunkIndex::load(t.path()).get(&[7; 32]).is_none());
        ChunkIndex::remove_file_of(t.path(), &blob);
        assert_eq!(ChunkIndex::load(t.path()).map.read().unwrap().len(), 0);
    }

    #[test]
    fn a_record_that_does_not_match_its_seal_is_dropped() {
        let t = tempfile::tempdir().unwrap();
        let blob = "ab".repeat(32);
        let idx = ChunkIndex::load(t.path());
        let recs = [
            record(1, 10, 3, b""),
            record(2, 20, 4, b""),
            record(3, 30, 5, b""),
        ];
        idx.add(&format!("sha256:{blob}"), &recs).unwrap();
        let path = t.path().join(DIR).join(&blob);
        let good = fs::read(&path).unwrap();
        assert_eq!(good.len(), MAGIC.len() + 3 * RECORD);
        // Any one byte of the second record changed (key, offset, length, check, seal): only
        // that record is lost.
        for i in 0..RECORD {
            let mut bad = good.clone();
            bad[MAGIC.len() + RECORD + i] ^= 0x04;
            fs::write(&path, &bad).unwrap();
            let map = ChunkIndex::load(t.path()).map.into_inner().unwrap();
            assert_eq!(map.len(), 2, "byte {i}");
            assert!(map.contains_key(&[1; 32]) && map.contains_key(&[3; 32]));
        }
        // The same file under another blob's name: nothing (the seal binds the blob).
        fs::write(&path, &good).unwrap();
        fs::rename(&path, t.path().join(DIR).join("cd".repeat(32))).unwrap();
        assert!(ChunkIndex::load(t.path()).map.read().unwrap().is_empty());
    }

    #[test]
    fn format_1_files_are_not_read_and_prune_removes_both() {
        let t = tempfile::tempdir().unwrap();
        let blob = "ab".repeat(32);
        fs::create_dir_all(t.path().join("blobs/sha256")).unwrap();
        fs::write(t.path().join("blobs/sha256").join(&blob), [9u8; 64]).unwrap();
        // A format 1 file: 48-byte records (key, offset, len); here 15 of them, 720 bytes.
        let old = t.path().join(OLD_DIR).join(&blob);
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        let mut v1 = Vec::new();
        for k in 0..15u8 {
            v1.extend_from_slice(&[k; 32]);
            v1.extend_from_slice(&0u64.to_le_bytes());
            v1.extend_from_slice(&8u64.to_le_bytes());
        }
        fs::write(&old, &v1).unwrap();
        assert!(ChunkIndex::load(t.path()).map.read().unwrap().is_empty());
        // Even where a new file would be, it is not one.
        let new = t.path().join(DIR).join(&blob);
        fs::create_dir_all(new.parent().unwrap()).unwrap();
        fs::write(&new, &v1).unwrap();
        assert!(ChunkIndex::load(t.path()).map.read().unwrap().is_empty());
        ChunkIndex::remove_file_of(t.path(), &blob);
        assert!(!old.exists() && !new.exists());
        // Writing the blob's index again supersedes its format 1 file.
        fs::write(&old, &v1).unwrap();
        let idx = ChunkIndex::load(t.path());
        idx.add(&format!("sha256:{blob}"), &[record(5, 0, 8, &[9; 8])])
            .unwrap();
        assert!(!old.exists() && new.exists());
    }

    #[test]
    fn bytes_altered_at_a_recorded_offset_fail_their_check() {
        let t = tempfile::tempdir().unwrap();
        let blob = "ab".repeat(32);
        let path = t.path().join("blobs/sha256").join(&blob);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = b"header:chunk-one:chunk-two".to_vec();
        fs::write(&path, &data).unwrap();
        let idx = ChunkIndex::load(t.path());
        let one = record(1, 7, 9, b"chunk-one");
        let two = record(2, 17, 9, b"chunk-two");
        idx.add(&format!("sha256:{blob}"), &[one, two]).unwrap();
        let ok = |k: u8| {
            let hit = ChunkIndex::load(t.path()).get(&[k; 32]).unwrap();
            chunk_check(&[k; 32], &hit.bytes) == hit.check
        };
        assert!(ok(1) && ok(2));
        data[20] ^= 1;
        fs::write(&path, &data).unwrap();
        assert!(ok(1) && !ok(2));
    }
}
