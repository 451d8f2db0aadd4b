//! The accuracy report: every mode's run compared with the f32 (`none`) run, as JSON or as a
//! Markdown table.

use serde::Serialize;

use super::data::EvalSet;
use super::mode_run::ModeRun;
use super::rank_metrics::{score_difference, spearman, top_k_agreement};
use super::EvalError;

/// What the compared numbers are; printed above the table and carried in the JSON.
pub const SCORES_COMPARED: &str = "raw scores as the engine returns them (RerankBackend::score: \
     logits for cross-encoders, cosine similarities for bi-encoders), each mode against none (f32)";

/// Documents in the top-k agreement.
pub const TOP_K: usize = 5;

/// One precision mode against the f32 reference.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRow {
    /// The mode asked for.
    pub mode: String,
    /// The mode in effect (differs when the model cannot run the one asked for).
    pub in_effect: String,
    /// What ran the layers in this mode.
    pub kernels: String,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    /// Mean over queries of Spearman's ρ over the query's documents.
    pub spearman_mean: f64,
    /// The lowest per-query ρ.
    pub spearman_min: f64,
    /// Fraction of queries whose best document is the reference's best.
    pub top1_agreement: f64,
    /// Mean over queries of |top-5 ∩ reference top-5| / 5.
    pub top5_agreement: f64,
    /// `weight_bytes` in MB (10^6 bytes).
    pub weight_mb: f64,
    /// `weight_bytes` as a percentage of f32's.
    pub weight_pct_of_f32: f64,
    /// Peak RSS of the mode's own process in MB; `None` off Linux.
    pub peak_rss_mb: Option<f64>,
    pub pairs_per_s: f64,
    pub load_seconds: f64,
}

/// The report of one model.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    /// `cross-encoder` or `bi-encoder`.
    pub kind: String,
    /// The data file.
    pub data: String,
    pub queries: usize,
    pub pairs: usize,
    pub mean_pair_tokens: f64,
    pub scores_compared: &'static str,
    /// `none` first, then the other modes in the order asked for.
    pub rows: Vec<ModeRow>,
}

const MB: f64 = 1e6;

impl EvalReport {
    /// Compares each of `runs` with `reference` (the f32 run, which is also a row of its own).
    pub fn build(
        model: &str,
        set: &EvalSet,
        reference: &ModeRun,
        runs: &[ModeRun],
    ) -> Result<Self, EvalError> {
        check_shape(set, reference)?;
        let rows = runs
            .iter()
            .map(|run| {
                check_shape(set, run)?;
                Ok(compare(reference, run))
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        let pairs = set.pair_count();
        Ok(Self {
            model: model.to_string(),
            kind: reference.kind.clone(),
            data: set.source.clone(),
            queries: set.queries.len(),
            pairs,
            mean_pair_tokens: reference.tokens as f64 / pairs.max(1) as f64,
            scores_compared: SCORES_COMPARED,
            rows,
        })
    }

    /// One Markdown block: a heading naming the model, what was compared, and the table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "### {}\n\n{}; data: {}, {} queries, {} pairs, {:.1} tokens per pair\n\
             scores compared: {}\n\n",
            self.model,
            self.kind,
            self.data,
            self.queries,
            self.pairs,
            self.mean_pair_tokens,
            self.scores_compared
        );
        out.push_str(
            "| mode | kernels | max abs diff | mean abs diff | Spearman ρ mean (min) | top-1 agree | \
             top-5 agree | weights MB | % of f32 | peak RSS MB | pairs/s |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let mode = if row.in_effect == row.mode {
                row.mode.clone()
            } else {
                format!("{} (ran {})", row.mode, row.in_effect)
            };
            let rss = row.peak_rss_mb.map_or("-".into(), |v| format!("{v:.0}"));
            out.push_str(&format!(
                "| {mode} | {} | {} | {} | {:.4} ({:.4}) | {:.3} | {:.3} | {:.1} | {:.0}% | {rss} | {:.1} |\n",
                row.kernels,
                format_difference(row.max_abs_diff),
                format_difference(row.mean_abs_diff),
                row.spearman_mean,
                row.spearman_min,
                row.top1_agreement,
                row.top5_agreement,
                row.weight_mb,
                row.weight_pct_of_f32,
                row.pairs_per_s,
            ));
        }
        out
    }
}

/// A score difference: exactly `0`, or three significant digits (they span 1e-7 to 1e-1).
fn format_difference(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else {
        format!("{value:.2e}")
    }
}

/// A child scored a different set than the parent read: never expected, but the metrics
/// would silently pair the wrong scores.
fn check_shape(set: &EvalSet, run: &ModeRun) -> Result<(), EvalError> {
    let matches = run.scores.len() == set.queries.len()
        && run
            .scores
            .iter()
            .zip(&set.queries)
            .all(|(s, q)| s.len() == q.documents.len());
    if matches {
        Ok(())
    } else {
        Err(EvalError::Child {
            mode: run.requested.clone(),
            message: "scores do not match the data's queries and documents".into(),
        })
    }
}

fn compare(reference: &ModeRun, run: &ModeRun) -> ModeRow {
    let flat = |r: &ModeRun| r.scores.iter().flatten().copied().collect::<Vec<f64>>();
    let difference = score_difference(&flat(reference), &flat(run));
    let queries = reference.scores.len().max(1) as f64;
    let per_query = |metric: &dyn Fn(&[f64], &[f64]) -> f64| -> Vec<f64> {
        reference
            .scores
            .iter()
            .zip(&run.scores)
            .map(|(a, b)| metric(a, b))
            .collect()
    };
    let rhos = per_query(&spearman);
    let top1 = per_query(&|a, b| top_k_agreement(a, b, 1));
    let top5 = per_query(&|a, b| top_k_agreement(a, b, TOP_K));
    ModeRow {
        mode: run.requested.clone(),
        in_effect: run.in_effect.clone(),
        kernels: run.kernels.clone(),
        max_abs_diff: difference.max,
        mean_abs_diff: difference.mean,
        spearman_mean: rhos.iter().sum::<f64>() / queries,
        spearman_min: rhos.iter().copied().fold(1.0, f64::min),
        top1_agreement: top1.iter().sum::<f64>() / queries,
        top5_agreement: top5.iter().sum::<f64>() / queries,
        weight_mb: run.weight_bytes as f64 / MB,
        weight_pct_of_f32: 100.0 * run.weight_bytes as f64 / reference.weight_bytes.max(1) as f64,
        peak_rss_mb: run.peak_rss_bytes.map(|b| b as f64 / MB),
        pairs_per_s: run.pairs_per_s(),
        load_seconds: run.load_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::data::EvalQuery;

    fn run(mode: &str, scores: Vec<Vec<f64>>, weight_bytes: usize) -> ModeRun {
        ModeRun {
            requested: mode.into(),
            in_effect: mode.into(),
            kind: "bi-encoder".into(),
            kernels: "candle".into(),
            weight_bytes,
            scores,
            tokens: 60,
            load_seconds: 0.5,
            score_seconds: 2.0,
            peak_rss_bytes: Some(150_000_000),
        }
    }

    fn set() -> EvalSet {
        let q = |n| EvalQuery {
            query: "q".into(),
            documents: vec!["d".into(); n],
        };
        EvalSet {
            source: "t.jsonl".into(),
            queries: vec![q(6), q(2)],
        }
    }

    #[test]
    fn compares_every_mode_with_f32() {
        let reference = run(
            "none",
            vec![vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4], vec![0.1, 0.2]],
            1000,
        );
        // Query 1: the 5th and 6th documents swap; query 2: the best document changes.
        let int8 = run(
            "int8",
            vec![vec![0.9, 0.8, 0.7, 0.6, 0.4, 0.5], vec![0.2, 0.1]],
            250,
        );
        let report =
            EvalReport::build("m", &set(), &reference, &[reference.clone(), int8]).expect("builds");
        assert_eq!(report.pairs, 8);
        assert_eq!(report.mean_pair_tokens, 7.5);
        let (f32_row, int8_row) = (&report.rows[0], &report.rows[1]);
        assert_eq!(f32_row.max_abs_diff, 0.0);
        assert_eq!(f32_row.spearman_mean, 1.0);
        assert_eq!(f32_row.top1_agreement, 1.0);
        assert_eq!(f32_row.weight_pct_of_f32, 100.0);
        assert!((int8_row.max_abs_diff - 0.1).abs() < 1e-12);
        assert_eq!(int8_row.top1_agreement, 0.5);
        // Query 1 keeps 4 of its top 5; query 2's top "5" is both its documents, in any order.
        assert!((int8_row.top5_agreement - 0.9).abs() < 1e-12);
        assert!((int8_row.spearman_min + 1.0).abs() < 1e-12); // query 2 reversed
        assert_eq!(int8_row.weight_pct_of_f32, 25.0);
        assert_eq!(int8_row.pairs_per_s, 4.0);
        assert_eq!(int8_row.peak_rss_mb, Some(150.0));
        let table = report.table();
        assert!(
            table.starts_with("### m\n\nbi-encoder; data: t.jsonl, 2 queries, 8 pairs"),
            "{table}"
        );
        assert!(
            table.contains("| none | candle | 0 | 0 | 1.0000 (1.0000) |"),
            "{table}"
        );
        assert!(table.contains("| int8 | candle | 1.00e-1 |"), "{table}");
    }

    #[test]
    fn a_run_of_another_shape_is_an_error() {
        let reference = run("none", vec![vec![0.0; 6], vec![0.0; 2]], 1);
        let short = run("int8", vec![vec![0.0; 6]], 1);
        assert!(EvalReport::build("m", &set(), &reference, &[short]).is_err());
    }
}
