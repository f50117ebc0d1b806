//! The cache input of a COPY/ADD: a sha256 over exactly what the step selects, in a stable order.
//!
//! Covered: each entry's path, type, permission bits, owner (only for `--from` sources: context
//! files are always root-owned in the image), link target, device number, hardlink grouping and
//! content hash, plus every flag that changes the result. Never covered: mtimes (a fresh checkout
//! must hit the cache) and anything `.dockerignore` or `--exclude` hides.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{io_err, Result};
use super::select::Item;
use super::url::{self, Checksum};
use super::{CopyRequest, SourceRoot};
use crate::context::hashes::sha256_file;

/// Feeds length-prefixed fields, so that no two different inputs hash the same stream.
struct Feed(Sha256);

impl Feed {
    fn field(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn num(&mut self, n: u64) {
        self.field(&n.to_le_bytes());
    }
}

struct EntryHasher<'a> {
    cmd: &'static str,
    src: &'a SourceRoot<'a>,
    /// (dev, ino) of multiply linked files → index of the first entry seen.
    links: HashMap<(u64, u64), u64>,
    seen: u64,
}

impl EntryHasher<'_> {
    fn entry(&mut self, f: &mut Feed, rel: &[u8], path: &Path, meta: &fs::Metadata) -> Result<()> {
        f.field(rel);
        let ft = meta.file_type();
        let kind: &[u8] = if ft.is_dir() {
            b"d"
        } else if ft.is_file() {
            b"f"
        } else if ft.is_symlink() {
            b"l"
        } else {
            b"o"
        };
        f.field(kind);
        f.num((meta.mode() & 0o7777) as u64);
        if let SourceRoot::Dir(_) = self.src {
            f.num(meta.uid() as u64);
            f.num(meta.gid() as u64);
        }
        self.seen += 1;
        if ft.is_file() {
            // Only a repeat of an inode within the selection is a hard link in the layer; a link
            // count from outside it (a pooled file, see `pool`) must not change the key.
            if meta.nlink() > 1 {
                let first = *self
                    .links
                    .entry((meta.dev(), meta.ino()))
                    .or_insert(self.seen);
                if first != self.seen {
                    f.num(first);
                }
            }
            let h = match self.src {
                SourceRoot::Context(c) => c.memo().file_sha256(path, meta),
                SourceRoot::Dir(_) => sha256_file(path),
            }
            .map_err(io_err(self.cmd, path))?;
            // Hex, as the first format of this key had it (changing it would only miss once).
            let mut hex = [0u8; 64];
            hex::encode_to_slice(h, &mut hex)
                .map_err(|e| io_err(self.cmd, path)(std::io::Error::other(e)))?;
            f.field(&hex);
        } else if ft.is_symlink() {
            let t = fs::read_link(path).map_err(io_err(self.cmd, path))?;
            f.field(t.as_os_str().as_encoded_bytes());
        } else if !ft.is_dir() {
            f.num(meta.rdev());
        }
        Ok(())
    }
}

/// Computes the digest (`sha256:<hex>`) of `items` selected for `req`.
pub(crate) fn digest(req: &CopyRequest, src: &SourceRoot, items: &[Item]) -> Result<String> {
    let c = req.copy;
    let cmd = super::cmd_name(c);
    let mut f = Feed(Sha256::new());
    f.field(b"cairn-copy-v1");
    f.field(cmd.as_bytes());
    f.field(c.dest.as_bytes());
    f.field(req.workdir.as_bytes());
    match req.owner {
        Some((u, g)) => {
            f.num(1);
            f.num(u as u64);
            f.num(g as u64);
        }
        None => f.num(0),
    }
    f.field(format!("{:?}", c.chmod).as_bytes());
    f.num(c.parents as u64);
    f.num(c.exclude.len() as u64);
    for e in &c.exclude {
        f.field(e.as_bytes());
    }
    f.field(format!("{:?}", c.unpack).as_bytes());
    f.field(format!("{:?}", c.checksum).as_bytes());
    f.num(matches!(src, SourceRoot::Dir(_)) as u64);
    let mut eh = EntryHasher {
        cmd,
        src,
        links: HashMap::new(),
        seen: 0,
    };
    f.num(items.len() as u64);
    for item in items {
        match item {
            Item::File {
                name, path, meta, ..
            } => {
                f.field(b"F");
                eh.entry(&mut f, name.as_encoded_bytes(), path, meta)?;
            }
            Item::Dir {
                path,
                meta,
                entries,
            } => {
                f.field(b"D");
                eh.entry(&mut f, b"", path, meta)?;
                f.num(entries.len() as u64);
                for e in entries {
                    eh.entry(
                        &mut f,
                        e.rel.as_os_str().as_encoded_bytes(),
                        &path.join(&e.rel),
                        &e.meta,
                    )?;
                }
            }
            Item::Inline { name, content } => {
                f.field(b"I");
                f.field(name.as_bytes());
                f.field(&Sha256::digest(content));
            }
            Item::Git { src: g } => {
                f.field(b"G");
                f.field(g.url.as_bytes());
                f.field(g.subdir.as_bytes());
                f.num(c.keep_git_dir as u64);
                // As for URLs, a --checksum (here a commit) is the content without asking.
                match &c.checksum {
                    Some(commit) => f.field(commit.to_ascii_lowercase().as_bytes()),
                    None => f.field(super::git::resolve_commit(g)?.as_bytes()),
                }
            }
            Item::Url { url: u } => {
                f.field(b"U");
                f.field(u.as_bytes());
                // With --checksum the content is known without fetching (BuildKit does the same);
                // without, the download itself is the input.
                match &c.checksum {
                    Some(s) => f.field(Checksum::parse(s)?.as_string().as_bytes()),
                    None => f.field(url::content_digest(u)?.as_bytes()),
                }
            }
        }
    }
    Ok(format!("sha256:{}", hex::encode(f.0.finalize())))
}
