//! `cairn history --layers`: per layer, its size, the instruction that made it, and the largest
//! files it adds (and what it deletes).

use crate::human::human_size;
use crate::walk::{walk_layer, Kind, Tree};
use crate::Result;
use cairn_store::{ImageRecord, Store};
use serde::Serialize;
use std::io::{self, Write};

/// How many files each layer lists.
pub const TOP_FILES: usize = 5;

/// A file a layer adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSize {
    /// Absolute path in the image.
    pub path: String,
    /// Bytes.
    pub size: u64,
}

/// One history row of the image.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    /// Index of the layer (bottom = 0); `None` for an instruction that made no layer.
    pub layer: Option<usize>,
    /// Digest of the layer blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The history's `created_by`.
    pub created_by: String,
    /// Unpacked bytes (regular files and symlinks), as `cairn history` shows.
    pub size: u64,
    /// Its largest regular files, largest first.
    pub largest: Vec<FileSize>,
    /// Files it adds.
    pub files: usize,
    /// Files of lower layers it deletes or overwrites, and their bytes (wasted in the image).
    pub hides: usize,
    /// Bytes of the files it hides.
    pub hidden_bytes: u64,
}

/// The report of one image, bottom layer first.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image ID.
    pub id: String,
    /// Rows, bottom first.
    pub rows: Vec<LayerRow>,
    /// Sum of the layers' sizes (`cairn images`'s SIZE).
    pub size: u64,
    /// Bytes of files hidden by later layers.
    pub wasted: u64,
}

/// Reads every layer of `image` once and makes its report.
pub fn layer_report(store: &Store, image: &ImageRecord) -> Result<Report> {
    let config = store.config_json(image)?;
    let history: Vec<(String, bool)> = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    (
                        e["created_by"].as_str().unwrap_or("").to_string(),
                        e["empty_layer"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = Tree::default();
    let mut per_layer: Vec<LayerRow> = Vec::new();
    for (i, desc) in image.layers.iter().enumerate() {
        let mut files: Vec<FileSize> = Vec::new();
        walk_layer(store, desc, |e, _| {
            tree.apply(i, e);
            if e.kind == Kind::File {
                files.push(FileSize {
                    path: e.path.clone(),
                    size: e.size,
                });
            }
            Ok(())
        })?;
        let n = files.len();
        files.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
        files.truncate(TOP_FILES);
        per_layer.push(LayerRow {
            layer: Some(i),
            digest: Some(desc.digest.clone()),
            created_by: String::new(),
            size: store.layer_size(desc)?,
            largest: files,
            files: n,
            hides: 0,
            hidden_bytes: 0,
        });
    }
    for s in &tree.shadowed {
        if let Some(r) = per_layer.get_mut(s.by) {
            r.hides += 1;
            r.hidden_bytes += s.size;
        }
    }
    // Interleave the history: each non-empty entry takes the next layer.
    let mut rows = Vec::new();
    let mut layers = per_layer.into_iter();
    if history.is_empty() {
        rows.extend(layers.by_ref());
    }
    for (created_by, empty) in history {
        if empty {
            rows.push(LayerRow {
                layer: None,
                digest: None,
                created_by,
                size: 0,
                largest: Vec::new(),
                files: 0,
                hides: 0,
                hidden_bytes: 0,
            });
        } else if let Some(mut r) = layers.next() {
            r.created_by = created_by;
            rows.push(r);
        }
    }
    // Layers the history does not account for (foreign images) still get a row.
    rows.extend(layers);
    Ok(Report {
        id: image.id.clone(),
        size: rows.iter().map(|r| r.size).sum(),
        wasted: tree.shadowed.iter().map(|s| s.size).sum(),
        rows,
    })
}

impl Report {
    /// Newest layer first, as `docker history`; under each layer its largest files.
    pub fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{:<7} {:<9} CREATED BY", "LAYER", "SIZE")?;
        for r in self.rows.iter().rev() {
            let layer = r.layer.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
            let by: String = r.created_by.chars().take(100).collect();
            writeln!(out, "{layer:<7} {:<9} {by}", human_size(r.size))?;
            for f in &r.largest {
                writeln!(out, "{:<7} {:>9}   {}", "", human_size(f.size), f.path)?;
            }
            if r.files > r.largest.len() {
                writeln!(
                    out,
                    "{:<7} {:>9}   … {} more files",
                    "",
                    "",
                    r.files - r.largest.len()
                )?;
            }
            if r.hides > 0 {
                writeln!(
                    out,
                    "{:<7} {:>9}   deletes or overwrites {} file{} of lower layers ({} wasted)",
                    "",
                    "",
                    r.hides,
                    if r.hides == 1 { "" } else { "s" },
                    human_size(r.hidden_bytes)
                )?;
            }
        }
        writeln!(
            out,
            "Total: {} in {} layers; {} wasted by deleted or overwritten files",
            human_size(self.size),
            self.rows.iter().filter(|r| r.layer.is_some()).count(),
            human_size(self.wasted)
        )
    }
}
