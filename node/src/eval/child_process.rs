//! The parent's side of a mode's run: re-execute this binary as
//! `eval --single-mode MODE --model DIR [--data FILE] --max-batch-tokens N` and read the
//! [`ModeRun`] it prints.
//!
//! The modes run one after another, never side by side: they would share the cores and every
//! mode's pairs/s would measure the others too.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::mode_run::ModeRun;
use super::EvalError;
use rerank_engine::Precision;

/// How to start a mode's child process.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    /// The `rerank-node` executable: this very build (`/proc/self/exe` on Linux).
    pub program: PathBuf,
    /// A local model directory (hub models are resolved by the parent first).
    pub model_dir: PathBuf,
    /// The data file, or `None` for the built-in set.
    pub data: Option<PathBuf>,
    pub max_batch_tokens: usize,
}

impl ChildCommand {
    /// Runs `precision` in a child and returns what it reports. The child's stderr (its logs,
    /// e.g. a fallback warning) is passed on after it exits, and quoted in the error if it fails.
    pub fn run(&self, precision: Precision) -> Result<ModeRun, EvalError> {
        let mode = precision.name();
        let mut command = Command::new(&self.program);
        command
            .arg("eval")
            .arg("--single-mode")
            .arg(mode)
            .arg("--model")
            .arg(&self.model_dir)
            .arg("--max-batch-tokens")
            .arg(self.max_batch_tokens.to_string())
            .stdin(Stdio::null());
        if let Some(data) = &self.data {
            command.arg("--data").arg(data);
        }
        let output = command.output().map_err(|e| EvalError::Child {
            mode: mode.into(),
            message: format!("cannot start {}: {e}", self.program.display()),
        })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(EvalError::Child {
                mode: mode.into(),
                message: format!("{}: {}", output.status, last_lines(&stderr, 5)),
            });
        }
        eprint!("{stderr}");
        let run: ModeRun =
            serde_json::from_slice(&output.stdout).map_err(|e| EvalError::Child {
                mode: mode.into(),
                message: format!("unreadable report ({e})"),
            })?;
        if run.requested != mode {
            return Err(EvalError::Child {
                mode: mode.into(),
                message: format!("reported mode {} instead", run.requested),
            });
        }
        Ok(run)
    }
}

/// The last `n` non-empty lines of a child's stderr, or a note that there were none.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "no output".into();
    }
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_the_last_non_empty_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("\n", 2), "no output");
    }
}
