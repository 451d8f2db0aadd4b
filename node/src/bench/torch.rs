//! The PyTorch side of the benchmark: `sentence_transformers.CrossEncoder` (or the
//! Qwen3-Reranker card's computation for decoder rerankers) in fp32, bf16 autocast and dynamic
//! int8, run by `scripts/bench_torch*.py` on the same checkpoint and workload.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::python::ScriptRun;
use super::{BenchRow, Side};

#[derive(Deserialize)]
struct TorchOutput {
    torch: String,
    threads: usize,
    results: BTreeMap<String, TorchMode>,
}

#[derive(Deserialize)]
struct TorchMode {
    pairs_per_s: f64,
}

/// PyTorch's rows (one per mode it could run; one row with the reason when it could not run).
pub fn rows(
    python: &str,
    model: &Path,
    workload: &Path,
    threads: usize,
    seconds: f64,
) -> Vec<BenchRow> {
    let run = ScriptRun {
        python,
        script: script(model),
        model,
        workload,
        threads,
        seconds,
        modes: "fp32,bf16,int8",
    };
    match run.output::<TorchOutput>() {
        Ok(parsed) => parsed
            .results
            .into_iter()
            .map(|(mode, r)| BenchRow {
                engine: format!("PyTorch {} {}", parsed.torch, runs_as(model)),
                side: Side::PyTorch,
                note: format!(
                    "{} threads{}",
                    parsed.threads,
                    match mode.as_str() {
                        "bf16" => ", autocast",
                        "int8" => ", quantize_dynamic",
                        _ => "",
                    }
                ),
                precision: mode,
                pairs_per_s: Some(r.pairs_per_s),
                peer_mode: None,
            })
            .collect(),
        Err(e) => vec![BenchRow {
            engine: "PyTorch".into(),
            side: Side::PyTorch,
            precision: String::new(),
            pairs_per_s: None,
            note: format!("not measured: {e}"),
            peer_mode: None,
        }],
    }
}

/// Whether `model` is a decoder reranker (Qwen3), which PyTorch runs the model card's way.
fn is_decoder(model: &Path) -> bool {
    std::fs::read_to_string(model.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|cfg| {
            cfg["architectures"][0]
                .as_str()
                .map(|a| a.starts_with("Qwen3"))
        })
        .unwrap_or(false)
}

/// The PyTorch side's script for `model`.
fn script(model: &Path) -> &'static str {
    if is_decoder(model) {
        "scripts/bench_torch_qwen3.py"
    } else {
        "scripts/bench_torch.py"
    }
}

/// How the PyTorch side runs `model`, for the table.
fn runs_as(model: &Path) -> &'static str {
    if is_decoder(model) {
        "AutoModelForCausalLM (model card)"
    } else {
        "CrossEncoder"
    }
}

/// PyTorch's modes an engine row is held against, the fastest of them counting: fp32 for f32;
/// for bf16 and int8 PyTorch's faster reduced mode (bf16 autocast or dynamic int8), since a user
/// who reduces precision picks the one that is fast on their CPU (bf16 autocast runs at a
/// sixth of fp32's speed without AVX512-BF16).
pub fn compared_modes(precision: &str) -> &'static [&'static str] {
    match precision {
        "bf16" | "int8" => &["bf16", "int8"],
        _ => &["fp32"],
    }
}
