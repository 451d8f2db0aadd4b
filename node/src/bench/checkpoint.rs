//! Builds the benchmark's cross-encoder: the all-MiniLM-L6-v2 encoder with a seeded
//! classification head, saved as a `BertForSequenceClassification` checkpoint.
//!
//! It has exactly the shape of cross-encoder/ms-marco-MiniLM-L-6-v2 (6 layers, 384 hidden,
//! 12 heads), which cannot be downloaded here; its scores are meaningless, its speed is not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use rerank_engine::EngineError;

/// Files copied unchanged from the encoder's directory.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "vocab.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

fn seeded(shape: (usize, usize), scale: f32, rng: &mut StdRng) -> Result<Tensor, EngineError> {
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.random_range(-scale..scale))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Writes the checkpoint into `out` (once; an existing one is reused) and returns its path.
pub fn build_cross_encoder(encoder_dir: &Path, out: &Path) -> Result<PathBuf, EngineError> {
    if out.join("model.safetensors").is_file() {
        return Ok(out.to_path_buf());
    }
    std::fs::create_dir_all(out)?;
    for name in TOKENIZER_FILES {
        let src = encoder_dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name))?;
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(encoder_dir.join("config.json"))?)
            .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))?;
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["num_labels"] = serde_json::json!(1);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    config["label2id"] = serde_json::json!({"LABEL_0": 0});
    let hidden = config["hidden_size"].as_u64().unwrap_or(384) as usize;
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;

    let weights =
        candle_core::safetensors::load(encoder_dir.join("model.safetensors"), &Device::Cpu)?;
    let mut renamed: HashMap<String, Tensor> = weights
        .into_iter()
        .map(|(name, t)| {
            let name = if name.starts_with("bert.") {
                name
            } else {
                format!("bert.{name}")
            };
            Ok((name, t.to_dtype(DType::F32)?))
        })
        .collect::<Result<_, EngineError>>()?;
    let mut rng = StdRng::seed_from_u64(20261129);
    if !renamed.contains_key("bert.pooler.dense.weight") {
        renamed.insert(
            "bert.pooler.dense.weight".into(),
            seeded((hidden, hidden), 0.05, &mut rng)?,
        );
        renamed.insert(
            "bert.pooler.dense.bias".into(),
            Tensor::zeros(hidden, DType::F32, &Device::Cpu)?,
        );
    }
    renamed.insert(
        "classifier.weight".into(),
        seeded((1, hidden), 0.1, &mut rng)?,
    );
    renamed.insert(
        "classifier.bias".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&renamed, out.join("model.safetensors"))?;
    Ok(out.to_path_buf())
}
