//! The candle backend: a loaded checkpoint (encoder + head + tokenizer) that scores pairs.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::encoder::{Encoder, Kernels};
use super::heads::{cosine, raw_score, ClassifierHead, Pooling};
use super::hf_config::{HfConfig, PoolingConfig, SentenceBertConfig, TokenizerConfig};
use super::model_files::{ModelFiles, WeightFiles};
use super::precision::{on_device, supports, Precision};
use super::tokenize::{PairTokenizer, TokenIds, TruncationOptions};
use super::{EncodedPair, EngineError, ModelInfo, ModelKind, PreparedQuery, RerankBackend};

/// Architectures (the `architectures[0]` of `config.json`) this backend loads.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "BertForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "RobertaForSequenceClassification",
    "BertModel (sentence-transformers bi-encoder)",
    "XLMRobertaModel (sentence-transformers bi-encoder)",
    "RobertaModel (sentence-transformers bi-encoder)",
];

/// Settings that shape how a checkpoint is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where tensors live.
    pub device: Device,
    /// Token budget of one forward pass (`MAX_BATCH_TOKENS`).
    pub max_batch_tokens: usize,
    /// Precision asked for; a mode the model cannot run falls back to f32 with a warning, one
    /// the device cannot run to its nearest mode (see [`super::precision::on_device`]).
    pub precision: Precision,
    /// Kernels for the transformer layers on a CPU (oneDNN falls back to candle where it
    /// cannot run the model or the build lacks it, and on any other device).
    pub kernels: Kernels,
}

impl LoadOptions {
    /// f32 on `device` with the fastest kernels this build has.
    pub fn new(device: Device, max_batch_tokens: usize, precision: Precision) -> Self {
        Self {
            device,
            max_batch_tokens,
            precision,
            kernels: Kernels::OneDnn,
        }
    }
}

enum Scoring {
    Classifier(ClassifierHead),
    Embedding(Pooling),
}

/// A checkpoint loaded for scoring with candle.
pub struct CandleReranker {
    info: ModelInfo,
    tokenizer: PairTokenizer,
    encoder: Encoder,
    scoring: Scoring,
    device: Device,
    position_offset: usize,
    max_batch_tokens: usize,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<T, EngineError> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", path.display())))
}

fn encoder_prefix(vb: &VarBuilder) -> Result<&'static str, EngineError> {
    ["", "bert", "roberta", "model"]
        .into_iter()
        .find(|p| {
            let name = if p.is_empty() {
                "embeddings.word_embeddings.weight".to_string()
            } else {
                format!("{p}.embeddings.word_embeddings.weight")
            };
            vb.contains_tensor(&name)
        })
        .ok_or_else(|| {
            EngineError::InvalidModel(
                "no embeddings.word_embeddings.weight tensor (under '', bert., roberta. or model.)"
                    .into(),
            )
        })
}

impl CandleReranker {
    /// Loads `files` onto `opts.device` in f32.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self, EngineError> {
        let cfg = HfConfig::parse(&std::fs::read_to_string(&files.config)?)?;
        let architecture = cfg.architectures.first().cloned().unwrap_or_default();
        let kind = match architecture.as_str() {
            "BertForSequenceClassification"
            | "XLMRobertaForSequenceClassification"
            | "RobertaForSequenceClassification" => ModelKind::CrossEncoder,
            "BertModel" | "XLMRobertaModel" | "RobertaModel" => ModelKind::BiEncoder,
            "" if files.pooling_config.is_some() => ModelKind::BiEncoder,
            other => {
                return Err(EngineError::UnsupportedArchitecture {
                    found: if other.is_empty() {
                        "(none)".into()
                    } else {
                        other.into()
                    },
                    supported: SUPPORTED_ARCHITECTURES.join(", "),
                })
            }
        };

        let dtype = DType::F32;
        let vb = match &files.weights {
            // SAFETY: the files are memory-mapped read-only; nothing in this process writes them.
            WeightFiles::Safetensors(paths) => unsafe {
                VarBuilder::from_mmaped_safetensors(paths, dtype, &opts.device)?
            },
            WeightFiles::Pytorch(path) => VarBuilder::from_pth(path, dtype, &opts.device)?,
        };
        let prefix = encoder_prefix(&vb)?;
        let encoder_vb = if prefix.is_empty() {
            vb.clone()
        } else {
            vb.pp(prefix)
        };
        let precision = if supports(opts.precision, &[cfg.hidden_size, cfg.intermediate_size]) {
            opts.precision
        } else {
            tracing::warn!(
                requested = opts.precision.name(),
                hidden_size = cfg.hidden_size,
                intermediate_size = cfg.intermediate_size,
                "int8 (Q8_0) needs sizes that are multiples of 32; running float32"
            );
            Precision::F32
        };
        let precision = on_device(precision, &opts.device);
        let encoder = Encoder::load(encoder_vb.clone(), &cfg, precision, opts.kernels)?;

        let pooling_cfg: Option<PoolingConfig> =
            files.pooling_config.as_deref().map(read_json).transpose()?;
        let scoring = match kind {
            ModelKind::CrossEncoder if cfg.is_roberta_family() => {
                Scoring::Classifier(ClassifierHead::load_roberta(vb.clone(), &cfg)?)
            }
            ModelKind::CrossEncoder => {
                Scoring::Classifier(ClassifierHead::load_bert(encoder_vb, vb.clone(), &cfg)?)
            }
            ModelKind::BiEncoder => Scoring::Embedding(Pooling::from_config(pooling_cfg.as_ref())?),
        };

        let tokenizer_cfg: TokenizerConfig = files
            .tokenizer_config
            .as_deref()
            .map(read_json)
            .transpose()?
            .unwrap_or_default();
        let st_cfg: SentenceBertConfig = files
            .sentence_bert_config
            .as_deref()
            .map(read_json)
            .transpose()?
            .unwrap_or_default();
        let max_length = [
            Some(cfg.position_limit()),
            tokenizer_cfg.max_length(),
            st_cfg.max_seq_length,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(512);
        let tokenizer = Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", files.tokenizer.display())))?;
        let tokenizer = PairTokenizer::new(tokenizer, max_length)?;

        let info = ModelInfo {
            model_id: files.model_id.clone(),
            architecture,
            kind,
            device: device_name(&opts.device),
            dtype: precision.dtype_name(encoder.kernels(), &opts.device).into(),
            quantization: precision.name().into(),
            weight_bytes: encoder.weight_bytes(),
            kernels: encoder.kernels_name(),
            max_input_length: max_length,
            num_labels: match &scoring {
                Scoring::Classifier(head) => Some(head.label_count()),
                Scoring::Embedding(_) => None,
            },
            pooling: match &scoring {
                Scoring::Embedding(p) => Some(p.name().to_string()),
                Scoring::Classifier(_) => None,
            },
        };
        Ok(Self {
            info,
            tokenizer,
            encoder,
            scoring,
            device: opts.device.clone(),
            position_offset: cfg.position_offset(),
            max_batch_tokens: opts.max_batch_tokens.max(max_length),
        })
    }

    /// Runs the encoder over `sequences` in token-budget batches; `each` receives every batch's
    /// sequence indices with its last hidden state and token mask.
    fn forward_batches(
        &self,
        sequences: &[&TokenIds],
        mut each: impl FnMut(&[usize], &Tensor, &Tensor) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        for batch in self.encoder.batches(&lengths, self.max_batch_tokens) {
            let rows: Vec<(&[u32], &[u32])> = batch
                .iter()
                .map(|&i| {
                    (
                        sequences[i].ids.as_slice(),
                        sequences[i].type_ids.as_slice(),
                    )
                })
                .collect();
            let (hidden, mask) = self.encoder.forward_batch(
                &rows,
                self.tokenizer.pad_id(),
                self.position_offset,
                &self.device,
            )?;
            each(&batch, &hidden, &mask)?;
        }
        Ok(())
    }

    fn score_cross(
        &self,
        head: &ClassifierHead,
        pairs: &[EncodedPair],
    ) -> Result<Vec<f32>, EngineError> {
        let sequences: Vec<&TokenIds> = pairs
            .iter()
            .map(|p| match p {
                EncodedPair::Cross(ids) => Ok(ids),
                EncodedPair::Bi { .. } => Err(EngineError::Internal(
                    "bi-encoder pair sent to a cross-encoder".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        let mut scores = vec![0f32; pairs.len()];
        self.forward_batches(&sequences, |batch, hidden, _| {
            let logits = head
                .forward(hidden)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (&i, row) in batch.iter().zip(&logits) {
                scores[i] = raw_score(row);
            }
            Ok(())
        })?;
        Ok(scores)
    }

    fn score_bi<'a>(
        &self,
        pooling: Pooling,
        pairs: &'a [EncodedPair],
    ) -> Result<Vec<f32>, EngineError> {
        // Embed every distinct text once: a request's query is shared by all its pairs.
        let mut unique: Vec<&'a TokenIds> = Vec::new();
        let mut slot: HashMap<&'a TokenIds, usize> = HashMap::new();
        let mut pair_slots = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let EncodedPair::Bi { query, document } = pair else {
                return Err(EngineError::Internal(
                    "cross-encoder pair sent to a bi-encoder".into(),
                ));
            };
            let mut slot_of = |ids: &'a TokenIds| -> usize {
                *slot.entry(ids).or_insert_with(|| {
                    unique.push(ids);
                    unique.len() - 1
                })
            };
            let q = slot_of(query.as_ref());
            let d = slot_of(document);
            pair_slots.push((q, d));
        }
        let mut embeddings: Vec<Vec<f32>> = vec![Vec::new(); unique.len()];
        self.forward_batches(&unique, |batch, hidden, mask| {
            let pooled = pooling
                .forward(hidden, mask)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (&i, row) in batch.iter().zip(pooled) {
                embeddings[i] = row;
            }
            Ok(())
        })?;
        Ok(pair_slots
            .into_iter()
            .map(|(q, d)| cosine(&embeddings[q], &embeddings[d]))
            .collect())
    }
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

impl RerankBackend for CandleReranker {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn prepare_query(
        &self,
        query: &str,
        opts: &TruncationOptions,
    ) -> Result<PreparedQuery, EngineError> {
        match self.info.kind {
            ModelKind::CrossEncoder => Ok(PreparedQuery::Cross(
                self.tokenizer.encode_query(query, opts)?,
            )),
            ModelKind::BiEncoder => {
                // `max_tokens_per_doc` caps documents, never the query.
                let query_opts = TruncationOptions {
                    max_tokens_per_doc: None,
                    ..*opts
                };
                Ok(PreparedQuery::Bi(Arc::new(
                    self.tokenizer.encode_text(query, &query_opts)?,
                )))
            }
        }
    }

    fn encode_document(
        &self,
        query: &PreparedQuery,
        document: &str,
        opts: &TruncationOptions,
    ) -> Result<EncodedPair, EngineError> {
        match query {
            PreparedQuery::Cross(ids) => Ok(EncodedPair::Cross(
                self.tokenizer.encode_pair_with(ids, document, opts)?,
            )),
            PreparedQuery::Bi(ids) => Ok(EncodedPair::Bi {
                query: Arc::clone(ids),
                document: self.tokenizer.encode_text(document, opts)?,
            }),
        }
    }

    fn score(&self, pairs: &[EncodedPair]) -> Result<Vec<f32>, EngineError> {
        match &self.scoring {
            Scoring::Classifier(head) => self.score_cross(head, pairs),
            Scoring::Embedding(pooling) => self.score_bi(*pooling, pairs),
        }
    }
}
