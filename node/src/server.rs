//! Start-up: load the model, start its actor, serve HTTP.

use std::sync::Arc;

use actix::SyncArbiter;
use actix_web::{middleware::from_fn, web, App, HttpServer};
use candle_core::Device;
use rerank_shared::config::{DeviceChoice, ModelChoice, NodeConfig, Quantization};

use crate::actors::ModelActor;
use crate::api;
use crate::engine::{
    CandleReranker, EngineError, LoadOptions, ModelFiles, ModelSource, RerankBackend,
};
use crate::metrics::NodeMetrics;
use crate::state::NodeState;

/// Why a node could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("device: {0}")]
    Device(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// Picks the device `choice` asks for; `auto` means CUDA when available.
pub fn select_device(choice: DeviceChoice) -> Result<Device, ServeError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| {
            ServeError::Device(format!("DEVICE=cuda but CUDA is unavailable ({e}); build with --features cuda or set DEVICE=cpu"))
        }),
        DeviceChoice::Auto => Device::cuda_if_available(0).map_err(|e| ServeError::Device(e.to_string())),
    }
}

/// Resolves and loads the configured model.
pub async fn load_backend(config: &NodeConfig) -> Result<Arc<dyn RerankBackend>, ServeError> {
    let source = match config.model_source() {
        ModelChoice::Path(p) => ModelSource::Local(p),
        ModelChoice::HubId(id) => ModelSource::Hub(id),
    };
    let files = ModelFiles::resolve(&source).await?;
    if config.quantization != Quantization::None || config.enable_mixed_precision {
        tracing::warn!(
            requested = config.quantization.as_str(),
            mixed_precision = config.enable_mixed_precision,
            "reduced precision is not available in this build yet; running float32 (see /health.model)"
        );
    }
    let options = LoadOptions {
        device: select_device(config.device)?,
        max_batch_tokens: config.max_batch_tokens,
    };
    let backend = web::block(move || CandleReranker::load(&files, &options))
        .await
        .map_err(|e| ServeError::Device(format!("model loading task failed: {e}")))??;
    Ok(Arc::new(backend))
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

/// Loads the model and serves until the server is stopped (SIGINT/SIGTERM).
pub async fn serve(config: NodeConfig) -> Result<(), ServeError> {
    let backend = load_backend(&config).await?;
    let info = backend.info().clone();
    tracing::info!(
        model = %info.model_id,
        architecture = %info.architecture,
        kind = ?info.kind,
        device = %info.device,
        max_input_length = info.max_input_length,
        "model loaded"
    );
    let model_backend = backend.clone();
    let model = SyncArbiter::start(1, move || ModelActor::new(model_backend.clone()));
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| default_node_id(config.port));
    let state = web::Data::new(NodeState {
        node_id,
        backend,
        model,
        metrics: Arc::new(NodeMetrics::new()?),
        config: config.clone(),
    });
    let payload_limit = config.payload_limit;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(api::middleware::http_metrics))
            .wrap(from_fn(api::middleware::request_id))
            .configure(|cfg| api::configure(cfg, payload_limit))
    })
    .bind((config.host.as_str(), config.port))?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    server.run().await?;
    Ok(())
}
