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
    /// A cap on one input's tokens below the model's own limit (longer inputs are truncated or
    /// refused, as the request asks). Unset: the model's limit.
    pub max_input_length: Option<usize>,
    /// The task instruction decoder rerankers (Qwen3-Reranker) use when a request names none.
    /// Unset: the model card's. Encoders take no instruction.
    pub rerank_instruction: Option<String>,
    /// Windows a long document is scored by when a request does not say
    /// (`max_chunks_per_doc`); 1 keeps truncation.
    pub max_chunks_per_doc: usize,
    /// The most windows per document a request may ask for (400 beyond): bounds the
    /// tokenization and memory one document can cost before token admission sees it.
    pub max_chunks_per_doc_limit: usize,
    /// Tokens consecutive windows share when a request does not say (`chunk_overlap`). Unset:
    /// one eighth of the window.
    pub chunk_overlap_tokens: Option<usize>,
    /// Most documents accepted in one request.
    pub max_client_batch_size: usize,
    /// Largest request body accepted, in bytes.
    pub payload_limit: usize,
    /// Time a client has to send a request's head, and then its whole body (408 beyond).
    pub http_read_timeout_ms: u64,
    /// Open client connections per HTTP worker; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// How long an idle connection is kept open for its next request (0: one request per
    /// connection). A kept-alive connection whose next request head has not arrived after this
    /// plus `http_read_timeout_ms` is closed.
    pub http_keep_alive_ms: u64,
    /// After SIGTERM/SIGINT, the longest the node takes to exit: it stops taking work at once
    /// and lets in-flight requests finish within this time.
    pub shutdown_grace_ms: u64,
    /// After SIGTERM/SIGINT, how long the node keeps listening (answering 503 `draining`) before
    /// it stops accepting connections, so that coordinators and load balancers notice it leave.
    /// Part of the grace period.
    pub shutdown_notice_ms: u64,
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
            max_input_length: None,
            rerank_instruction: None,
            max_chunks_per_doc: 1,
            max_chunks_per_doc_limit: 64,
            chunk_overlap_tokens: None,
            max_client_batch_size: 1000,
            payload_limit: 2_000_000,
            http_read_timeout_ms: 10_000,
            max_connections: 2048,
            http_keep_alive_ms: 15_000,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            shutdown_notice_ms: DEFAULT_SHUTDOWN_NOTICE_MS,
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
    /// A numeric setting outside its range (`allowed` states the range and unit).
    #[error("configuration: invalid value {value:?} for {key}: {allowed}")]
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: String,
    },
}

/// Longest accepted timeout, deadline or lock lifetime in milliseconds (one hour): far beyond
/// any sensible value, and small enough that `Instant + Duration` can never overflow.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Default `SHUTDOWN_GRACE_MS`: below the 30 s after which Kubernetes follows SIGTERM with
/// SIGKILL (`terminationGracePeriodSeconds`), so the grace period ends first.
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 25_000;

/// Default `SHUTDOWN_NOTICE_MS`: two of the coordinator's default health-check and registry
/// intervals (1 s each), so a coordinator has seen the node leave before it stops listening.
const DEFAULT_SHUTDOWN_NOTICE_MS: u64 = 2_000;

/// Longest accepted cache lifetime in seconds (a year; the in-process cache refuses lifetimes
/// over a thousand years).
const MAX_TTL_SECONDS: u64 = 31_536_000;

/// One whole-number setting's check: its environment name, value, smallest and largest
/// allowed values, and the unit the message states.
type WholeRange = (&'static str, u64, u64, u64, &'static str);

/// Checks whole-number settings against their ranges, naming the first one out of range.
fn check_whole(ranges: &[WholeRange]) -> Result<(), ConfigError> {
    for &(key, value, min, max, unit) in ranges {
        if !(min..=max).contains(&value) {
            return Err(ConfigError::OutOfRange {
                key,
                value: value.to_string(),
                allowed: format!("a whole number from {min} to {max} ({unit})"),
            });
        }
    }
    Ok(())
}

/// A `usize` setting as a `u64` for [`check_whole`] (saturating, so huge values stay huge).
fn wide(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Checks a real-number setting: finite and within `min..=max` (in `unit`).
fn check_real(
    key: &'static str,
    value: f64,
    min: f64,
    max: f64,
    unit: &str,
) -> Result<(), ConfigError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value: format!("{value:?}"),
            allowed: format!("a finite number from {min} to {max} ({unit})"),
        })
    }
}

/// The settings both roles share that bound their HTTP servers: the listening port, the body
/// limit, the HTTP edge's bounds, and how a SIGTERM drains the server.
#[derive(Debug, Clone, Copy)]
struct HttpSettings {
    port: u16,
    payload_limit: usize,
    http_read_timeout_ms: u64,
    max_connections: usize,
    shutdown_grace_ms: u64,
    shutdown_notice_ms: u64,
}

/// The ranges of [`HttpSettings`]. The notice is part of the grace period, so it may not
/// exceed it.
fn http_ranges(s: HttpSettings) -> [WholeRange; 6] {
    #[rustfmt::skip]
    let ranges: [WholeRange; 6] = [
        ("PORT", s.port.into(), 1, 65_535, "a TCP port"),
        ("PAYLOAD_LIMIT", wide(s.payload_limit), 1, 1 << 30, "bytes"),
        ("HTTP_READ_TIMEOUT_MS", s.http_read_timeout_ms, 1, 600_000, "milliseconds"),
        ("MAX_CONNECTIONS", wide(s.max_connections), 1, 1_000_000, "per HTTP worker"),
        ("SHUTDOWN_GRACE_MS", s.shutdown_grace_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
        ("SHUTDOWN_NOTICE_MS", s.shutdown_notice_ms, 0, s.shutdown_grace_ms, "milliseconds, at most SHUTDOWN_GRACE_MS"),
    ];
    ranges
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
    "MAX_INPUT_LENGTH",
    "RERANK_INSTRUCTION",
    "MAX_CHUNKS_PER_DOC",
    "MAX_CHUNKS_PER_DOC_LIMIT",
    "CHUNK_OVERLAP_TOKENS",
    "MAX_CLIENT_BATCH_SIZE",
    "PAYLOAD_LIMIT",
    "HTTP_READ_TIMEOUT_MS",
    "MAX_CONNECTIONS",
    "HTTP_KEEP_ALIVE_MS",
    "SHUTDOWN_GRACE_MS",
    "SHUTDOWN_NOTICE_MS",
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

    /// Range-checks every numeric setting, so that nothing downstream (durations, semaphores,
    /// cache builders) can panic or overflow on a value that loaded. The one place to extend
    /// when a setting is added.
    fn validate(&self) -> Result<(), ConfigError> {
        check_whole(&http_ranges(HttpSettings {
            port: self.port,
            payload_limit: self.payload_limit,
            http_read_timeout_ms: self.http_read_timeout_ms,
            max_connections: self.max_connections,
            shutdown_grace_ms: self.shutdown_grace_ms,
            shutdown_notice_ms: self.shutdown_notice_ms,
        }))?;
        #[rustfmt::skip]
        let ranges: [WholeRange; 13] = [
            ("MAX_PARALLEL_REQUESTS", wide(self.max_parallel_requests), 1, 65_536, "requests"),
            // 0: refuse at once (429) whenever every slot is busy.
            ("MAX_QUEUED_REQUESTS", wide(self.max_queued_requests), 0, 1_000_000, "requests"),
            ("MAX_QUEUED_TOKENS", wide(self.max_queued_tokens), 1, 1 << 32, "tokens"),
            ("REQUEST_TIMEOUT_MS", self.request_timeout_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
            // 0 disables the in-process cache.
            ("LOCAL_CACHE_SIZE", self.local_cache_size, 0, 1 << 32, "entries"),
            ("LOCAL_CACHE_TTL_SECONDS", self.local_cache_ttl_seconds, 1, MAX_TTL_SECONDS, "seconds"),
            ("MICRO_BATCH_MAX_SIZE", wide(self.micro_batch_max_size), 1, 65_536, "requests"),
            ("MAX_BATCH_TOKENS", wide(self.max_batch_tokens), 1, 1 << 24, "tokens"),
            ("MAX_CLIENT_BATCH_SIZE", wide(self.max_client_batch_size), 1, 1_000_000, "documents"),
            // 0: one request per connection.
            ("HTTP_KEEP_ALIVE_MS", self.http_keep_alive_ms, 0, 600_000, "milliseconds"),
            ("REDIS_TTL_SECONDS", self.redis_ttl_seconds, 1, MAX_TTL_SECONDS, "seconds"),
            ("REDIS_LOCK_TTL_MS", self.redis_lock_ttl_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
            ("REDIS_TIMEOUT_MS", self.redis_timeout_ms, 1, 60_000, "milliseconds"),
        ];
        check_whole(&ranges)?;
        if let Some(length) = self.max_input_length {
            check_whole(&[("MAX_INPUT_LENGTH", wide(length), 1, 1 << 20, "tokens")])?;
        }
        #[rustfmt::skip]
        check_whole(&[
            ("MAX_CHUNKS_PER_DOC_LIMIT", wide(self.max_chunks_per_doc_limit), 1, 4096, "windows"),
            (
                "MAX_CHUNKS_PER_DOC",
                wide(self.max_chunks_per_doc),
                1,
                wide(self.max_chunks_per_doc_limit),
                "windows, at most MAX_CHUNKS_PER_DOC_LIMIT",
            ),
        ])?;
        if let Some(overlap) = self.chunk_overlap_tokens {
            check_whole(&[("CHUNK_OVERLAP_TOKENS", wide(overlap), 0, 1 << 20, "tokens")])?;
        }
        if let Some(instruction) = &self.rerank_instruction {
            let chars = instruction.chars().count() as u64;
            check_whole(&[("RERANK_INSTRUCTION", chars, 1, 4096, "characters")])?;
        }
        check_real(
            "MICRO_BATCH_WINDOW_MS",
            self.micro_batch_window_ms,
            0.0,
            10_000.0,
            "milliseconds",
        )
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
    /// `name:port`: every address `name` resolves to (A and AAAA) is a node at that port,
    /// re-resolved every `coordinator_nodes_dns_interval_ms` (a compose service scaled to N, a
    /// Kubernetes headless Service). Empty: no DNS membership.
    pub coordinator_nodes_dns: String,
    /// How often `coordinator_nodes_dns` is resolved again.
    pub coordinator_nodes_dns_interval_ms: u64,
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
    /// After SIGTERM/SIGINT, the longest the coordinator takes to exit: its `/health` answers
    /// 503 `draining` at once, and in-flight requests finish within this time.
    pub shutdown_grace_ms: u64,
    /// After SIGTERM/SIGINT, how long the coordinator keeps serving (its `/health` saying
    /// `draining`) before it stops accepting connections, so load balancers notice it leave.
    pub shutdown_notice_ms: u64,
    pub otel_exporter_otlp_endpoint: Option<String>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            coordinator_nodes: String::new(),
            coordinator_nodes_dns: String::new(),
            coordinator_nodes_dns_interval_ms: 5_000,
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
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            shutdown_notice_ms: DEFAULT_SHUTDOWN_NOTICE_MS,
            otel_exporter_otlp_endpoint: None,
        }
    }
}

/// The environment variable names a coordinator reads.
pub const COORDINATOR_ENV_KEYS: &[&str] = &[
    "HOST",
    "PORT",
    "COORDINATOR_NODES",
    "COORDINATOR_NODES_DNS",
    "COORDINATOR_NODES_DNS_INTERVAL_MS",
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
    "SHUTDOWN_GRACE_MS",
    "SHUTDOWN_NOTICE_MS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

impl CoordinatorConfig {
    /// Loads settings from `file` and the variables of `env` named in [`COORDINATOR_ENV_KEYS`].
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let settings: Self = load_layered(file, env, COORDINATOR_ENV_KEYS)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Range-checks every numeric setting (see [`NodeConfig`]'s `validate`).
    fn validate(&self) -> Result<(), ConfigError> {
        check_whole(&http_ranges(HttpSettings {
            port: self.port,
            payload_limit: self.payload_limit,
            http_read_timeout_ms: self.http_read_timeout_ms,
            max_connections: self.max_connections,
            shutdown_grace_ms: self.shutdown_grace_ms,
            shutdown_notice_ms: self.shutdown_notice_ms,
        }))?;
        #[rustfmt::skip]
        let ranges: [WholeRange; 7] = [
            ("VIRTUAL_NODES", wide(self.virtual_nodes), 1, 10_000, "ring points per node"),
            ("COORDINATOR_NODES_DNS_INTERVAL_MS", self.coordinator_nodes_dns_interval_ms, 100, MAX_TIMEOUT_MS, "milliseconds"),
            ("HEALTH_CHECK_INTERVAL_MS", self.health_check_interval_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
            ("REQUEST_TIMEOUT_MS", self.request_timeout_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
            ("TOTAL_TIMEOUT_MS", self.total_timeout_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
            ("MAX_ATTEMPTS", wide(self.max_attempts), 1, 100, "attempts"),
            ("DRAIN_TIMEOUT_MS", self.drain_timeout_ms, 1, MAX_TIMEOUT_MS, "milliseconds"),
        ];
        check_whole(&ranges)?;
        self.dns_nodes()?;
        // Above 0, not at it: ε = 0 would allow no node any load over the mean.
        if self.load_bound_epsilon <= 0.0 {
            return Err(ConfigError::Invalid {
                key: "LOAD_BOUND_EPSILON",
                value: format!("{:?}", self.load_bound_epsilon),
                allowed: "a number above 0 and at most 100 (0.25 lets a node carry 25% over \
                          the mean)",
            });
        }
        check_real(
            "LOAD_BOUND_EPSILON",
            self.load_bound_epsilon,
            0.0,
            100.0,
            "over the mean load",
        )
    }

    /// Loads from the process environment and `CONFIG_FILE` (or `configs/coordinator.toml`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load(
            config_file(&env, "configs/coordinator.toml").as_deref(),
            &env,
        )
    }

    /// `COORDINATOR_NODES_DNS` as (name, port); `None` when unset.
    pub fn dns_nodes(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let target = self.coordinator_nodes_dns.trim();
        if target.is_empty() {
            return Ok(None);
        }
        let invalid = || ConfigError::Invalid {
            key: "COORDINATOR_NODES_DNS",
            value: target.to_string(),
            allowed: "name:port, e.g. rerank-node:8000 (a name, not a URL; port 1 to 65535)",
        };
        let (name, port) = target.rsplit_once(':').ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let bare_colon = name.contains(':') && !target.starts_with('[');
        if port == 0 || name.is_empty() || name.contains('/') || bare_colon {
            return Err(invalid());
        }
        Ok(Some((name.to_string(), port)))
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

    /// The message of loading `pairs` as a node (`coordinator`: as a coordinator), which must fail.
    fn refusal(coordinator: bool, pairs: &[(&str, &str)]) -> String {
        let loaded = if coordinator {
            CoordinatorConfig::load(None, &env(pairs)).map(|_| ())
        } else {
            NodeConfig::load(None, &env(pairs)).map(|_| ())
        };
        match loaded {
            Ok(()) => panic!("{pairs:?} loaded"),
            Err(e) => e.to_string(),
        }
    }

    /// Zero where zero makes no sense, non-finite or negative windows and absurdly large values
    /// stop start-up, with the key (as its environment name) and the allowed range in the
    /// message. `MICRO_BATCH_WINDOW_MS=1e300` panicked at start-up before (`from_secs_f64`);
    /// zero lock lifetimes and Redis timeouts were accepted.
    #[test]
    fn every_numeric_setting_is_range_checked() {
        let node_cases: &[(&str, &str)] = &[
            // zero
            ("REDIS_LOCK_TTL_MS", "0"),
            ("REDIS_TIMEOUT_MS", "0"),
            ("REDIS_TTL_SECONDS", "0"),
            ("REQUEST_TIMEOUT_MS", "0"),
            ("HTTP_READ_TIMEOUT_MS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_QUEUED_TOKENS", "0"),
            ("MAX_PARALLEL_REQUESTS", "0"),
            ("MICRO_BATCH_MAX_SIZE", "0"),
            ("MAX_BATCH_TOKENS", "0"),
            ("MAX_CLIENT_BATCH_SIZE", "0"),
            ("PAYLOAD_LIMIT", "0"),
            ("LOCAL_CACHE_TTL_SECONDS", "0"),
            ("PORT", "0"),
            // non-finite, negative
            ("MICRO_BATCH_WINDOW_MS", "inf"),
            ("MICRO_BATCH_WINDOW_MS", "NaN"),
            ("MICRO_BATCH_WINDOW_MS", "-1"),
            // huge
            ("MICRO_BATCH_WINDOW_MS", "1e300"),
            ("MICRO_BATCH_WINDOW_MS", "10000.5"),
            ("REQUEST_TIMEOUT_MS", "18446744073709551615"),
            ("REDIS_LOCK_TTL_MS", "3600001"),
            ("REDIS_TIMEOUT_MS", "60001"),
            ("REDIS_TTL_SECONDS", "18446744073709551615"),
            ("LOCAL_CACHE_TTL_SECONDS", "18446744073709551615"),
            ("HTTP_READ_TIMEOUT_MS", "600001"),
            ("HTTP_KEEP_ALIVE_MS", "600001"),
            ("MAX_PARALLEL_REQUESTS", "18446744073709551615"),
            ("MAX_QUEUED_REQUESTS", "1000001"),
            ("MAX_QUEUED_TOKENS", "18446744073709551615"),
            ("MAX_BATCH_TOKENS", "16777217"),
            ("MAX_INPUT_LENGTH", "0"),
            ("MAX_CHUNKS_PER_DOC", "0"),
            ("MAX_CHUNKS_PER_DOC", "65"),
            ("MAX_CHUNKS_PER_DOC_LIMIT", "0"),
            ("MAX_CHUNKS_PER_DOC_LIMIT", "4097"),
            ("CHUNK_OVERLAP_TOKENS", "1048577"),
            ("MAX_INPUT_LENGTH", "1048577"),
            ("MAX_CONNECTIONS", "1000001"),
            ("PAYLOAD_LIMIT", "1073741825"),
            ("LOCAL_CACHE_SIZE", "18446744073709551615"),
            ("SHUTDOWN_GRACE_MS", "0"),
            ("SHUTDOWN_GRACE_MS", "3600001"),
            // The notice is part of the grace period (25 s by default).
            ("SHUTDOWN_NOTICE_MS", "25001"),
        ];
        let long_instruction = "x".repeat(4097);
        let node_cases: Vec<(&str, &str)> = node_cases
            .iter()
            .copied()
            .chain([("RERANK_INSTRUCTION", long_instruction.as_str())])
            .collect();
        for &(key, value) in &node_cases {
            let message = refusal(false, &[(key, value)]);
            assert!(
                message.contains(key) && message.contains(" from "),
                "{key}={value}: {message}"
            );
        }
        let message = refusal(false, &[("MICRO_BATCH_WINDOW_MS", "1e300")]);
        assert!(
            message.contains("1e300") && message.contains("from 0 to 10000"),
            "{message}"
        );
        let message = refusal(false, &[("REDIS_LOCK_TTL_MS", "0")]);
        assert!(message.contains("from 1 to 3600000"), "{message}");

        let coordinator_cases: &[(&str, &str)] = &[
            ("REQUEST_TIMEOUT_MS", "0"),
            ("TOTAL_TIMEOUT_MS", "0"),
            ("HEALTH_CHECK_INTERVAL_MS", "0"),
            ("DRAIN_TIMEOUT_MS", "0"),
            ("HTTP_READ_TIMEOUT_MS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_ATTEMPTS", "0"),
            ("VIRTUAL_NODES", "0"),
            ("PAYLOAD_LIMIT", "0"),
            ("PORT", "0"),
            ("LOAD_BOUND_EPSILON", "0"),
            ("LOAD_BOUND_EPSILON", "NaN"),
            ("LOAD_BOUND_EPSILON", "inf"),
            ("LOAD_BOUND_EPSILON", "1e300"),
            ("TOTAL_TIMEOUT_MS", "18446744073709551615"),
            ("REQUEST_TIMEOUT_MS", "3600001"),
            ("MAX_ATTEMPTS", "101"),
            ("VIRTUAL_NODES", "10001"),
            ("COORDINATOR_NODES_DNS_INTERVAL_MS", "99"),
            ("COORDINATOR_NODES_DNS_INTERVAL_MS", "3600001"),
            ("SHUTDOWN_GRACE_MS", "0"),
            ("SHUTDOWN_NOTICE_MS", "25001"),
        ];
        for &(key, value) in coordinator_cases {
            let message = refusal(true, &[(key, value)]);
            assert!(
                message.contains(key),
                "coordinator {key}={value}: {message}"
            );
        }
    }

    /// The edges of every range load, and what the binaries derive from the largest values
    /// (durations, deadlines) cannot panic or overflow.
    #[test]
    fn range_edges_load_and_are_safe_to_use() {
        let largest = NodeConfig::load(
            None,
            &env(&[
                ("MICRO_BATCH_WINDOW_MS", "10000"),
                ("REQUEST_TIMEOUT_MS", "3600000"),
                ("REDIS_LOCK_TTL_MS", "3600000"),
                ("REDIS_TIMEOUT_MS", "60000"),
                ("REDIS_TTL_SECONDS", "31536000"),
                ("LOCAL_CACHE_TTL_SECONDS", "31536000"),
                ("HTTP_READ_TIMEOUT_MS", "600000"),
                ("HTTP_KEEP_ALIVE_MS", "600000"),
                ("MAX_QUEUED_TOKENS", "4294967296"),
                ("MAX_CONNECTIONS", "1000000"),
            ]),
        )
        .expect("the largest values load");
        let now = std::time::Instant::now();
        let window = std::time::Duration::from_secs_f64(largest.micro_batch_window_ms / 1000.0);
        assert_eq!(window, std::time::Duration::from_secs(10));
        for ms in [
            largest.request_timeout_ms,
            largest.redis_lock_ttl_ms,
            largest.http_read_timeout_ms + largest.http_keep_alive_ms,
        ] {
            assert!(now
                .checked_add(std::time::Duration::from_millis(ms))
                .is_some());
        }
        let smallest = NodeConfig::load(
            None,
            &env(&[
                ("MICRO_BATCH_WINDOW_MS", "0"),
                ("MAX_QUEUED_REQUESTS", "0"),
                ("LOCAL_CACHE_SIZE", "0"),
                ("HTTP_KEEP_ALIVE_MS", "0"),
                ("REDIS_LOCK_TTL_MS", "1"),
                ("REDIS_TIMEOUT_MS", "1"),
                ("PORT", "1"),
            ]),
        );
        assert!(smallest.is_ok(), "{:?}", smallest.err());
        let coordinator = CoordinatorConfig::load(
            None,
            &env(&[
                ("LOAD_BOUND_EPSILON", "100"),
                ("TOTAL_TIMEOUT_MS", "3600000"),
            ]),
        );
        assert!(coordinator.is_ok(), "{:?}", coordinator.err());
    }

    /// `COORDINATOR_NODES_DNS` is `name:port` (an IPv6 literal in brackets); URLs, a missing
    /// or zero port are refused at start-up with the expected form in the message.
    #[test]
    fn dns_membership_is_a_name_and_a_port() {
        let dns = |value: &str| {
            CoordinatorConfig::load(None, &env(&[("COORDINATOR_NODES_DNS", value)]))
                .map(|c| c.dns_nodes().expect("validated at load"))
        };
        assert_eq!(
            dns("rerank-node:8000").expect("loads"),
            Some(("rerank-node".to_string(), 8000))
        );
        assert_eq!(
            dns("[::1]:8000").expect("loads"),
            Some(("::1".to_string(), 8000))
        );
        assert_eq!(
            CoordinatorConfig::load(None, &HashMap::new())
                .expect("defaults")
                .dns_nodes()
                .expect("valid"),
            None
        );
        for bad in [
            "rerank-node",
            "rerank-node:0",
            "http://rerank-node:8000",
            "a:b:8000",
            ":8000",
        ] {
            let err = dns(bad).expect_err(bad).to_string();
            assert!(
                err.contains("COORDINATOR_NODES_DNS") && err.contains("name:port"),
                "{bad}: {err}"
            );
        }
        let notice = CoordinatorConfig::load(
            None,
            &env(&[
                ("SHUTDOWN_GRACE_MS", "1000"),
                ("SHUTDOWN_NOTICE_MS", "1000"),
            ]),
        );
        assert!(notice.is_ok(), "the notice may take the whole grace period");
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
