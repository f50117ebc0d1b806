//! Streaming over the entries of layer blobs, and the file tree an image's layers add up to.

use crate::{Error, Result};
use cairn_store::{LayerDescriptor, Store};
use std::collections::BTreeMap;
use std::io::Read;

/// The kind of a layer entry, whiteouts decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Other,
    /// `.wh.NAME`: NAME (and what is under it) is deleted.
    Whiteout,
    /// `.wh..wh..opq`: the directory's lower contents are deleted.
    Opaque,
}

/// One entry of a layer: `path` is absolute (`/usr/bin/go`); for whiteouts it is the deleted path,
/// for opaque markers the directory.
pub(crate) struct Entry {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
}

/// Calls `f` on each entry of the layer blob, with a reader of its content (regular files).
pub(crate) fn walk_layer(
    store: &Store,
    layer: &LayerDescriptor,
    mut f: impl FnMut(&Entry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let path = store.blob_path(&layer.digest);
    let lerr = |e: std::io::Error| Error::Layer {
        digest: layer.digest.clone(),
        source: e,
    };
    let file = std::fs::File::open(&path).map_err(lerr)?;
    let reader = cairn_layer::decompress(std::io::BufReader::with_capacity(256 * 1024, file))
        .map_err(|e| Error::Layer {
            digest: layer.digest.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(lerr)? {
        let mut entry = entry.map_err(lerr)?;
        let raw = entry.path().map_err(lerr)?.to_string_lossy().into_owned();
        let Some(clean) = clean_abs(&raw) else {
            continue;
        };
        let (dir, name) = match clean.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), clean.clone()),
        };
        let ty = entry.header().entry_type();
        let (path, kind) = if name == ".wh..wh..opq" {
            (if dir.is_empty() { "/".into() } else { dir }, Kind::Opaque)
        } else if let Some(target) = name.strip_prefix(".wh.") {
            (format!("{dir}/{target}"), Kind::Whiteout)
        } else {
            let kind = if ty.is_file() {
                Kind::File
            } else if ty.is_dir() {
                Kind::Dir
            } else if ty.is_symlink() {
                Kind::Symlink
            } else if ty.is_hard_link() {
                Kind::Hardlink
            } else {
                Kind::Other
            };
            (clean, kind)
        };
        let size = if kind == Kind::File { entry.size() } else { 0 };
        f(&Entry { path, kind, size }, &mut entry)?;
    }
    Ok(())
}

/// `./usr//bin/` → `/usr/bin`; `None` for the root itself or an entry that climbs out.
fn clean_abs(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// A file visible in the image, and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub layer: usize,
    pub kind: Kind,
    pub size: u64,
}

/// What a later layer did to a file of an earlier one.
#[derive(Debug, Clone)]
pub(crate) struct Shadowed {
    pub path: String,
    /// The layer whose file is hidden.
    pub layer: usize,
    pub size: u64,
    /// The layer that deleted or overwrote it.
    pub by: usize,
    pub deleted: bool,
}

/// The file tree of an image, built layer by layer.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    pub nodes: BTreeMap<String, Node>,
    pub shadowed: Vec<Shadowed>,
}

impl Tree {
    /// Applies one entry of layer `layer`.
    pub fn apply(&mut self, layer: usize, e: &Entry) {
        match e.kind {
            Kind::Whiteout => {
                if let Some(n) = self.nodes.remove(&e.path) {
                    self.note_deleted(&e.path, &n, layer);
                }
                self.remove_children_if(&e.path, layer, |_| true);
            }
            Kind::Opaque => {
                // The root's children are under "" + "/"; only the lower layers' children go,
                // this layer's own entries (before or after the marker) stay.
                let dir = if e.path == "/" {
                    String::new()
                } else {
                    e.path.clone()
                };
                self.remove_children_if(&dir, layer, |n| n.layer < layer);
            }
            _ => {
                if let Some(old) = self.nodes.get(&e.path) {
                    if old.layer < layer && old.kind == Kind::File {
                        self.shadowed.push(Shadowed {
                            path: e.path.clone(),
                            layer: old.layer,
                            size: old.size,
                            by: layer,
                            deleted: false,
                        });
                    }
                }
                // A non-directory replacing a directory hides everything under it.
                if e.kind != Kind::Dir {
                    let p = e.path.clone();
                    self.remove_children(&p, layer);
                }
                self.nodes.insert(
                    e.path.clone(),
                    Node {
                        layer,
                        kind: e.kind.clone(),
                        size: e.size,
                    },
                );
            }
        }
    }

    fn remove_children(&mut self, path: &str, by: usize) {
        self.remove_children_if(path, by, |_| true);
    }

    fn remove_children_if(&mut self, dir: &str, by: usize, keep: impl Fn(&Node) -> bool) {
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| keep(n))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(n) = self.nodes.remove(&k) {
                self.note_deleted(&k, &n, by);
            }
        }
    }

    fn note_deleted(&mut self, path: &str, n: &Node, by: usize) {
        if n.kind == Kind::File && n.layer < by {
            self.shadowed.push(Shadowed {
                path: path.to_string(),
                layer: n.layer,
                size: n.size,
                by,
                deleted: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: Kind, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind,
            size,
        }
    }

    #[test]
    fn whiteouts_and_overwrites_are_accounted_as_shadowed() {
        let mut t = Tree::default();
        t.apply(0, &e("/a", Kind::Dir, 0));
        t.apply(0, &e("/a/big", Kind::File, 100));
        t.apply(0, &e("/a/keep", Kind::File, 7));
        t.apply(0, &e("/b", Kind::File, 10));
        t.apply(1, &e("/a/big", Kind::Whiteout, 0));
        t.apply(1, &e("/b", Kind::File, 20));
        assert!(!t.nodes.contains_key("/a/big"));
        assert_eq!(t.nodes["/b"].layer, 1);
        let wasted: u64 = t.shadowed.iter().map(|s| s.size).sum();
        assert_eq!(wasted, 110);
        // An opaque dir hides the lower children, not its own layer's entries.
        t.apply(2, &e("/a/new", Kind::File, 1));
        t.apply(2, &e("/a", Kind::Opaque, 0));
        assert!(t.nodes.contains_key("/a/new"));
        assert!(!t.nodes.contains_key("/a/keep"));
    }

    #[test]
    fn clean_abs_refuses_escapes() {
        assert_eq!(clean_abs("./usr//bin/"), Some("/usr/bin".into()));
        assert_eq!(clean_abs("../etc/passwd"), None);
        assert_eq!(clean_abs("./"), None);
    }
}
