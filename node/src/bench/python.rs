//! Runs one Python side of the benchmark (PyTorch's `scripts/bench_torch*.py`, the peers'
//! `scripts/bench_peers.py`) as a subprocess.
//!
//! Every side's script takes the same arguments (checkpoint, workload, threads, seconds, modes)
//! and prints one JSON line on stdout, its logs on stderr; one runner for all of them keeps the
//! protocol and the failure notes the same on every side.

use std::path::Path;
use std::process::Command;

use serde::de::DeserializeOwned;

/// Why a Python side produced no figures; its `Display` is the table's note.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The interpreter could not be started.
    #[error("cannot run {python}: {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    /// The script exited with an error (most often a package missing): its last stderr line.
    #[error("{last_line} (pip install -r scripts/requirements-dev.txt)")]
    Failed { last_line: String },
    /// The script's stdout was not the JSON line expected.
    #[error("unreadable output ({0})")]
    Unreadable(#[from] serde_json::Error),
}

/// One invocation of a side's script.
#[derive(Debug, Clone, Copy)]
pub struct ScriptRun<'a> {
    pub python: &'a str,
    pub script: &'a str,
    pub model: &'a Path,
    pub workload: &'a Path,
    pub threads: usize,
    pub seconds: f64,
    /// Comma-separated, in the script's own names.
    pub modes: &'a str,
}

impl ScriptRun<'_> {
    /// Runs the script to its end and parses its JSON line into `T`.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, ScriptError> {
        let output = Command::new(self.python)
            .arg(self.script)
            .arg("--model")
            .arg(self.model)
            .arg("--workload")
            .arg(self.workload)
            .arg("--threads")
            .arg(self.threads.to_string())
            .arg("--seconds")
            .arg(self.seconds.to_string())
            .arg("--modes")
            .arg(self.modes)
            .output()
            .map_err(|source| ScriptError::Spawn {
                python: self.python.to_string(),
                source,
            })?;
        if !output.status.success() {
            let err = String::from_utf8_lossy(&output.stderr);
            return Err(ScriptError::Failed {
                last_line: err.lines().last().unwrap_or("no output").to_string(),
            });
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}
