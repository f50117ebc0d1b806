//! Building every stage of a Dockerfile through the engine, so that the image rules see what each
//! stage really contains, not only the target.

use crate::Result;
use cairn_build::{BaseResolver, BuildRequest, Reporter};
use cairn_dockerfile::{Base, PlanOptions};
use cairn_store::{LayerDescriptor, Store};

/// The image one stage produced.
#[derive(Debug, Clone)]
pub struct BuiltStage {
    /// The stage's name, or its index when unnamed.
    pub name: String,
    /// Position of the stage in the Dockerfile.
    pub index: usize,
    /// Its FROM: an image reference, `scratch`, or `stage NAME`.
    pub base: String,
    /// The image config (`history`, `config.User`, …) as JSON.
    pub config: serde_json::Value,
    /// Its layers, bottom first, base image layers included.
    pub layers: Vec<LayerDescriptor>,
    /// How many of the bottom layers come from the base image (not made by this Dockerfile).
    pub base_layers: usize,
    /// The stage the build targets (the image the user ships).
    pub is_final: bool,
    /// For each layer, the Dockerfile line of the instruction that made it (0: unknown, or a
    /// base image layer).
    pub layer_lines: Vec<usize>,
}

impl BuiltStage {
    /// The `created_by` of the history entry that made layer `index`.
    pub fn created_by(&self, index: usize) -> String {
        layer_history(&self.config)
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    /// Rows of `cairn history` (every history entry, empty layers included; the layers when
    /// the config has no history).
    pub fn history_rows(&self) -> usize {
        history_rows(&self.config, self.layers.len())
    }
}

/// `created_by` of each non-empty history entry: entry `i` made layer `i`.
pub fn layer_history(config: &serde_json::Value) -> Vec<String> {
    config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
                .map(|e| e["created_by"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Rows `cairn history -q` prints for an image with this config.
pub fn history_rows(config: &serde_json::Value, layers: usize) -> usize {
    match config["history"].as_array() {
        Some(h) if !h.is_empty() => h.len(),
        _ => layers,
    }
}

/// Whether a history `created_by` was written for the instruction `original` (as written):
/// same keyword, and every word of its arguments (flags aside) appears in it. Instructions whose
/// variables were expanded do not match; their layers stay without a line.
fn made_by(created_by: &str, original: &str) -> bool {
    let c = created_by.trim_end_matches("# buildkit").trim();
    let mut words = original.split_whitespace();
    let Some(kw) = words.next() else {
        return false;
    };
    let head = c.split_whitespace().next().unwrap_or("");
    if !head.eq_ignore_ascii_case(kw) {
        return false;
    }
    words
        .filter(|w| !w.starts_with("--"))
        .map(|w| w.trim_matches(|ch| matches!(ch, '[' | ']' | '"' | ',')))
        .filter(|w| !w.is_empty())
        .all(|w| c.contains(w))
}

/// Lines of the instructions that made each layer: the base image's layers get the line of the
/// FROM that brought them (`from_line`), the others are matched in order against the
/// instructions of the stage and of the stages it is built on.
pub fn layer_lines(
    config: &serde_json::Value,
    layers: usize,
    base_layers: usize,
    from_line: usize,
    steps: &[(usize, String)],
) -> Vec<usize> {
    let history = layer_history(config);
    let mut lines = vec![0; layers];
    for l in lines.iter_mut().take(base_layers) {
        *l = from_line;
    }
    let mut next = 0;
    for (i, line) in lines.iter_mut().enumerate().skip(base_layers) {
        let Some(by) = history.get(i) else {
            break;
        };
        if let Some(j) = steps[next.min(steps.len())..]
            .iter()
            .position(|(_, o)| made_by(by, o))
        {
            *line = steps[next + j].0;
            next += j + 1;
        }
    }
    lines
}

/// Name given to an unnamed stage so that it can be a `--target` (BuildKit's targets are names).
fn synthetic_name(index: usize) -> String {
    format!("{SYNTHETIC_PREFIX}{index}")
}

const SYNTHETIC_PREFIX: &str = "cairn-check-stage-";

/// Appends `AS <synthetic name>` to the FROM of every unnamed stage of `text`.
fn name_all_stages(df: &cairn_dockerfile::Dockerfile, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut index = 0;
    for ins in &df.instructions {
        if let cairn_dockerfile::Args::From { stage_name, .. } = &ins.args {
            if stage_name.is_none() {
                if let Some(l) = lines.get_mut(ins.span.end_line.saturating_sub(1)) {
                    l.push_str(&format!(" AS {}", synthetic_name(index)));
                }
            }
            index += 1;
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Builds each stage the target needs (dependencies first, the target last) with the engine,
/// one build per stage: the cache makes every build after the first one a series of lookups.
pub fn build_stages(
    store: &Store,
    resolver: &dyn BaseResolver,
    req: &BuildRequest<'_>,
    reporter: &Reporter<'_>,
) -> Result<Vec<BuiltStage>> {
    let df = cairn_dockerfile::parse(&req.dockerfile_name, &req.dockerfile)?;
    let opts = PlanOptions {
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        target_platform: req.platform.clone(),
        build_platform: None,
    };
    let plan = cairn_dockerfile::plan(&df, &opts, &|_| None)?;
    let named_text = name_all_stages(&df, &req.dockerfile);
    let mut built: Vec<BuiltStage> = Vec::new();
    // Instructions of each stage's chain (its ancestors' first), by stage index.
    let mut chains: std::collections::HashMap<usize, Vec<(usize, String)>> = Default::default();
    // Line of the FROM naming the image at the bottom of each stage's chain, by stage index.
    let mut roots: std::collections::HashMap<usize, usize> = Default::default();
    let last = plan.stages.len().saturating_sub(1);
    for (pos, stage) in plan.stages.iter().enumerate() {
        let mut chain = match &stage.base {
            Base::Stage(i) => chains.get(i).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        chain.extend(
            stage
                .steps
                .iter()
                .map(|s| (s.span.line, s.original.clone())),
        );
        chains.insert(stage.index, chain.clone());
        let from_line = match &stage.base {
            Base::Stage(i) => roots.get(i).copied().unwrap_or(stage.span.line),
            _ => stage.span.line,
        };
        roots.insert(stage.index, from_line);
        let target = stage
            .name
            .clone()
            .unwrap_or_else(|| synthetic_name(stage.index));
        let mut sub = req.clone();
        sub.dockerfile = named_text.clone();
        sub.target = Some(target);
        let out = cairn_build::build(store, resolver, &sub, reporter)?;
        let (base, base_layers) = match &stage.base {
            Base::Scratch => ("scratch".to_string(), 0),
            Base::Image(r) => {
                let n = resolver
                    .resolve(r, req.platform.as_deref())?
                    .map(|b| b.layers.len())
                    .unwrap_or(0);
                (r.clone(), n)
            }
            Base::Stage(i) => {
                let parent = built.iter().find(|b| b.index == *i);
                (
                    format!(
                        "stage {}",
                        parent
                            .map(|p| p.name.clone())
                            .unwrap_or_else(|| i.to_string())
                    ),
                    parent.map(|p| p.base_layers).unwrap_or(0),
                )
            }
        };
        let config = serde_json::from_slice(&out.config_json)
            .map_err(|e| crate::Error::Other(format!("the engine's image config: {e}")))?;
        let layer_lines = layer_lines(&config, out.layers.len(), base_layers, from_line, &chain);
        built.push(BuiltStage {
            name: match &stage.name {
                Some(n) if n.starts_with(SYNTHETIC_PREFIX) => stage.index.to_string(),
                _ => stage.display_name(),
            },
            index: stage.index,
            base,
            config,
            layers: out.layers,
            base_layers,
            is_final: pos == last,
            layer_lines,
        });
    }
    Ok(built)
}

/// Builds every stage of the Dockerfile, also those the default target does not need (a `test`
/// or `development` stage), in file order; the default target (the last stage) is the final one.
pub fn build_all_stages(
    store: &Store,
    resolver: &dyn BaseResolver,
    req: &BuildRequest<'_>,
    reporter: &Reporter<'_>,
) -> Result<Vec<BuiltStage>> {
    let mut all = build_stages(store, resolver, req, reporter)?;
    let df = cairn_dockerfile::parse(&req.dockerfile_name, &req.dockerfile)?;
    let named = name_all_stages(&df, &req.dockerfile);
    let named_df = cairn_dockerfile::parse(&req.dockerfile_name, &named)?;
    let names: Vec<String> = named_df
        .instructions
        .iter()
        .filter_map(|i| match &i.args {
            cairn_dockerfile::Args::From { stage_name, .. } => stage_name.clone(),
            _ => None,
        })
        .collect();
    for (index, name) in names.iter().enumerate() {
        if all.iter().any(|b| b.index == index) {
            continue;
        }
        let mut sub = req.clone();
        sub.dockerfile = named.clone();
        sub.target = Some(name.clone());
        if let Some(mut stage) = build_stages(store, resolver, &sub, reporter)?.pop() {
            stage.is_final = false;
            all.push(stage);
        }
    }
    all.sort_by_key(|b| b.index);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_stages_get_a_name_on_their_last_from_line() {
        let text = "FROM \\\n  alpine:3\nRUN true\nFROM busybox AS b\nFROM scratch\n";
        let df = cairn_dockerfile::parse("Dockerfile", text).unwrap();
        let named = name_all_stages(&df, text);
        let df2 = cairn_dockerfile::parse("Dockerfile", &named).unwrap();
        let names: Vec<Option<String>> = df2
            .instructions
            .iter()
            .filter_map(|i| match &i.args {
                cairn_dockerfile::Args::From { stage_name, .. } => Some(stage_name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            vec![
                Some("cairn-check-stage-0".into()),
                Some("b".into()),
                Some("cairn-check-stage-2".into())
            ]
        );
    }

    #[test]
    fn layers_are_traced_to_the_lines_of_their_instructions() {
        let cfg = serde_json::json!({"history": [
            {"created_by": "ADD rootfs"},
            {"created_by": "WORKDIR /app", "empty_layer": true},
            {"created_by": "COPY id_rsa /root/.ssh/id_rsa # buildkit"},
            {"created_by": "RUN /bin/sh -c make  && make install # buildkit"},
            {"created_by": "COPY /app/server /server # buildkit"},
            {"created_by": "RUN /bin/sh -c echo 3 # buildkit"}
        ]});
        let steps = vec![
            (2, "WORKDIR /app".to_string()),
            (3, "COPY id_rsa /root/.ssh/id_rsa".to_string()),
            (4, "ARG V=3".to_string()),
            (5, "RUN make  && make install".to_string()),
            (7, "COPY --from=build /app/server /server".to_string()),
            (8, "RUN echo $V".to_string()),
        ];
        assert_eq!(layer_lines(&cfg, 5, 1, 1, &steps), vec![1, 3, 5, 7, 0]);
    }

    #[test]
    fn history_rows_count_empty_layers() {
        let cfg = serde_json::json!({"history": [
            {"created_by": "ADD rootfs"},
            {"created_by": "ENV A=1", "empty_layer": true},
            {"created_by": "RUN make"}
        ]});
        assert_eq!(history_rows(&cfg, 2), 3);
        assert_eq!(layer_history(&cfg), vec!["ADD rootfs", "RUN make"]);
        assert_eq!(history_rows(&serde_json::json!({}), 2), 2);
    }
}
