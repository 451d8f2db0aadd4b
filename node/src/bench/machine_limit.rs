//! The machine's own limit beside the bench's figures: a short large-GEMM probe at start (f32
//! and int8, on the kernels and threads our engine uses) and the model's FLOPs per pair, so that
//! each row can say what fraction of this CPU's GEMM rate it reaches. CPUs change between
//! machines and sessions; a fraction of the machine's own limit compares across them, a
//! pairs/s figure does not.

use std::path::Path;

use rerank_engine::{gemm_probe, Precision};
use serde::Serialize;

/// The square GEMM size of the probe: large enough for the kernels' best blocking, small
/// enough (4 MB of f32 per matrix) to take a fraction of a second per product on 2 cores.
const PROBE_SIZE: usize = 1024;

/// What one large GEMM reaches on this machine.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MachineLimit {
    /// f32 GEMM, GFLOP/s (multiply-add = 2).
    pub sgemm_gflops: f64,
    /// u8 × s8 → s32 GEMM, GOP/s; `None` where the kernels have no int8 GEMM.
    pub int8_gops: Option<f64>,
    /// m = n = k of the probe.
    pub size: usize,
}

/// Probes the packed kernels for `seconds` per precision; `None` where they are not built (the
/// candle path has no GEMM of its own to probe).
pub fn probe(seconds: f64) -> Option<MachineLimit> {
    let sgemm = gemm_probe::measure(Precision::F32, PROBE_SIZE, seconds).ok()?;
    let int8 = gemm_probe::measure(Precision::Int8, PROBE_SIZE, seconds).ok();
    Some(MachineLimit {
        sgemm_gflops: sgemm.gflops,
        int8_gops: int8.map(|r| r.gflops),
        size: PROBE_SIZE,
    })
}

/// A BERT-shaped encoder's dimensions, from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct EncoderShape {
    hidden: f64,
    intermediate: f64,
    layers: f64,
}

fn encoder_shape(model: &Path) -> Option<EncoderShape> {
    let text = std::fs::read_to_string(model.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    // Families whose layers are BERT's (four h×h projections, an h×i×h MLP): others
    // (GeGLU, disentangled or causal attention) would need their own count.
    let bert_like = matches!(
        config["model_type"].as_str()?,
        "bert" | "roberta" | "xlm-roberta" | "camembert" | "electra"
    );
    if !bert_like {
        return None;
    }
    Some(EncoderShape {
        hidden: config["hidden_size"].as_f64()?,
        intermediate: config["intermediate_size"].as_f64()?,
        layers: config["num_hidden_layers"].as_f64()?,
    })
}

/// FLOPs (multiply-add = 2) of scoring pairs of `token_counts` tokens with the model in
/// `model`: the projections (2·s·(4h² + 2hi) per layer) and the attention products
/// (2·2·s²·h per layer); `None` for families this count does not describe.
pub fn workload_flops(model: &Path, token_counts: &[usize]) -> Option<f64> {
    let shape = encoder_shape(model)?;
    let EncoderShape {
        hidden: h,
        intermediate: i,
        layers,
    } = shape;
    let per_layer: f64 = token_counts
        .iter()
        .map(|&s| {
            let s = s as f64;
            2.0 * s * (4.0 * h * h + 2.0 * h * i) + 4.0 * s * s * h
        })
        .sum();
    Some(per_layer * layers)
}

/// The rate a row's `pairs_per_s` means in GFLOP/s, and its share of the probe's rate for the
/// row's precision (int8 against the int8 GEMM, everything else against sgemm), e.g.
/// `"54.3 GFLOP/s, 91% of sgemm"`.
pub fn efficiency(
    pairs_per_s: f64,
    flops_per_pair: f64,
    precision: &str,
    limit: &MachineLimit,
) -> String {
    let rate = pairs_per_s * flops_per_pair / 1e9;
    let (reference, name) = match (precision, limit.int8_gops) {
        ("int8", Some(int8)) => (int8, "int8 GEMM"),
        _ => (limit.sgemm_gflops, "sgemm"),
    };
    format!(
        "{rate:.1} GFLOP/s, {:.0}% of {name}",
        100.0 * rate / reference
    )
}

/// The table's line for the probe.
pub fn describe(limit: &MachineLimit) -> String {
    let int8 = limit
        .int8_gops
        .map_or_else(String::new, |g| format!(", int8 GEMM {g:.1} GOP/s"));
    format!(
        "machine limit: sgemm {:.1} GFLOP/s{int8} (fastest {n}x{n}x{n} product in 1 s, same kernels and threads)\n",
        limit.sgemm_gflops,
        n = limit.size
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, json: &str) {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join("config.json"), json).expect("config");
    }

    #[test]
    fn a_minilm_l6_pair_of_127_tokens_costs_2_85_gflop() {
        let dir = std::env::temp_dir().join(format!("machine-limit-{}", std::process::id()));
        write_config(
            &dir,
            r#"{"model_type": "bert", "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}"#,
        );
        let flops = workload_flops(&dir, &[127, 127]).expect("bert");
        // 6 · (2·127·(4·384² + 2·384·1536) + 4·127²·384) = 2.85 GFLOP per pair.
        let per_pair = flops / 2.0;
        assert!((per_pair / 1e9 - 2.845).abs() < 0.01, "{per_pair}");
        write_config(
            &dir,
            r#"{"model_type": "modernbert", "hidden_size": 768, "intermediate_size": 1152, "num_hidden_layers": 22}"#,
        );
        assert_eq!(workload_flops(&dir, &[127]), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn int8_rows_are_held_against_the_int8_gemm_and_the_rest_against_sgemm() {
        let limit = MachineLimit {
            sgemm_gflops: 100.0,
            int8_gops: Some(200.0),
            size: 1024,
        };
        assert_eq!(
            efficiency(30.0, 3e9, "none", &limit),
            "90.0 GFLOP/s, 90% of sgemm"
        );
        assert_eq!(
            efficiency(50.0, 3e9, "int8", &limit),
            "150.0 GFLOP/s, 75% of int8 GEMM"
        );
        let no_int8 = MachineLimit {
            int8_gops: None,
            ..limit
        };
        assert!(efficiency(50.0, 3e9, "int8", &no_int8).ends_with("of sgemm"));
    }
}
