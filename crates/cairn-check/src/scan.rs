//! Rules on the images a build made: what the final image really contains (source files, build
//! tools, caches, `.git`, devDependencies), secrets in any layer of any stage — deleted ones
//! included, since a deleted file stays in the blob of the layer that added it — and the bytes
//! that later layers delete or overwrite.

use crate::secrets::{scan_content, secret_file_name, SecretHit, MAX_SCAN_BYTES};
use crate::walk::{walk_layer, Kind, Tree};
use crate::{BuiltStage, Finding, LayerRef, Result, Severity};
use cairn_store::Store;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// Files larger than this are not hashed against the context (sources are small).
const MAX_HASH_BYTES: u64 = 16 << 20;
/// Below this, wasted bytes are not worth a warning.
pub const WASTE_MIN_BYTES: u64 = 1_000_000;

/// Extensions of compiled languages' sources: never needed at run time. Interpreted languages
/// (.py, .js, .rb, .php) are the program itself there, so they are only reported when they
/// are copies of the context's compiled-language sources (never, by construction).
const SOURCE_EXTENSIONS: [&str; 20] = [
    "go", "c", "h", "cc", "cpp", "cxx", "hpp", "rs", "java", "kt", "scala", "ts", "tsx", "cs",
    "swift", "m", "zig", "hs", "ml", "fs",
];
/// Build manifests of compiled languages: as useless at run time as the sources.
const BUILD_FILES: [&str; 9] = [
    "go.mod",
    "go.sum",
    "Cargo.toml",
    "Cargo.lock",
    "pom.xml",
    "build.gradle",
    "CMakeLists.txt",
    "Makefile",
    "tsconfig.json",
];

/// Whether a path names a compiled-language source or build file.
pub fn is_source_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if BUILD_FILES.contains(&name) {
        return true;
    }
    // `.d.ts` declarations ship with JavaScript packages: not sources of this build.
    if name.ends_with(".d.ts") {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => SOURCE_EXTENSIONS.contains(&ext),
        _ => false,
    }
}

/// Directories where installed packages keep the sources and headers they ship (numpy's `.h`,
/// a Go module's `.go`): the user's dependencies, not the user's sources.
fn in_dependency_dir(path: &str) -> bool {
    const DIRS: [&str; 12] = [
        "/site-packages/",
        "/dist-packages/",
        "/node_modules/",
        "/include/",
        "/usr/lib/",
        "/usr/share/",
        "/usr/local/lib/",
        "/usr/src/",
        "/pkg/mod/",
        "/.cargo/",
        "/vendor/",
        "/go/src/",
    ];
    DIRS.iter().any(|d| path.contains(d))
}

/// Compilers and build drivers, by file name, when they sit in a `bin` directory.
const TOOLS: [&str; 12] = [
    "gcc", "cc", "g++", "c++", "clang", "go", "rustc", "cargo", "javac", "tsc", "make", "ld",
];

fn tool_name(path: &str) -> Option<&'static str> {
    let (dir, name) = path.rsplit_once('/')?;
    // Versioned drivers (gcc-12, x86_64-linux-gnu-gcc-12) are the same compiler.
    let base = name
        .rsplit('-')
        .find(|p| p.parse::<u32>().is_err())
        .unwrap_or(name);
    let t = TOOLS.iter().find(|t| **t == base || **t == name)?;
    if dir.ends_with("/bin") || dir == "/bin" {
        return Some(t);
    }
    None
}

/// Package manager caches: (what, path fragment).
const CACHES: [(&str, &str); 9] = [
    ("npm cache", "/.npm/_cacache/"),
    ("pip cache", "/.cache/pip/"),
    ("Go build cache", "/.cache/go-build/"),
    ("Go module cache", "/go/pkg/mod/cache/"),
    ("cargo registry", "/.cargo/registry/"),
    ("yarn cache", "/.cache/yarn/"),
    ("apt archives", "/var/cache/apt/archives/"),
    ("apt lists", "/var/lib/apt/lists/"),
    ("apk cache", "/var/cache/apk/"),
];

/// The context's source files by size, then content digest → relative path.
#[derive(Debug, Default)]
struct ContextIndex {
    by_size: HashMap<u64, Vec<([u8; 32], String)>>,
}

impl ContextIndex {
    fn open(dir: &Path) -> ContextIndex {
        let mut idx = ContextIndex::default();
        let walker = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git" && e.file_name() != "node_modules");
        for e in walker.flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(dir) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            if !is_source_path(&rel) {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            // Empty files match every empty file of the image: meaningless.
            if bytes.is_empty() || bytes.len() as u64 > MAX_HASH_BYTES {
                continue;
            }
            let h: [u8; 32] = Sha256::digest(&bytes).into();
            idx.by_size
                .entry(bytes.len() as u64)
                .or_default()
                .push((h, rel));
        }
        idx
    }

    fn find(&self, size: u64, content: &[u8]) -> Option<&str> {
        let cands = self.by_size.get(&size)?;
        let h: [u8; 32] = Sha256::digest(content).into();
        cands.iter().find(|(d, _)| *d == h).map(|(_, r)| r.as_str())
    }
}

/// What the walk of one stage found.
#[derive(Default)]
struct StageScan {
    tree: Tree,
    secrets: Vec<(usize, String, SecretHit)>,
    /// (layer, image path, context path)
    context_copies: Vec<(usize, String, String)>,
    /// (layer, path, content) of package.json files outside node_modules.
    manifests: Vec<(usize, String, Vec<u8>)>,
}

fn scan_stage(
    store: &Store,
    stage: &BuiltStage,
    ctx: Option<&ContextIndex>,
    deep: bool,
) -> Result<StageScan> {
    let mut s = StageScan::default();
    for (i, layer) in stage.layers.iter().enumerate() {
        let own = i >= stage.base_layers;
        // Outside the final image only secrets matter, and only in this Dockerfile's layers:
        // the base image's (often hundreds of MB) need not be read.
        if !own && !deep {
            continue;
        }
        walk_layer(store, layer, |e, r| {
            s.tree.apply(i, e);
            if e.kind != Kind::File || !own {
                return Ok(());
            }
            if let Some(kind) = secret_file_name(&e.path) {
                s.secrets.push((
                    i,
                    e.path.clone(),
                    SecretHit {
                        kind: kind.into(),
                        line: 0,
                        excerpt: String::new(),
                    },
                ));
            }
            let want_hash = deep
                && ctx.is_some_and(|c| c.by_size.contains_key(&e.size))
                && e.size <= MAX_HASH_BYTES;
            let want_manifest =
                deep && e.path.ends_with("/package.json") && !e.path.contains("/node_modules/");
            let limit = if want_hash {
                e.size as usize
            } else {
                MAX_SCAN_BYTES.min(e.size as usize)
            };
            let mut buf = Vec::with_capacity(limit);
            r.take(limit as u64)
                .read_to_end(&mut buf)
                .map_err(|err| crate::Error::Layer {
                    digest: layer.digest.clone(),
                    source: err,
                })?;
            let scan_part = &buf[..buf.len().min(MAX_SCAN_BYTES)];
            for hit in scan_content(&e.path, scan_part) {
                s.secrets.push((i, e.path.clone(), hit));
            }
            if want_hash {
                if let Some(rel) = ctx.and_then(|c| c.find(e.size, &buf)) {
                    s.context_copies.push((i, e.path.clone(), rel.to_string()));
                }
            }
            if want_manifest {
                s.manifests.push((i, e.path.clone(), buf));
            }
            Ok(())
        })?;
    }
    Ok(s)
}

fn layer_ref(stage: &BuiltStage, index: usize) -> Option<LayerRef> {
    let l = stage.layers.get(index)?;
    Some(LayerRef {
        index,
        digest: l.digest.clone(),
        created_by: stage.created_by(index),
    })
}

fn image_finding(
    rule: &str,
    severity: Severity,
    stage: &BuiltStage,
    layer: usize,
    path: &str,
    message: String,
    hint: &str,
) -> Finding {
    Finding {
        rule: rule.into(),
        severity,
        message,
        hint: hint.into(),
        url: None,
        line: stage.layer_lines.get(layer).copied().unwrap_or(0),
        stage: Some(stage.name.clone()),
        layer: layer_ref(stage, layer),
        path: Some(path.into()),
    }
}

fn list(paths: &[String]) -> String {
    let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
    let more = paths.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Runs the image rules on built stages (see the module docs). `context`: the build context,
/// whose source files are recognised in the final image by content.
pub fn scan(store: &Store, stages: &[BuiltStage], context: Option<&Path>) -> Result<Vec<Finding>> {
    let ctx = context.map(ContextIndex::open);
    let mut out = Vec::new();
    for stage in stages {
        let s = scan_stage(store, stage, ctx.as_ref(), stage.is_final)?;
        secret_findings(stage, &s, &mut out);
        if stage.is_final {
            final_findings(stage, &s, &mut out);
        }
    }
    Ok(out)
}

fn secret_findings(stage: &BuiltStage, s: &StageScan, out: &mut Vec<Finding>) {
    for (layer, path, hit) in &s.secrets {
        let visible = s.tree.nodes.get(path).is_some_and(|n| n.layer == *layer);
        // Packages ship test keys and example tokens (node_modules/x/test/key.pem): worth a
        // look when they reach the final image, noise in a builder stage.
        let dependency = in_dependency_dir(path);
        if dependency && !(stage.is_final && visible) {
            continue;
        }
        let gone_by = s
            .tree
            .shadowed
            .iter()
            .find(|x| x.path == *path && x.layer == *layer)
            .map(|x| (x.by, x.deleted));
        let mut msg = format!("{} in {path}", hit.kind);
        if hit.line > 0 {
            msg.push_str(&format!(":{} ({})", hit.line, hit.excerpt));
        }
        match (visible, gone_by) {
            (true, _) if stage.is_final => msg.push_str(", present in the final image"),
            (true, _) => msg.push_str(&format!(", present in stage {}", stage.name)),
            (false, Some((by, deleted))) => msg.push_str(&format!(
                ", {} by layer {by} ({}) but still readable in the blob of layer {layer}",
                if deleted { "deleted" } else { "overwritten" },
                stage.created_by(by)
            )),
            (false, None) => {}
        }
        let (severity, hint) = if dependency {
            msg.push_str(" (shipped by an installed package)");
            (
                Severity::Warning,
                "make sure this is a package's test fixture and not yours; install without tests or dev files if you can",
            )
        } else {
            (
                Severity::Error,
                "never COPY or write secrets in a build, even in a builder stage or to delete them later: use RUN --mount=type=secret (or type=ssh), and rotate this one",
            )
        };
        out.push(image_finding(
            "SecretInLayer",
            severity,
            stage,
            *layer,
            path,
            msg,
            hint,
        ));
    }
}

fn final_findings(stage: &BuiltStage, s: &StageScan, out: &mut Vec<Finding>) {
    let visible =
        |layer: usize, path: &str| s.tree.nodes.get(path).is_some_and(|n| n.layer == layer);

    // Sources: copies of the context's sources, then compiled-language sources by extension.
    let mut by_layer: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut matched: std::collections::BTreeSet<&str> = Default::default();
    for (layer, path, rel) in &s.context_copies {
        if visible(*layer, path) {
            by_layer
                .entry(*layer)
                .or_default()
                .push(format!("{path} (= {rel})"));
            matched.insert(path);
        }
    }
    for (path, n) in &s.tree.nodes {
        if n.kind == Kind::File
            && n.layer >= stage.base_layers
            && !matched.contains(path.as_str())
            && is_source_path(path)
            && !in_dependency_dir(path)
        {
            by_layer.entry(n.layer).or_default().push(path.clone());
        }
    }
    for (layer, paths) in by_layer {
        let first = paths[0].split(" (= ").next().unwrap_or("").to_string();
        out.push(image_finding(
            "SourceInFinalImage",
            Severity::Error,
            stage,
            layer,
            &first,
            format!("{} source file{} in the final image: {}", paths.len(), if paths.len() == 1 { "" } else { "s" }, list(&paths)),
            "copy only the build's artifacts into the final stage (COPY --from=builder /app/server /server), not the sources (COPY . .)",
        ));
    }

    // Compilers, wherever they came from: choosing a toolchain image as the final base ships it.
    let mut tools: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for (path, n) in &s.tree.nodes {
        if n.kind == Kind::Dir {
            continue;
        }
        if let Some(t) = tool_name(path) {
            // Name the plain driver (/usr/bin/gcc) rather than a variant (c89-gcc) if both exist.
            let exact = path.rsplit('/').next() == Some(t);
            let e = tools.entry(t).or_insert((n.layer, path.clone()));
            if exact && e.1.rsplit('/').next() != Some(t) {
                *e = (n.layer, path.clone());
            }
        }
    }
    if !tools.is_empty() {
        let names: Vec<String> = tools
            .iter()
            .map(|(t, (_, p))| format!("{t} ({p})"))
            .collect();
        let (layer, path) = tools.values().next().cloned().unwrap_or_default();
        out.push(image_finding(
            "BuildToolInFinalImage",
            Severity::Error,
            stage,
            layer,
            &path,
            format!("Build tools in the final image: {}", list(&names)),
            "compile in a builder stage and start the final stage from a runtime image (scratch, distroless, alpine) without the toolchain",
        ));
    }

    // Caches and .git in what this Dockerfile added.
    let mut caches: BTreeMap<&str, (usize, String, u64)> = BTreeMap::new();
    let mut gits: Vec<(usize, String)> = Vec::new();
    for (path, n) in &s.tree.nodes {
        if n.layer < stage.base_layers {
            continue;
        }
        if n.kind == Kind::File {
            for (what, frag) in CACHES {
                if let Some(at) = path.find(frag).filter(|_| !path.ends_with("/lock")) {
                    // Name the cache directory, not the first of its thousands of files.
                    let dir = path[..at + frag.len() - 1].to_string();
                    let e = caches.entry(what).or_insert((n.layer, dir, 0));
                    e.2 += n.size;
                }
            }
        }
        if path.ends_with("/.git/HEAD") {
            gits.push((n.layer, path.trim_end_matches("/HEAD").to_string()));
        }
    }
    for (what, (layer, path, bytes)) in caches {
        out.push(image_finding(
            "BuildCacheInFinalImage",
            Severity::Warning,
            stage,
            layer,
            &path,
            format!("{what} in the final image ({})", crate::human::human_size(bytes)),
            "use RUN --mount=type=cache for package manager caches, or clean them in the same RUN (apt-get clean, rm -rf /var/lib/apt/lists/*, npm cache clean)",
        ));
    }
    for (layer, path) in gits {
        out.push(image_finding(
            "GitDirInFinalImage",
            Severity::Warning,
            stage,
            layer,
            &path,
            format!("Git repository {path} in the final image"),
            "add .git to .dockerignore",
        ));
    }

    // devDependencies installed next to a package.json of this Dockerfile.
    for (layer, path, content) in &s.manifests {
        if !visible(*layer, path) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
            continue;
        };
        let dir = path.trim_end_matches("/package.json");
        let present: Vec<String> = v["devDependencies"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| {
                        s.tree
                            .nodes
                            .contains_key(&format!("{dir}/node_modules/{k}/package.json"))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !present.is_empty() {
            out.push(image_finding(
                "DevDependenciesInFinalImage",
                Severity::Warning,
                stage,
                *layer,
                &format!("{dir}/node_modules"),
                format!("devDependencies of {path} installed in the final image: {}", list(&present)),
                "install with `npm ci --omit=dev` in the final stage, or copy node_modules from a stage that did",
            ));
        }
    }

    // Wasted bytes: files hidden by a later layer still cost their size in the image.
    let wasted: u64 = s.tree.shadowed.iter().map(|x| x.size).sum();
    if wasted >= WASTE_MIN_BYTES {
        let mut top: Vec<&crate::walk::Shadowed> = s.tree.shadowed.iter().collect();
        top.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
        let names: Vec<String> = top
            .iter()
            .map(|x| {
                format!(
                    "{} ({}, layer {} {} by layer {})",
                    x.path,
                    crate::human::human_size(x.size),
                    x.layer,
                    if x.deleted { "deleted" } else { "overwritten" },
                    x.by
                )
            })
            .collect();
        let first = top[0];
        out.push(image_finding(
            "WastedBytes",
            Severity::Warning,
            stage,
            first.layer,
            &first.path,
            format!(
                "{} wasted: files added by one layer and deleted or overwritten by a later one: {}",
                crate::human::human_size(wasted),
                list(&names)
            ),
            "create, use and delete temporary files in the same RUN, or produce them in a builder stage",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_tools_are_recognised_by_path() {
        assert!(is_source_path("/app/main.go"));
        assert!(is_source_path("/src/go.mod"));
        assert!(!is_source_path("/app/app.py"));
        assert!(!is_source_path("/app/node_modules/x/index.d.ts"));
        assert!(!is_source_path("/etc/.rs"));
        assert_eq!(tool_name("/usr/local/go/bin/go"), Some("go"));
        assert_eq!(tool_name("/usr/bin/x86_64-linux-gnu-gcc-12"), Some("gcc"));
        assert_eq!(tool_name("/usr/bin/gcc-12"), Some("gcc"));
        assert_eq!(tool_name("/usr/share/doc/gcc"), None);
        assert_eq!(tool_name("/app/server"), None);
    }
}
