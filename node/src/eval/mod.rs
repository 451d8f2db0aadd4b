//! `rerank-node eval`: how much each precision mode changes a model's scores and rankings on
//! a query/document set, what it saves in weight memory, and what it costs in speed.
//!
//! The parent reads and validates the data, builds or fetches the model, then runs every mode
//! in a child process of its own (the f32 reference first) and compares their raw scores.
//!
//! - [`data`]: the JSON-lines format and the built-in set (`node/eval/default.jsonl`).
//! - [`model_choice`]: which model, and the local directory the children load.
//! - [`child_process`]: starting a mode's child and reading what it reports.
//! - [`mode_run`]: the child's side: one mode loaded, every query scored, timings, peak RSS.
//! - [`peak_rss`]: `VmHWM` from `/proc/self/status`.
//! - [`rank_metrics`]: score differences, Spearman's ρ with tied ranks, top-k agreement.
//! - [`report`]: the comparison per mode, as JSON or a Markdown table.

pub mod child_process;
pub mod data;
pub mod mode_run;
pub mod model_choice;
pub mod peak_rss;
pub use rerank_engine::rank_metrics;
pub mod report;

use std::path::PathBuf;

pub use child_process::ChildCommand;
pub use data::{EvalQuery, EvalSet};
pub use mode_run::{score_in_mode, ModeRun};
pub use model_choice::EvalModel;
pub use report::{EvalReport, ModeRow};

use rerank_engine::{EngineError, Precision};

/// Failures of the accuracy report.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    ReadData {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{data}, line {line}: {message}")]
    BadData {
        /// The file (or the built-in set's name).
        data: String,
        line: usize,
        message: String,
    },
    #[error("{0}: no queries")]
    NoQueries(String),
    #[error("mode {mode}: {message}")]
    Child { mode: String, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// The executable run once per mode: this binary (`/proc/self/exe` on Linux).
    pub program: PathBuf,
    pub model: EvalModel,
    /// JSON lines, or `None` for the built-in set.
    pub data: Option<PathBuf>,
    /// Modes to report; f32 (`none`) is always run, first, as the reference.
    pub modes: Vec<Precision>,
    pub max_batch_tokens: usize,
}

/// Runs every mode in its own process and compares each with f32.
pub fn run(settings: &EvalSettings) -> Result<EvalReport, EvalError> {
    // Bad data should fail in a second, not after a model build and a child process.
    let set = EvalSet::load(settings.data.as_deref())?;
    let model = settings.model.resolve()?;
    let child = ChildCommand {
        program: settings.program.clone(),
        model_dir: model.dir.clone(),
        data: settings.data.clone(),
        max_batch_tokens: settings.max_batch_tokens,
    };
    let run_mode = |mode: Precision| {
        tracing::info!(
            mode = mode.name(),
            pairs = set.pair_count(),
            "eval: scoring in a child process"
        );
        child.run(mode)
    };
    let reference = run_mode(Precision::F32)?;
    let mut runs = vec![reference.clone()];
    let mut done = vec![Precision::F32];
    for &mode in &settings.modes {
        if !done.contains(&mode) {
            runs.push(run_mode(mode)?);
            done.push(mode);
        }
    }
    EvalReport::build(&model.label, &set, &reference, &runs)
}
