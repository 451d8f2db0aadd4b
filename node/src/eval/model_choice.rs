//! Which model the report is about, and the local directory its children load.

use std::path::{Path, PathBuf};

use super::EvalError;
use crate::bench::checkpoint;
use rerank_engine::{EngineError, ModelFiles, ModelSource};

/// The model to evaluate.
#[derive(Debug, Clone)]
pub enum EvalModel {
    /// The benchmark's MiniLM-L6 cross-encoder, built by [`checkpoint::build_cross_encoder`]
    /// from an all-MiniLM-L6-v2 directory into `work_dir` (once; later runs reuse it).
    MiniLmCrossEncoder {
        encoder_dir: PathBuf,
        work_dir: PathBuf,
    },
    /// A local checkpoint directory or a Hugging Face hub id (a directory of that name wins).
    Given(String),
}

/// A model ready for the children: a local directory and the name the report gives it.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub dir: PathBuf,
    pub label: String,
}

impl EvalModel {
    /// Builds or fetches the model where needed. A hub id is downloaded here, once, into the
    /// hub cache, so that the children only ever read a local directory.
    pub fn resolve(&self) -> Result<ResolvedModel, EvalError> {
        match self {
            Self::MiniLmCrossEncoder {
                encoder_dir,
                work_dir,
            } => {
                let dir = checkpoint::build_cross_encoder(
                    encoder_dir,
                    &work_dir.join("minilm-l6-cross-encoder"),
                )?;
                Ok(ResolvedModel {
                    label: format!(
                        "{} (MiniLM-L6 cross-encoder: {} + seeded head)",
                        dir.display(),
                        encoder_dir.display()
                    ),
                    dir,
                })
            }
            Self::Given(model) if Path::new(model).is_dir() => Ok(ResolvedModel {
                dir: PathBuf::from(model),
                label: model.clone(),
            }),
            Self::Given(model) => Ok(ResolvedModel {
                dir: fetch_from_hub(model)?,
                label: model.clone(),
            }),
        }
    }
}

fn fetch_from_hub(id: &str) -> Result<PathBuf, EvalError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let files = runtime.block_on(ModelFiles::resolve(&ModelSource::Hub(id.to_string())))?;
    // The hub cache keeps a repository's files side by side in one snapshot directory.
    files.config.parent().map(Path::to_path_buf).ok_or_else(|| {
        EvalError::Engine(EngineError::InvalidModel(format!(
            "{id}: config.json has no directory"
        )))
    })
}
