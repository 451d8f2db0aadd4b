//! Node settings: built-in defaults → a TOML file → environment variables.
//!
//! The environment keeps the names of the original guide (`PORT`, `REDIS_ENABLED`,
//! `MICRO_BATCH_WINDOW_MS`, …): each is the upper-case form of a field below. Only those names
//! are read, so unrelated variables in a shell never leak into the settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Parses one of a fixed set of names, with an error that lists them (config errors must say
/// what is allowed, not only what was wrong).
fn parse_choice<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let wanted = value.trim().to_ascii_lowercase();
    choices
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!("{value:?} is not one of: {}", names.join(", "))
        })
}

/// Which device runs the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum DeviceChoice {
    /// CUDA when the binary was built with it and a GPU is present, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        parse_choice(
            &value,
            &[
                ("auto", Self::Auto),
                ("cpu", Self::Cpu),
                ("cuda", Self::Cuda),
            ],
        )
    }
}

/// Weight precision asked for with `QUANTIZATION`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Quantization {
    #[default]
    None,
    Bf16,
    F16,
    Int8,
}

impl TryFrom<String> for Quantization {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        parse_choice(
            &value,
            &[
                ("none", Self::None),
                ("bf16", Self::Bf16),
                ("f16", Self::F16),
                ("int8", Self::Int8),
            ],
        )
    }
}

/// Which kernels run the encoder's layers on a CPU (`CPU_KERNELS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum CpuKernels {
    /// oneDNN over packed sequences where the build has it (feature `onednn`), else candle.
    #[default]
    Onednn,
    /// candle's tensors over padded batches.
    Candle,
}

impl TryFrom<String> for CpuKernels {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        parse_choice(
            &value,
            &[("onednn", Self::Onednn), ("candle", Self::Candle)],
        )
    }
}

/// Every setting of a node. Field names are the lower-case environment names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub host: String,
    pub port: u16,
    /// Hub id (or local directory) of the model; `model_path` wins when both are set.
    pub model_id: Option<String>,
    /// Local checkpoint directory.
    pub model_path: Option<PathBuf>,
    pub device: DeviceChoice,
    pub quantization: Quantization,
    pub cpu_kernels: CpuKernels,
    pub enable_mixed_precision: bool,
    /// Requests admitted at once per node.
    pub max_parallel_requests: usize,
    /// Requests waiting for admission beyond which a node answers 429.
    pub max_queued_requests: usize,
    /// Tokens admitted and not yet scored (running and waiting requests together) beyond which
    /// a node answers 429; a single request over the whole budget gets 413.
    pub max_queued_tokens: usize,
    /// Deadline of one request on the node: past it, its remaining forward passes are dropped
    /// and the client gets 503.
    pub request_timeout_ms: u64,
    /// Entries of the in-process score cache (0 disables it).
    pub local_cache_size: u64,
    /// Lifetime of an in-process cache entry, in seconds.
    pub local_cache_ttl_seconds: u64,
    pub micro_batch_enabled: bool,
    pub micro_batch_window_ms: f64,
    pub micro_batch_max_size: usize,
    /// Token budget of one forward pass (rows × longest row).
    pub max_batch_tokens: usize,
    /// Most documents accepted in one request.
    pub max_client_batch_size: usize,
    /// Largest request body accepted, in bytes.
    pub payload_limit: usize,
    /// Time a client has to send a request's head, and then its whole body (408 beyond).
    pub http_read_timeout_ms: u64,
    /// Open client connections per HTTP worker; further connections wait in the listen backlog.
    pub max_connections: usize,
    pub redis_enabled: bool,
    pub redis_url: String,
    pub redis_ttl_seconds: u64,
    /// Lifetime of a pair lock: the longest a node waits for a pair another node computes.
    pub redis_lock_ttl_ms: u64,
    /// Bound on every Redis call; beyond it the node serves without Redis.
    pub redis_timeout_ms: u64,
    /// Identity in the cluster; `hostname:port` when unset.
    pub node_id: Option<String>,
    /// The base URL other processes reach this node at (registered in Redis for coordinators);
    /// `http://HOST:PORT` when unset.
    pub node_url: Option<String>,
    /// Bearer token that enables the admin endpoints.
    pub admin_token: Option<String>,
    /// Shared secret that signs this node's Redis registration; coordinators accept only
    /// registrations signed with their own `CLUSTER_SECRET`. Unset: the node does not register.
    pub cluster_secret: Option<String>,
    pub otel_exporter_otlp_endpoint: Option<String>,
}

/// The bundled default model, fetched by `scripts/fetch_default_model.sh`.
pub const DEFAULT_MODEL_PATH: &str = "models/all-MiniLM-L6-v2";

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            model_id: None,
            model_path: None,
            device: DeviceChoice::Auto,
            quantization: Quantization::None,
            cpu_kernels: CpuKernels::Onednn,
            enable_mixed_precision: false,
            max_parallel_requests: 8,
            max_queued_requests: 64,
            max_queued_tokens: 524_288,
            request_timeout_ms: 60_000,
            local_cache_size: 100_000,
            local_cache_ttl_seconds: 3600,
            micro_batch_enabled: false,
            micro_batch_window_ms: 10.0,
            micro_batch_max_size: 32,
            max_batch_tokens: 16384,
            max_client_batch_size: 1000,
            payload_limit: 2_000_000,
            http_read_timeout_ms: 10_000,
            max_connections: 2048,
            redis_enabled: false,
            redis_url: "redis://localhost:6379/0".into(),
            redis_ttl_seconds: 600,
            redis_lock_ttl_ms: 30_000,
            redis_timeout_ms: 250,
            node_id: None,
            node_url: None,
            admin_token: None,
            cluster_secret: None,
            otel_exporter_otlp_endpoint: None,
        }
    }
}

/// Why settings could not be loaded. Messages name the key, the value and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Source(#[from] config::ConfigError),
    #[error("configuration: invalid value {value:?} for {key}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

/// The environment variable names a node reads.
pub const NODE_ENV_KEYS: &[&str] = &[
    "HOST",
    "PORT",
    "MODEL_ID",
    "MODEL_PATH",
    "DEVICE",
    "QUANTIZATION",
    "CPU_KERNELS",
    "ENABLE_MIXED_PRECISION",
    "MAX_PARALLEL_REQUESTS",
    "MAX_QUEUED_REQUESTS",
    "MAX_QUEUED_TOKENS",
    "REQUEST_TIMEOUT_MS",
    "LOCAL_CACHE_SIZE",
    "LOCAL_CACHE_TTL_SECONDS",
    "MICRO_BATCH_ENABLED",
    "MICRO_BATCH_WINDOW_MS",
    "MICRO_BATCH_MAX_SIZE",
    "MAX_BATCH_TOKENS",
    "MAX_CLIENT_BATCH_SIZE",
    "PAYLOAD_LIMIT",
    "HTTP_READ_TIMEOUT_MS",
    "MAX_CONNECTIONS",
    "REDIS_ENABLED",
    "REDIS_URL",
    "REDIS_TTL_SECONDS",
    "REDIS_LOCK_TTL_MS",
    "REDIS_TIMEOUT_MS",
    "NODE_ID",
    "NODE_URL",
    "ADMIN_TOKEN",
    "CLUSTER_SECRET",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Redis key prefix under which nodes register themselves (`rr:nodes:{node_id}` → base URL).
pub const NODE_REGISTRY_PREFIX: &str = "rr:nodes:";

/// Lifetime of a node's registration; nodes refresh it every second.
pub const NODE_REGISTRY_TTL_SECONDS: u64 = 5;

impl NodeConfig {
    /// Loads settings from `file` (when given) and the variables of `env` named in
    /// [`NODE_ENV_KEYS`]; empty variables count as unset.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let settings: NodeConfig = load_layered(file, env, NODE_ENV_KEYS)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads from the process environment and `CONFIG_FILE` (or `configs/node.toml` when present).
    pub fn from_env() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load(config_file(&env, "configs/node.toml").as_deref(), &env)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    key,
                    value: v.to_string(),
                    allowed: "a whole number of at least 1",
                })
            } else {
                Ok(())
            }
        };
        positive("MAX_PARALLEL_REQUESTS", self.max_parallel_requests)?;
        positive("MICRO_BATCH_MAX_SIZE", self.micro_batch_max_size)?;
        positive("MAX_BATCH_TOKENS", self.max_batch_tokens)?;
        positive("MAX_CLIENT_BATCH_SIZE", self.max_client_batch_size)?;
        positive("PAYLOAD_LIMIT", self.payload_limit)?;
        if !(self.micro_batch_window_ms.is_finite() && self.micro_batch_window_ms >= 0.0) {
            return Err(ConfigError::Invalid {
                key: "MICRO_BATCH_WINDOW_MS",
                value: self.micro_batch_window_ms.to_string(),
                allowed: "a number of milliseconds, 0 or more",
            });
        }
        Ok(())
    }

    /// The model to load: `MODEL_PATH`, else `MODEL_ID`, else the bundled MiniLM.
    pub fn model_source(&self) -> ModelChoice {
        match (&self.model_path, &self.model_id) {
            (Some(path), _) => ModelChoice::Path(path.clone()),
            (None, Some(id)) => ModelChoice::HubId(id.clone()),
            (None, None) => ModelChoice::Path(PathBuf::from(DEFAULT_MODEL_PATH)),
        }
    }

    /// A copy safe to print: secrets masked.
    pub fn masked(&self) -> Self {
        let mut copy = self.clone();
        mask_secrets(
            &mut copy.admin_token,
            &mut copy.cluster_secret,
            &mut copy.redis_url,
        );
        copy
    }
}

/// `CONFIG_FILE`, else `default` when that file exists.
fn config_file(env: &HashMap<String, String>, default: &str) -> Option<PathBuf> {
    env.get("CONFIG_FILE")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(default)).filter(|p| p.is_file()))
}

/// Defaults of `T` → `file` → the variables of `env` named in `keys` (empty ones count as unset).
fn load_layered<T>(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    keys: &[&str],
) -> Result<T, ConfigError>
where
    T: Default + Serialize + for<'de> Deserialize<'de>,
{
    let mut builder =
        config::Config::builder().add_source(config::Config::try_from(&T::default())?);
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    let known: HashMap<String, String> = keys
        .iter()
        .filter_map(|k| {
            env.get(*k)
                .filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    builder = builder.add_source(
        config::Environment::default()
            .source(Some(known))
            .try_parsing(true),
    );
    Ok(builder.build()?.try_deserialize()?)
}

/// How the coordinator picks a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Routing {
    /// Same query → same node (warm caches), with bounded load.
    #[default]
    ConsistentHash,
    /// Nodes in turn (the baseline to measure affinity against).
    RoundRobin,
}

impl TryFrom<String> for Routing {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        parse_choice(
            &value,
            &[
                ("consistent_hash", Self::ConsistentHash),
                ("round_robin", Self::RoundRobin),
            ],
        )
    }
}

/// Every setting of a coordinator. Field names are the lower-case environment names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub host: String,
    pub port: u16,
    /// Comma-separated node base URLs (`http://127.0.0.1:8001,…`).
    pub coordinator_nodes: String,
    pub routing: Routing,
    /// ε of bounded-load consistent hashing.
    pub load_bound_epsilon: f64,
    /// Ring points per node.
    pub virtual_nodes: usize,
    pub health_check_interval_ms: u64,
    /// Bound on one attempt at one node.
    pub request_timeout_ms: u64,
    /// Bound on a whole client request across retries.
    pub total_timeout_ms: u64,
    /// Nodes tried per request.
    pub max_attempts: usize,
    /// How long a drain waits for in-flight requests.
    pub drain_timeout_ms: u64,
    pub admin_token: Option<String>,
    /// Watch Redis for nodes that register themselves.
    pub redis_enabled: bool,
    pub redis_url: String,
    /// Shared secret that node registrations in Redis must be signed with; unset: registrations
    /// in Redis are ignored (static and admin-added nodes only).
    pub cluster_secret: Option<String>,
    pub payload_limit: usize,
    /// Time a client has to send a request's head, and then its whole body (408 beyond).
    pub http_read_timeout_ms: u64,
    /// Open client connections per HTTP worker.
    pub max_connections: usize,
    pub otel_exporter_otlp_endpoint: Option<String>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            coordinator_nodes: String::new(),
            routing: Routing::ConsistentHash,
            load_bound_epsilon: 0.25,
            virtual_nodes: 160,
            health_check_interval_ms: 1000,
            request_timeout_ms: 30_000,
            total_timeout_ms: 60_000,
            max_attempts: 3,
            drain_timeout_ms: 30_000,
            admin_token: None,
            redis_enabled: false,
            redis_url: "redis://localhost:6379/0".into(),
            cluster_secret: None,
            payload_limit: 2_000_000,
            http_read_timeout_ms: 10_000,
            max_connections: 2048,
            otel_exporter_otlp_endpoint: None,
        }
    }
}

/// The environment variable names a coordinator reads.
pub const COORDINATOR_ENV_KEYS: &[&str] = &[
    "HOST",
    "PORT",
    "COORDINATOR_NODES",
    "ROUTING",
    "LOAD_BOUND_EPSILON",
    "VIRTUAL_NODES",
    "HEALTH_CHECK_INTERVAL_MS",
    "REQUEST_TIMEOUT_MS",
    "TOTAL_TIMEOUT_MS",
    "MAX_ATTEMPTS",
    "DRAIN_TIMEOUT_MS",
    "ADMIN_TOKEN",
    "REDIS_ENABLED",
    "REDIS_URL",
    "CLUSTER_SECRET",
    "PAYLOAD_LIMIT",
    "HTTP_READ_TIMEOUT_MS",
    "MAX_CONNECTIONS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

impl CoordinatorConfig {
    /// Loads settings from `file` and the variables of `env` named in [`COORDINATOR_ENV_KEYS`].
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let settings: Self = load_layered(file, env, COORDINATOR_ENV_KEYS)?;
        if !(settings.load_bound_epsilon.is_finite() && settings.load_bound_epsilon > 0.0) {
            return Err(ConfigError::Invalid {
                key: "LOAD_BOUND_EPSILON",
                value: settings.load_bound_epsilon.to_string(),
                allowed: "a number above 0 (0.25 lets a node carry 25% over the mean)",
            });
        }
        if settings.max_attempts == 0 || settings.virtual_nodes == 0 {
            return Err(ConfigError::Invalid {
                key: "MAX_ATTEMPTS/VIRTUAL_NODES",
                value: format!("{}/{}", settings.max_attempts, settings.virtual_nodes),
                allowed: "whole numbers of at least 1",
            });
        }
        Ok(settings)
    }

    /// Loads from the process environment and `CONFIG_FILE` (or `configs/coordinator.toml`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load(
            config_file(&env, "configs/coordinator.toml").as_deref(),
            &env,
        )
    }

    /// The static node URLs, trimmed, without trailing slashes.
    pub fn static_nodes(&self) -> Vec<String> {
        self.coordinator_nodes
            .split(',')
            .map(|n| n.trim().trim_end_matches('/').to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// A copy safe to print: secrets masked.
    pub fn masked(&self) -> Self {
        let mut copy = self.clone();
        mask_secrets(
            &mut copy.admin_token,
            &mut copy.cluster_secret,
            &mut copy.redis_url,
        );
        copy
    }
}

/// Where the configured model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    Path(PathBuf),
    HubId(String),
}

/// Masks the secrets both configurations carry: the admin token and a Redis URL password.
fn mask_secrets(
    admin_token: &mut Option<String>,
    cluster_secret: &mut Option<String>,
    redis_url: &mut String,
) {
    for secret in [admin_token, cluster_secret] {
        if secret.is_some() {
            *secret = Some("***".into());
        }
    }
    *redis_url = mask_url_password(redis_url);
}

fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_guide() {
        let c = NodeConfig::load(None, &HashMap::new()).expect("defaults load");
        assert_eq!(c.port, 8000);
        assert!(!c.micro_batch_enabled);
        assert_eq!(c.micro_batch_window_ms, 10.0);
        assert_eq!(c.micro_batch_max_size, 32);
        assert_eq!(c.redis_ttl_seconds, 600);
        assert_eq!(c.max_client_batch_size, 1000);
    }

    #[test]
    fn guide_environment_names_override_defaults() {
        let c = NodeConfig::load(
            None,
            &env(&[
                ("PORT", "8001"),
                ("REDIS_ENABLED", "true"),
                ("MICRO_BATCH_WINDOW_MS", "2.5"),
                ("QUANTIZATION", "int8"),
                ("MODEL_ID", "BAAI/bge-reranker-base"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.port, 8001);
        assert!(c.redis_enabled);
        assert_eq!(c.micro_batch_window_ms, 2.5);
        assert_eq!(c.quantization, Quantization::Int8);
        assert_eq!(
            c.model_source(),
            ModelChoice::HubId("BAAI/bge-reranker-base".into())
        );
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err = NodeConfig::load(None, &env(&[("QUANTIZATION", "int4")])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("int4") && message.contains("quantization"),
            "{message}"
        );
        assert!(
            message.contains("none, bf16, f16, int8"),
            "the allowed values: {message}"
        );
        let err = NodeConfig::load(None, &env(&[("CPU_KERNELS", "cuda")])).unwrap_err();
        assert!(
            err.to_string().contains("onednn, candle"),
            "the allowed kernels: {err}"
        );
        let ok = NodeConfig::load(None, &env(&[("CPU_KERNELS", "candle")])).expect("candle");
        assert_eq!(ok.cpu_kernels, CpuKernels::Candle);
        let err = CoordinatorConfig::load(None, &env(&[("ROUTING", "random")])).unwrap_err();
        assert!(
            err.to_string().contains("consistent_hash, round_robin"),
            "{err}"
        );
        let err = NodeConfig::load(None, &env(&[("MAX_PARALLEL_REQUESTS", "0")])).unwrap_err();
        assert!(err.to_string().contains("MAX_PARALLEL_REQUESTS"), "{err}");
        let err = NodeConfig::load(None, &env(&[("PORT", "eighty")])).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn masked_hides_secrets() {
        let c = NodeConfig {
            admin_token: Some("s3cret".into()),
            redis_url: "redis://user:pw@host:6379/0".into(),
            ..NodeConfig::default()
        };
        let m = c.masked();
        assert_eq!(m.admin_token.as_deref(), Some("***"));
        assert_eq!(m.redis_url, "redis://user:***@host:6379/0");
    }
}

#[cfg(test)]
mod shipped_files {
    use super::*;

    /// Every TOML file shipped in `configs/` loads with the struct of its role.
    #[test]
    fn shipped_config_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut files = vec![dir.join("node.toml"), dir.join("coordinator.toml")];
        for entry in std::fs::read_dir(dir.join("cluster")).expect("configs/cluster") {
            files.push(entry.expect("entry").path());
        }
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let env = HashMap::new();
            let loaded = if name.starts_with("coordinator") {
                CoordinatorConfig::load(Some(&file), &env).map(|_| ())
            } else {
                NodeConfig::load(Some(&file), &env).map(|_| ())
            };
            assert!(loaded.is_ok(), "{}: {:?}", file.display(), loaded.err());
        }
    }

    /// The `# key = value` lines of a shipped file: their keys, and the lines uncommented
    /// (trailing comments dropped) written to a temporary file.
    fn documented(name: &str) -> (Vec<String>, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("shipped config");
        let mut keys = Vec::new();
        let mut uncommented = String::new();
        for line in text.lines() {
            let Some(setting) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((key, _)) = setting.split_once(" = ") else {
                continue;
            };
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(key.to_string());
                uncommented.push_str(setting.split(" #").next().unwrap_or(setting));
                uncommented.push('\n');
            }
        }
        let file = std::env::temp_dir().join(format!("{}-{name}", std::process::id()));
        std::fs::write(&file, uncommented).expect("write");
        (keys, file)
    }

    fn undocumented(fields: serde_json::Value, keys: &[String]) -> Vec<String> {
        fields
            .as_object()
            .expect("object")
            .keys()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect()
    }

    /// `configs/node.toml` and `configs/coordinator.toml` document every setting: their
    /// commented-out `# key = value` lines, uncommented, load, and name every field.
    #[test]
    fn shipped_files_document_every_setting() {
        let (keys, file) = documented("node.toml");
        let loaded = NodeConfig::load(Some(&file), &HashMap::new());
        let _ = std::fs::remove_file(&file);
        assert!(loaded.is_ok(), "uncommented node.toml: {:?}", loaded.err());
        let fields = serde_json::to_value(NodeConfig::default()).expect("serializes");
        let missing = undocumented(fields, &keys);
        assert!(missing.is_empty(), "not in configs/node.toml: {missing:?}");

        let (keys, file) = documented("coordinator.toml");
        let loaded = CoordinatorConfig::load(Some(&file), &HashMap::new());
        let _ = std::fs::remove_file(&file);
        assert!(
            loaded.is_ok(),
            "uncommented coordinator.toml: {:?}",
            loaded.err()
        );
        let fields = serde_json::to_value(CoordinatorConfig::default()).expect("serializes");
        let missing = undocumented(fields, &keys);
        assert!(
            missing.is_empty(),
            "not in configs/coordinator.toml: {missing:?}"
        );
    }
}
