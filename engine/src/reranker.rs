//! The engine's backend: a loaded checkpoint (tokenizer + a family's network + scoring rule)
//! that scores pairs, the same way for every family: tokenization, forward passes within the
//! token budget, and bi-encoders' shared query embeddings.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::batching::{packed_batches, token_budget_batches};
use super::families::bert::{self, Bert};
use super::families::deberta::{self, Deberta};
use super::families::modernbert::{self, ModernBert};
use super::families::qwen3::{self, template::DecoderTokenizer};
use super::families::{Family, LoadContext, Sequence};
use super::heads::{cosine, Pooling};
use super::hf_config::{PoolingConfig, SentenceBertConfig, TokenizerConfig};
use super::model_files::{ModelFiles, WeightFiles};
use super::modes::{Kernels, Precision};
use super::precision::on_device;
use super::tokenize::{PairTokenizer, TokenIds, TruncationOptions, WindowSpan};
use super::{
    ChunkOptions, DocumentWindow, EncodedPair, EngineError, ModelInfo, ModelKind, PreparedQuery,
    RerankBackend,
};

/// A family's loader.
type LoadFamily = fn(&LoadContext) -> Result<Box<dyn Family>, EngineError>;

/// Every architecture (`architectures[0]` of `config.json`) the engine loads: its kind and the
/// family that runs it. A new family adds its rows here.
fn architectures() -> Vec<(&'static str, ModelKind, LoadFamily)> {
    let mut all: Vec<(&'static str, ModelKind, LoadFamily)> = Vec::new();
    all.extend(
        bert::ARCHITECTURES
            .iter()
            .map(|&(name, kind)| (name, kind, Bert::load as LoadFamily)),
    );
    all.extend(
        modernbert::ARCHITECTURES
            .iter()
            .map(|&(name, kind)| (name, kind, ModernBert::load as LoadFamily)),
    );
    all.extend(
        deberta::ARCHITECTURES
            .iter()
            .map(|&(name, kind)| (name, kind, Deberta::load as LoadFamily)),
    );
    all.extend(qwen3::architectures());
    all
}

/// The family an architecture belongs to, as `/info` names it.
fn family_name(architecture: &str) -> &'static str {
    [
        ("ModernBert", "modernbert"),
        ("DebertaV2", "deberta-v2"),
        ("Qwen3", "qwen3"),
        ("XLMRoberta", "xlm-roberta"),
        ("Roberta", "roberta"),
        ("Bert", "bert"),
    ]
    .into_iter()
    .find(|(prefix, _)| architecture.starts_with(prefix))
    .map_or("bert", |(_, name)| name)
}

/// The architectures this engine loads, as start-up errors list them.
pub fn supported_architectures() -> Vec<String> {
    architectures()
        .into_iter()
        .map(|(name, kind, _)| match kind {
            ModelKind::BiEncoder => format!("{name} (sentence-transformers bi-encoder)"),
            ModelKind::CrossEncoder => name.to_string(),
        })
        .collect()
}

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
    /// A cap on input length in tokens (`MAX_INPUT_LENGTH`), below the model's own limits.
    pub max_input_length: Option<usize>,
    /// The task instruction of decoder rerankers (`RERANK_INSTRUCTION`) when a request names
    /// none; `None` keeps the model card's. Encoders have no instruction.
    pub instruction: Option<String>,
}

impl LoadOptions {
    /// f32 on `device` with the fastest kernels this build has.
    pub fn new(device: Device, max_batch_tokens: usize, precision: Precision) -> Self {
        Self {
            device,
            max_batch_tokens,
            precision,
            kernels: Kernels::OneDnn,
            max_input_length: None,
            instruction: None,
        }
    }
}

enum Scoring {
    Classifier,
    Embedding(Pooling),
}

/// A checkpoint loaded for scoring: tokenizer, network and scoring rule.
pub struct Reranker {
    info: ModelInfo,
    tokenizer: PairTokenizer,
    /// Decoder rerankers' prompt template (they never use `tokenizer`'s pair encoding).
    decoder: Option<DecoderTokenizer>,
    family: Box<dyn Family>,
    scoring: Scoring,
    max_batch_tokens: usize,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<T, EngineError> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", path.display())))
}

/// The one field every family's `config.json` is read for before the family is chosen.
#[derive(Deserialize)]
struct ArchitectureField {
    #[serde(default)]
    architectures: Vec<String>,
}

impl Reranker {
    /// Loads `files` onto `opts.device`: the architecture picks the family, which reads its
    /// own config fields and weights (f32 on disk, stored in `opts.precision`).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self, EngineError> {
        let config_json = std::fs::read_to_string(&files.config)?;
        let declared: ArchitectureField = serde_json::from_str(&config_json)
            .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))?;
        let architecture = declared.architectures.first().cloned().unwrap_or_default();
        let bare_bi_encoder = architecture.is_empty() && files.pooling_config.is_some();
        let (kind, load_family) = architectures()
            .into_iter()
            .find(|(name, _, _)| *name == architecture)
            .map(|(_, kind, load)| (kind, load))
            .or_else(|| bare_bi_encoder.then_some((ModelKind::BiEncoder, Bert::load as LoadFamily)))
            .ok_or_else(|| EngineError::UnsupportedArchitecture {
                found: if architecture.is_empty() {
                    "(none)".into()
                } else {
                    architecture.clone()
                },
                supported: supported_architectures().join(", "),
            })?;

        let tokenizer = Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", files.tokenizer.display())))?;
        let vb = match &files.weights {
            // SAFETY: the files are memory-mapped read-only; nothing in this process writes them.
            WeightFiles::Safetensors(paths) => unsafe {
                VarBuilder::from_mmaped_safetensors(paths, DType::F32, &opts.device)?
            },
            WeightFiles::Pytorch(path) => VarBuilder::from_pth(path, DType::F32, &opts.device)?,
        };
        let family = load_family(&LoadContext {
            config_json: &config_json,
            weights: vb,
            kind,
            precision: on_device(opts.precision, &opts.device),
            kernels: opts.kernels.on_device(&opts.device),
            device: &opts.device,
            pad_id: PairTokenizer::pad_id_of(&tokenizer),
            tokenizer: &tokenizer,
        })?;

        let pooling_cfg: Option<PoolingConfig> =
            files.pooling_config.as_deref().map(read_json).transpose()?;
        let scoring = match kind {
            ModelKind::CrossEncoder => Scoring::Classifier,
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
            Some(family.max_positions()),
            tokenizer_cfg.max_length(),
            st_cfg.max_seq_length,
            opts.max_input_length,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(512);
        let decoder = qwen3::is_decoder(&architecture)
            .then(|| DecoderTokenizer::new(&tokenizer, max_length, opts.instruction.as_deref()))
            .transpose()?;
        let tokenizer = PairTokenizer::new(tokenizer, max_length)?;

        let precision = family.precision();
        let info = ModelInfo {
            model_id: files.model_id.clone(),
            family: family_name(&architecture).into(),
            instruction: decoder
                .as_ref()
                .map(|d| d.default_instruction().to_string()),
            architecture,
            kind,
            device: device_name(&opts.device),
            dtype: precision.dtype_name(family.kernels(), &opts.device).into(),
            quantization: precision.name().into(),
            weight_bytes: family.weight_bytes(),
            kernels: family.kernels_name(),
            max_input_length: max_length,
            num_labels: family.label_count(),
            pooling: match &scoring {
                Scoring::Embedding(p) => Some(p.name().to_string()),
                Scoring::Classifier => None,
            },
        };
        Ok(Self {
            info,
            tokenizer,
            decoder,
            family,
            scoring,
            max_batch_tokens: opts.max_batch_tokens.max(max_length),
        })
    }

    /// Whether the network runs packed (forward passes bounded by real tokens).
    pub fn is_packed(&self) -> bool {
        self.family.is_packed()
    }

    /// Splits `sequences` into forward passes within the token budget: counted in real tokens
    /// when the layers run packed, in `rows × longest` when padded.
    fn passes(&self, sequences: &[Sequence<'_>]) -> Vec<Vec<usize>> {
        let lengths: Vec<usize> = sequences.iter().map(Sequence::len).collect();
        if self.family.is_packed() {
            packed_batches(&lengths, self.max_batch_tokens)
        } else {
            token_budget_batches(&lengths, self.max_batch_tokens)
        }
    }

    fn score_cross(&self, pairs: &[EncodedPair]) -> Result<Vec<f32>, EngineError> {
        let sequences: Vec<Sequence<'_>> = pairs
            .iter()
            .map(|p| match p {
                EncodedPair::Cross(ids) => Ok(Sequence {
                    prefix: &[],
                    ids: &ids.ids,
                    type_ids: &ids.type_ids,
                }),
                EncodedPair::Decoder { shared, own } => Ok(Sequence {
                    prefix: &shared.ids,
                    ids: &own.ids,
                    type_ids: &own.type_ids,
                }),
                EncodedPair::Bi { .. } => Err(EngineError::Internal(
                    "a bi-encoder pair sent to a cross-encoder".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        let mut scores = vec![0f32; pairs.len()];
        for pass in self.passes(&sequences) {
            let rows: Vec<Sequence<'_>> = pass.iter().map(|&i| sequences[i]).collect();
            for (&i, score) in pass.iter().zip(self.family.score(&rows)?) {
                scores[i] = score;
            }
        }
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
        let sequences: Vec<Sequence<'_>> = unique
            .iter()
            .map(|ids| Sequence {
                prefix: &[],
                ids: &ids.ids,
                type_ids: &ids.type_ids,
            })
            .collect();
        let mut embeddings: Vec<Vec<f32>> = vec![Vec::new(); unique.len()];
        for pass in self.passes(&sequences) {
            let rows: Vec<Sequence<'_>> = pass.iter().map(|&i| sequences[i]).collect();
            for (&i, row) in pass.iter().zip(self.family.embed(&rows, pooling)?) {
                embeddings[i] = row;
            }
        }
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

impl RerankBackend for Reranker {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn prepare_query(
        &self,
        query: &str,
        instruction: Option<&str>,
        opts: &TruncationOptions,
    ) -> Result<PreparedQuery, EngineError> {
        if let Some(decoder) = &self.decoder {
            return decoder.prepare_query(query, instruction);
        }
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
            PreparedQuery::Decoder { shared, text } => match &self.decoder {
                Some(decoder) => decoder.encode_document(shared, text, document, opts),
                None => Err(EngineError::Internal(
                    "a decoder's query sent to an encoder".into(),
                )),
            },
        }
    }

    fn encode_windows(
        &self,
        query: &PreparedQuery,
        document: &str,
        opts: &TruncationOptions,
        chunks: &ChunkOptions,
    ) -> Result<Vec<DocumentWindow>, EngineError> {
        let window = |(ids, span): (TokenIds, WindowSpan),
                      pair: &dyn Fn(TokenIds) -> EncodedPair| {
            DocumentWindow {
                pair: pair(ids),
                index: span.index,
                tokens: span.tokens,
                chars: span.chars,
            }
        };
        match query {
            PreparedQuery::Cross(ids) => Ok(self
                .tokenizer
                .cross_windows(ids, document, opts, chunks)?
                .into_iter()
                .map(|w| window(w, &EncodedPair::Cross))
                .collect()),
            PreparedQuery::Bi(query) => Ok(self
                .tokenizer
                .single_windows(document, opts, chunks)?
                .into_iter()
                .map(|w| {
                    window(w, &|document| EncodedPair::Bi {
                        query: Arc::clone(query),
                        document,
                    })
                })
                .collect()),
            PreparedQuery::Decoder { shared, text } => match &self.decoder {
                Some(decoder) => decoder.encode_windows(shared, text, document, opts, chunks),
                None => Err(EngineError::Internal(
                    "a decoder's query sent to an encoder".into(),
                )),
            },
        }
    }

    fn score(&self, pairs: &[EncodedPair]) -> Result<Vec<f32>, EngineError> {
        match &self.scoring {
            Scoring::Classifier => self.score_cross(pairs),
            Scoring::Embedding(pooling) => self.score_bi(*pooling, pairs),
        }
    }
}
