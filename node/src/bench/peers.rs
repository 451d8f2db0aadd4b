//! The peers of `rerank-node bench --peers`: other CPU runtimes on the same checkpoint and
//! workload — ONNX Runtime (fp32 on its transformer-fused graph, dynamic int8) and OpenVINO
//! (fp32, bf16, NNCF int8) — run by `scripts/bench_peers.py` with PyTorch's protocol.
//!
//! PyTorch is the reference for correctness; the peers are the bar for speed (issue 17: our int8
//! at least 1.5 × the best CPU peer), so each of our rows is also held against the fastest peer
//! of its precision class ([`best_peer`]).

use std::path::Path;

use serde::Deserialize;

use super::python::ScriptRun;
use super::{BenchRow, Side};

/// Every peer mode the script knows, in the order they run by default.
pub const DEFAULT_MODES: &str = "ort-fp32,ort-int8,ov-fp32,ov-bf16,ov-int8";

/// The script's JSON line.
#[derive(Debug, Deserialize)]
pub struct PeersOutput {
    pub threads: usize,
    /// `VNNI` or `no VNNI`: what the int8 configs were chosen for.
    pub cpu: String,
    pub results: Vec<PeerResult>,
}

/// One peer mode's result.
#[derive(Debug, Deserialize)]
pub struct PeerResult {
    /// `ort-fp32`, `ort-int8`, `ov-fp32`, `ov-bf16`, `ov-int8`.
    pub mode: String,
    /// The runtime and its version (`ONNX Runtime 1.32.0`).
    pub engine: String,
    /// `fp32`, `bf16` or `int8`.
    pub precision: String,
    /// Which graph ran (`BERT-fused graph`, `plain graph (...)`).
    #[serde(default)]
    pub graph: Option<String>,
    /// Session, hint and quantization settings.
    #[serde(default)]
    pub config: Option<String>,
    #[serde(flatten)]
    pub outcome: PeerOutcome,
}

/// A mode's figures, or why it has none (a package missing, an export failing).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PeerOutcome {
    NotMeasured {
        error: String,
    },
    Measured {
        pairs_per_s: f64,
        /// `None` where the ranks are undefined (every score equal).
        spearman_vs_torch_fp32: Option<f64>,
        max_abs_diff_vs_torch_fp32: f64,
    },
}

/// The peers' rows (one per mode asked for; one row with the reason when the script could not
/// run at all).
pub fn rows(
    python: &str,
    model: &Path,
    workload: &Path,
    threads: usize,
    seconds: f64,
    modes: &str,
) -> Vec<BenchRow> {
    let run = ScriptRun {
        python,
        script: "scripts/bench_peers.py",
        model,
        workload,
        threads,
        seconds,
        modes,
    };
    match run.output::<PeersOutput>() {
        Ok(output) => output_rows(&output),
        Err(e) => vec![BenchRow {
            engine: "peers (ONNX Runtime, OpenVINO)".into(),
            side: Side::Peer,
            precision: String::new(),
            pairs_per_s: None,
            note: format!("not measured: {e}"),
            peer_mode: None,
        }],
    }
}

/// The table's rows for the script's output.
pub fn output_rows(output: &PeersOutput) -> Vec<BenchRow> {
    output
        .results
        .iter()
        .map(|r| {
            let engine = match &r.graph {
                Some(graph) => format!("{}, {graph}", r.engine),
                None => r.engine.clone(),
            };
            let settings = match &r.config {
                Some(config) => format!("{} threads, {config}", output.threads),
                None => format!("{} threads", output.threads),
            };
            let (pairs_per_s, note) = match &r.outcome {
                PeerOutcome::NotMeasured { error } => (None, format!("not measured: {error}")),
                PeerOutcome::Measured {
                    pairs_per_s,
                    spearman_vs_torch_fp32,
                    max_abs_diff_vs_torch_fp32,
                } => {
                    let rho = spearman_vs_torch_fp32.map_or("-".into(), |v| format!("{v:.4}"));
                    // Whether the CPU has VNNI explains an int8 figure, not an fp32 one.
                    let cpu = if r.precision == "int8" {
                        format!("; {}", output.cpu)
                    } else {
                        String::new()
                    };
                    (
                        Some(*pairs_per_s),
                        format!(
                            "{settings}; ρ {rho} vs PyTorch fp32 (max |Δ| {max_abs_diff_vs_torch_fp32:.1e}){cpu}"
                        ),
                    )
                }
            };
            BenchRow {
                engine,
                side: Side::Peer,
                precision: r.precision.clone(),
                pairs_per_s,
                note,
                peer_mode: Some(r.mode.clone()),
            }
        })
        .collect()
}

/// The fastest measured peer a row of ours in `precision` is held against: for f32 the best
/// peer in fp32; for bf16, f16 and int8 the best peer in any precision, since the goal is a
/// quantized mode faster than anything a peer offers.
pub fn best_peer<'a>(rows: &'a [BenchRow], precision: &str) -> Option<&'a BenchRow> {
    let f32_only = matches!(precision, "none" | "f32" | "fp32");
    rows.iter()
        .filter(|r| r.side == Side::Peer)
        .filter(|r| !f32_only || r.precision == "fp32")
        .filter(|r| r.pairs_per_s.is_some_and(|v| v > 0.0))
        .max_by(|a, b| {
            a.pairs_per_s
                .partial_cmp(&b.pairs_per_s)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

/// Our row's speed over the best peer's, labelled with that peer's mode (`1.52x ov-fp32`).
pub fn ratio_to_best_peer(rows: &[BenchRow], ours: &BenchRow) -> Option<String> {
    let best = best_peer(rows, &ours.precision)?;
    let ratio = ours.pairs_per_s? / best.pairs_per_s?;
    Some(format!(
        "{ratio:.2}x {}",
        best.peer_mode.as_deref().unwrap_or(&best.precision)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"threads": 2, "pairs": 64, "max_length": 512, "family": "bert",
        "cpu": "no VNNI", "reference": "PyTorch 2.15.0 fp32",
        "results": [
          {"mode": "ort-fp32", "precision": "fp32", "engine": "ONNX Runtime 1.32.0",
           "graph": "BERT-fused graph", "config": "ORT_ENABLE_ALL", "pairs_per_s": 40.0,
           "iterations": 7, "seconds": 10.1, "spearman_vs_torch_fp32": 0.99998,
           "max_abs_diff_vs_torch_fp32": 2.1e-6},
          {"mode": "ort-int8", "precision": "int8", "engine": "ONNX Runtime 1.32.0",
           "graph": "BERT-fused graph",
           "config": "ORT_ENABLE_ALL, dynamic, per-channel s8 weights, u8 activations, reduce_range",
           "pairs_per_s": 55.0, "iterations": 9, "seconds": 10.4,
           "spearman_vs_torch_fp32": 0.93, "max_abs_diff_vs_torch_fp32": 0.05},
          {"mode": "ov-fp32", "precision": "fp32", "engine": "OpenVINO 2026.4.0",
           "config": "f32 precision hint, LATENCY hint", "pairs_per_s": 44.0,
           "iterations": 8, "seconds": 10.0, "spearman_vs_torch_fp32": null,
           "max_abs_diff_vs_torch_fp32": 1e-5},
          {"mode": "ov-int8", "precision": "int8", "engine": "OpenVINO",
           "error": "ModuleNotFoundError: No module named 'nncf'"}
        ]}"#;

    fn ours(precision: &str, pairs_per_s: f64) -> BenchRow {
        BenchRow {
            engine: "rerank-node onednn".into(),
            side: Side::Ours,
            precision: precision.into(),
            pairs_per_s: Some(pairs_per_s),
            note: String::new(),
            peer_mode: None,
        }
    }

    #[test]
    fn a_peers_line_becomes_one_row_per_mode_with_failures_kept() {
        let output: PeersOutput = serde_json::from_str(LINE).expect("the script's line parses");
        let rows = output_rows(&output);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.side == Side::Peer));

        assert_eq!(rows[0].engine, "ONNX Runtime 1.32.0, BERT-fused graph");
        assert_eq!(rows[0].precision, "fp32");
        assert_eq!(rows[0].pairs_per_s, Some(40.0));
        assert_eq!(rows[0].peer_mode.as_deref(), Some("ort-fp32"));
        assert_eq!(
            rows[0].note,
            "2 threads, ORT_ENABLE_ALL; ρ 1.0000 vs PyTorch fp32 (max |Δ| 2.1e-6)"
        );

        assert!(rows[1].note.contains("reduce_range"), "{}", rows[1].note);
        assert!(rows[1].note.ends_with("; no VNNI"), "{}", rows[1].note);
        assert!(rows[1].note.contains("ρ 0.9300"), "{}", rows[1].note);
        assert_eq!(rows[2].engine, "OpenVINO 2026.4.0");
        assert!(rows[2].note.contains("ρ - vs"), "{}", rows[2].note);

        assert_eq!(rows[3].pairs_per_s, None);
        assert_eq!(rows[3].precision, "int8");
        assert_eq!(
            rows[3].note,
            "not measured: ModuleNotFoundError: No module named 'nncf'"
        );
    }

    #[test]
    fn a_measured_mode_without_its_figures_is_rejected() {
        let line = r#"{"threads": 2, "cpu": "VNNI", "results": [
            {"mode": "ort-fp32", "precision": "fp32", "engine": "ONNX Runtime"}]}"#;
        assert!(serde_json::from_str::<PeersOutput>(line).is_err());
    }

    #[test]
    fn f32_is_held_against_the_best_fp32_peer_and_int8_against_the_best_of_any() {
        let output: PeersOutput = serde_json::from_str(LINE).expect("the script's line parses");
        let mut rows = vec![ours("none", 66.0), ours("bf16", 30.0), ours("int8", 110.0)];
        rows.extend(output_rows(&output));

        // Best fp32 peer: OpenVINO at 44 (ORT int8 at 55 is faster but another class).
        assert_eq!(
            ratio_to_best_peer(&rows, &rows[0]).as_deref(),
            Some("1.50x ov-fp32")
        );
        // Best of any mode: ORT int8 at 55; the failed ov-int8 row does not count.
        assert_eq!(
            ratio_to_best_peer(&rows, &rows[2]).as_deref(),
            Some("2.00x ort-int8")
        );
        assert_eq!(
            ratio_to_best_peer(&rows, &rows[1]).as_deref(),
            Some("0.55x ort-int8")
        );
    }

    #[test]
    fn without_a_measured_peer_there_is_no_ratio() {
        let rows = vec![
            ours("int8", 100.0),
            BenchRow {
                engine: "OpenVINO".into(),
                side: Side::Peer,
                precision: "int8".into(),
                pairs_per_s: None,
                note: "not measured".into(),
                peer_mode: Some("ov-int8".into()),
            },
        ];
        assert_eq!(ratio_to_best_peer(&rows, &rows[0]), None);
    }
}
