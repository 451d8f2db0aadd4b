//! Start-up: load the model, start its actor, serve HTTP.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, SyncArbiter};
use actix_web::{middleware::from_fn, web, App, HttpServer};
use candle_core::Device;
use rerank_shared::config::{CpuKernels, DeviceChoice, ModelChoice, NodeConfig, Quantization};
use rerank_shared::drain::{serve_until_drained, DrainTiming, Draining, StopRequests};
use rerank_shared::pair_key::ModelFingerprint;

use crate::actors::{
    BatcherActor, BatcherSettings, BatcherStats, ModelActor, NodeActor, NodeParts, NodeSettings,
};
use crate::api;
use crate::cache::{LocalScoreCache, SharedCacheSettings, SharedScoreCache};
use crate::metrics::NodeMetrics;
use crate::registration::{Registrar, RegistrationSettings};
use crate::state::NodeState;
use rerank_engine::{
    EngineError, Kernels, LoadOptions, ModelFiles, ModelSource, Precision, RerankBackend, Reranker,
};

/// Why a node could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    SharedCache(#[from] crate::cache::shared_tier::SharedCacheError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// Picks the device `choice` asks for: `cuda` is GPU 0 or an error; `auto` is GPU 0 in builds
/// with the `cuda` feature where a GPU answers, else the CPU (with a warning when a CUDA build
/// finds no GPU: candle's own `cuda_if_available` would fail start-up there instead).
pub fn select_device(choice: DeviceChoice) -> Result<Device, ServeError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| {
            ServeError::Device(format!(
                "DEVICE=cuda but CUDA is unavailable ({e}); build with --features cuda \
                 (scripts/build_cuda.sh) or set DEVICE=cpu"
            ))
        }),
        DeviceChoice::Auto if candle_core::utils::cuda_is_available() => Ok(Device::new_cuda(0)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "DEVICE=auto: no usable CUDA GPU; running on the CPU");
                Device::Cpu
            })),
        DeviceChoice::Auto => Ok(Device::Cpu),
    }
}

/// A loaded model and the fingerprint its cache keys carry.
pub struct LoadedModel {
    pub backend: Arc<dyn RerankBackend>,
    pub fingerprint: ModelFingerprint,
}

/// Resolves and loads the configured model.
pub async fn load_backend(config: &NodeConfig) -> Result<LoadedModel, ServeError> {
    let source = match config.model_source() {
        ModelChoice::Path(p) => ModelSource::Local(p),
        ModelChoice::HubId(id) => ModelSource::Hub(id),
    };
    let files = ModelFiles::resolve(&source).await?;
    let device = select_device(config.device)?;
    let kernels = kernels_of(config.cpu_kernels);
    let precision = mixed_precision(config, &device, kernels);
    let options = LoadOptions {
        device,
        max_batch_tokens: config.max_batch_tokens,
        precision,
        kernels,
        max_input_length: config.max_input_length,
        instruction: config.rerank_instruction.clone(),
    };
    let (backend, weights_hash) = web::block(move || {
        let backend = Reranker::load(&files, &options)?;
        Ok::<_, EngineError>((backend, files.weights_hash()?))
    })
    .await
    .map_err(|e| ServeError::Device(format!("model loading task failed: {e}")))??;
    let info = backend.info();
    if info.device == "cpu" && !info.kernels.starts_with("onednn") {
        // The 2.4x slower path is never taken silently (a build without oneDNN used to say so
        // only at INFO level).
        let why = if !rerank_engine::onednn_available() {
            "this binary was built without oneDNN; install it (`apt-get install libdnnl-dev`) and \
             rebuild: ./start_reranker.sh does both"
        } else if kernels == Kernels::Candle {
            "CPU_KERNELS=candle asks for them"
        } else {
            "the packed kernels do not run this model in this precision"
        };
        tracing::warn!(
            kernels = %info.kernels,
            "the model runs on candle's pure-Rust kernels, about 2.4x slower on CPU than oneDNN's: {why}"
        );
    }
    let fingerprint = ModelFingerprint::new(
        &info.model_id,
        weights_hash,
        &info.quantization,
        info.max_input_length,
    );
    Ok(LoadedModel {
        backend: Arc::new(backend),
        fingerprint,
    })
}

/// Starts the model, batcher and node actors (and the Redis tier when enabled, with the
/// node's cluster registration when `CLUSTER_SECRET` is set too); returns the node actor's
/// address and the registration's handle (the registration is withdrawn when it is dropped).
pub fn start_actors(
    config: &NodeConfig,
    node_id: &str,
    model: &LoadedModel,
    metrics: Arc<NodeMetrics>,
) -> Result<(Addr<NodeActor>, Option<Registrar>), ServeError> {
    let registration = RegistrationSettings::from_config(config, node_id);
    let shared = if config.redis_enabled {
        let settings = SharedCacheSettings {
            url: config.redis_url.clone(),
            ttl: Duration::from_secs(config.redis_ttl_seconds),
            lock_ttl: Duration::from_millis(config.redis_lock_ttl_ms),
            op_timeout: Duration::from_millis(config.redis_timeout_ms),
        };
        Some(SharedScoreCache::start(
            &settings,
            &model.fingerprint,
            metrics.clone(),
        )?)
    } else {
        None
    };
    let model_backend = model.backend.clone();
    let model_actor = SyncArbiter::start(1, move || ModelActor::new(model_backend.clone()));
    let cache = LocalScoreCache::new(
        config.local_cache_size,
        Duration::from_secs(config.local_cache_ttl_seconds),
    );
    let settings = NodeSettings {
        batcher: BatcherSettings {
            enabled: config.micro_batch_enabled,
            window: Duration::from_secs_f64(config.micro_batch_window_ms / 1000.0),
            max_requests: config.micro_batch_max_size,
            max_tokens: config.max_batch_tokens,
        },
        max_parallel_requests: config.max_parallel_requests,
        max_queued_requests: config.max_queued_requests,
        max_queued_tokens: config.max_queued_tokens,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
    };
    let stats = Arc::new(BatcherStats::default());
    let batcher = BatcherActor::new(
        settings.batcher,
        model_actor.recipient(),
        cache.clone(),
        metrics.clone(),
        stats.clone(),
    )
    .start();
    let parts = NodeParts {
        backend: model.backend.clone(),
        fingerprint: model.fingerprint.clone(),
        cache,
        shared,
        batcher,
        batcher_stats: stats,
        metrics,
    };
    let node = NodeActor::new(parts, settings).start();
    let registrar = registration
        .map(|registration| crate::registration::start(registration, node.downgrade()))
        .transpose()
        .map_err(crate::cache::shared_tier::SharedCacheError::from)?;
    Ok((node, registrar))
}

/// The precision to run: `QUANTIZATION`, except that `ENABLE_MIXED_PRECISION` turns f32 into
/// bf16 compute where the device and kernels run bf16 natively — a CUDA GPU (cuBLAS), or a CPU
/// with native bf16 on oneDNN — (then `/health.model` says bf16); elsewhere it warns and changes
/// nothing.
fn mixed_precision(config: &NodeConfig, device: &Device, kernels: Kernels) -> Precision {
    let asked = precision_of(config.quantization);
    if !config.enable_mixed_precision {
        return asked;
    }
    if asked != Precision::F32 {
        tracing::warn!(
            quantization = asked.name(),
            "ENABLE_MIXED_PRECISION ignored: QUANTIZATION already sets the precision"
        );
        asked
    } else if device.is_cpu() && kernels == Kernels::OneDnn && rerank_engine::native_bf16() {
        tracing::info!("ENABLE_MIXED_PRECISION: bf16 compute on oneDNN (the CPU has native bf16)");
        Precision::Bf16
    } else if device.is_cuda() {
        // GPUs without bf16 (compute capability < 8.0) get f16 when the model loads.
        tracing::info!("ENABLE_MIXED_PRECISION: bf16 compute on cuBLAS");
        Precision::Bf16
    } else {
        tracing::warn!(
            "ENABLE_MIXED_PRECISION has no effect here: no native bf16 kernels for this device \
             and build, and emulated bf16 would be slower than f32"
        );
        asked
    }
}

/// The engine kernels for a `CPU_KERNELS` setting.
pub fn kernels_of(k: CpuKernels) -> Kernels {
    match k {
        CpuKernels::Onednn => Kernels::OneDnn,
        CpuKernels::Candle => Kernels::Candle,
    }
}

/// The engine precision for a `QUANTIZATION` setting.
pub fn precision_of(q: Quantization) -> Precision {
    match q {
        Quantization::None => Precision::F32,
        Quantization::Bf16 => Precision::Bf16,
        Quantization::F16 => Precision::F16,
        Quantization::Int8 => Precision::Int8,
    }
}

fn default_node_id(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}

/// Runs each request in a `node.request` span continuing the caller's trace.
async fn traced_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    rerank_shared::telemetry::traced("node.request", req, next).await
}

/// How long a connection may linger after its response when it must be closed (a refused slow
/// body, shutdown): time for the client to read the answer before the socket goes away.
pub const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Loads the model and serves until SIGTERM or SIGINT, then drains (`rerank_shared::drain`):
/// `/health` and new rerank requests answer 503 `draining`, the registration is withdrawn,
/// and after `SHUTDOWN_NOTICE_MS` the listener closes; in-flight requests finish within
/// `SHUTDOWN_GRACE_MS`.
pub async fn serve(config: NodeConfig) -> Result<(), ServeError> {
    let model = load_backend(&config).await?;
    let info = model.backend.info().clone();
    tracing::info!(
        model = %info.model_id,
        architecture = %info.architecture,
        kind = ?info.kind,
        device = %info.device,
        max_input_length = info.max_input_length,
        "model loaded"
    );
    let metrics = Arc::new(NodeMetrics::new()?);
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| default_node_id(config.port));
    let (node, registrar) = start_actors(&config, &node_id, &model, metrics.clone())?;
    let http_metrics = web::Data::from(metrics.http.clone());
    let draining = Draining::default();
    let state = web::Data::new(NodeState {
        node_id,
        backend: model.backend.clone(),
        node,
        metrics,
        config: config.clone(),
        draining: draining.clone(),
    });
    let timing = DrainTiming::from_millis(config.shutdown_notice_ms, config.shutdown_grace_ms);
    let payload_limit = config.payload_limit;
    let admin = config.admin_token.is_some();
    let read_timeout = Duration::from_millis(config.http_read_timeout_ms);
    // HTTP clients in front of a node (the coordinator's pool) should let connections idle for
    // less than this, so that they never reuse one the node is closing.
    let keep_alive = Duration::from_millis(config.http_keep_alive_ms);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(http_metrics.clone())
            .app_data(api::edge::BodyReadTimeout(read_timeout))
            .wrap(from_fn(rerank_shared::telemetry::http_metrics))
            .wrap(from_fn(traced_request))
            .wrap(from_fn(rerank_shared::request_id::request_id))
            .wrap(from_fn(api::disconnect::track_requests))
            .configure(|cfg| api::configure(cfg, payload_limit, admin))
    })
    // The first request's head must arrive within the read timeout (408 otherwise); later heads
    // on a kept-alive connection are bounded by the connection watchdog (`api::disconnect`).
    .client_request_timeout(read_timeout)
    .keep_alive(keep_alive)
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
    .max_connections(config.max_connections)
    .on_connect(move |connection, extensions| {
        api::disconnect::remember_socket(connection, extensions, keep_alive + read_timeout)
    })
    // SIGTERM and SIGINT drain through `serve_until_drained`, not actix-web's own handling.
    .disable_signals()
    .shutdown_timeout(timing.server_shutdown_timeout_secs())
    .bind((config.host.as_str(), config.port))?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    warn_if_descriptors_short(config.max_connections);
    let leave = async {
        if let Some(registrar) = &registrar {
            registrar.withdraw().await;
        }
    };
    // Caught from here on: before, a signal ends the process at once, which is what a node
    // still loading its model (nothing in flight, nothing registered) should do.
    let stops = StopRequests::from_signals()?;
    serve_until_drained(server.run(), &draining, timing, leave, stops).await?;
    Ok(())
}

/// Warns when the open-file limit cannot hold `MAX_CONNECTIONS` on every HTTP worker: each
/// connection takes two descriptors (the socket and the duplicate `api::disconnect` watches), and
/// past the limit a node fails to accept, or to open anything else.
fn warn_if_descriptors_short(max_connections: usize) {
    // actix-web's default worker count.
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let needed = workers.saturating_mul(max_connections).saturating_mul(2);
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| open_files_limit(&limits));
    if let Some(limit) = limit.filter(|&limit| limit < needed as u64) {
        tracing::warn!(
            limit,
            needed,
            workers,
            max_connections,
            "the open-file limit (ulimit -n) is below 2 descriptors per connection at \
             MAX_CONNECTIONS on every HTTP worker: raise it or lower MAX_CONNECTIONS"
        );
    }
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text (`None` when unlimited or absent).
fn open_files_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// A CUDA build's choices need a GPU (and its driver even to start), so only CPU builds test here.
#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use super::*;

    /// A CPU build runs `auto` on the CPU and refuses `cuda` with the way out in the message.
    #[test]
    fn cpu_builds_pick_the_cpu_and_refuse_cuda() {
        assert!(matches!(select_device(DeviceChoice::Auto), Ok(Device::Cpu)));
        assert!(matches!(select_device(DeviceChoice::Cpu), Ok(Device::Cpu)));
        let err = select_device(DeviceChoice::Cuda).expect_err("no CUDA in this build");
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }

    #[test]
    fn open_files_limit_reads_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(
            open_files_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }
}
