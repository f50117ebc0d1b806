//! `cairn compare`: the tutorial's exercise 8.2 script as one table: each stage's base, size and
//! layers, and how much smaller the final image is than the largest stage and than a
//! single-stage baseline.

use crate::human::human_size;
use crate::{BuiltStage, Result};
use cairn_store::{LayerDescriptor, Store};
use serde::Serialize;
use std::io::{self, Write};

/// One image of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The stage's name (or `baseline (FILE)`).
    pub stage: String,
    /// Its FROM.
    pub base: String,
    /// Bytes, as `cairn images` counts them (sum of the layers' unpacked sizes).
    pub size: u64,
    /// History rows, as `cairn history -q | wc -l` counts them.
    pub layers: usize,
    /// The target of the build.
    pub is_final: bool,
    /// The single-stage baseline.
    pub is_baseline: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Stages in build order, then the baseline if any.
    pub rows: Vec<Row>,
    /// `(1 - final/largest stage) × 100`.
    pub reduction_vs_largest: Option<f64>,
    /// `(1 - final/baseline) × 100`.
    pub reduction_vs_baseline: Option<f64>,
}

/// Size of an image made of `layers`, as `cairn images` reports it.
pub fn image_size(store: &Store, layers: &[LayerDescriptor]) -> Result<u64> {
    let mut total = 0;
    for l in layers {
        total += store.layer_size(l)?;
    }
    Ok(total)
}

/// A row for a built stage.
pub fn row(store: &Store, stage: &BuiltStage) -> Result<Row> {
    Ok(Row {
        stage: stage.name.clone(),
        base: stage.base.clone(),
        size: image_size(store, &stage.layers)?,
        layers: stage.history_rows(),
        is_final: stage.is_final,
        is_baseline: false,
    })
}

fn reduction(small: u64, big: u64) -> Option<f64> {
    (big > 0).then(|| (1.0 - small as f64 / big as f64) * 100.0)
}

impl Comparison {
    /// Computes the reductions of the final row against the largest other stage and the baseline.
    pub fn new(rows: Vec<Row>) -> Comparison {
        let fin = rows.iter().find(|r| r.is_final).map(|r| r.size);
        let largest = rows
            .iter()
            .filter(|r| !r.is_baseline && !r.is_final)
            .map(|r| r.size)
            .max();
        let baseline = rows.iter().find(|r| r.is_baseline).map(|r| r.size);
        Comparison {
            reduction_vs_largest: fin.zip(largest).and_then(|(f, l)| reduction(f, l.max(f))),
            reduction_vs_baseline: fin.zip(baseline).and_then(|(f, b)| reduction(f, b)),
            rows,
        }
    }

    /// The table, then one line per reduction.
    pub fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        let w_stage = self
            .rows
            .iter()
            .map(|r| r.stage.len() + 2)
            .max()
            .unwrap_or(5)
            .max(5);
        let w_base = self
            .rows
            .iter()
            .map(|r| r.base.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            out,
            "{:<w_stage$}   {:<w_base$}   {:>8}   {:>6}",
            "STAGE", "BASE", "SIZE", "LAYERS"
        )?;
        for r in &self.rows {
            let mark = if r.is_final { " *" } else { "" };
            writeln!(
                out,
                "{:<w_stage$}   {:<w_base$}   {:>8}   {:>6}",
                format!("{}{mark}", r.stage),
                r.base,
                human_size(r.size),
                r.layers
            )?;
        }
        let fin = self.rows.iter().find(|r| r.is_final);
        if let (Some(f), Some(p)) = (fin, self.reduction_vs_largest) {
            let big = self
                .rows
                .iter()
                .filter(|r| !r.is_baseline && !r.is_final)
                .max_by_key(|r| r.size);
            if let Some(b) = big {
                writeln!(
                    out,
                    "Reduction: {p:.1}% (final stage {}: {} instead of {} for stage {})",
                    f.stage,
                    human_size(f.size),
                    human_size(b.size),
                    b.stage
                )?;
            }
        }
        if let (Some(f), Some(p)) = (fin, self.reduction_vs_baseline) {
            if let Some(b) = self.rows.iter().find(|r| r.is_baseline) {
                writeln!(
                    out,
                    "Reduction vs single-stage: {p:.1}% ({} instead of {})",
                    human_size(f.size),
                    human_size(b.size)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(stage: &str, size: u64, fin: bool, baseline: bool) -> Row {
        Row {
            stage: stage.into(),
            base: "x".into(),
            size,
            layers: 3,
            is_final: fin,
            is_baseline: baseline,
        }
    }

    #[test]
    fn reductions_against_the_largest_stage_and_the_baseline() {
        let c = Comparison::new(vec![
            r("builder", 800_000_000, false, false),
            r("runtime", 12_000_000, true, false),
            r("baseline (Dockerfile.single)", 900_000_000, false, true),
        ]);
        assert!((c.reduction_vs_largest.unwrap() - 98.5).abs() < 1e-9);
        assert!((c.reduction_vs_baseline.unwrap() - 98.6666).abs() < 1e-3);
        let mut out = Vec::new();
        c.render(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("runtime *"), "{text}");
        assert!(text.contains("800MB") && text.contains("12MB"), "{text}");
        assert!(text.contains("Reduction: 98.5%"), "{text}");
    }

    #[test]
    fn a_single_stage_has_no_reduction() {
        let c = Comparison::new(vec![r("0", 10, true, false)]);
        assert_eq!(c.reduction_vs_largest, None);
    }
}
