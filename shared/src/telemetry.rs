//! Logs, traces and HTTP metrics, set up the same way by both servers.
//!
//! Traces: `tracing` spans go to an OpenTelemetry OTLP/HTTP exporter when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Export runs on the SDK's own batch thread with a
//! bounded queue and a short timeout, so a slow or dead collector costs requests nothing (spans
//! are dropped instead). W3C `traceparent` carries the trace from the coordinator to the node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes buffered spans (bounded by the exporter's timeout) and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(3));
        }
    }
}

/// Logs to stderr (filtered by `RUST_LOG`, default `info`) and, with an OTLP endpoint (the
/// base URL, e.g. `http://jaeger:4318`), exports spans as `service_name`.
pub fn init(service_name: &'static str, otlp_endpoint: Option<&str>) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    // `RUST_LOG` filters the logs only: traces keep every INFO span whatever the log level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // stderr, as documented: stdout carries `--json` reports and `eval`'s child-to-parent runs.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(logs);
    let exporter = otlp_endpoint.map(|base| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
            .with_timeout(Duration::from_secs(2))
            .build()
    });
    match exporter {
        Some(Ok(exporter)) => {
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(Duration::from_millis(500))
                        .with_max_queue_size(4096)
                        .build(),
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let tracer = provider.tracer(service_name);
            registry
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(LevelFilter::INFO),
                )
                .init();
            Telemetry {
                provider: Some(provider),
            }
        }
        Some(Err(e)) => {
            registry.init();
            tracing::warn!(error = %e, "OTLP exporter not available; traces are not exported");
            Telemetry { provider: None }
        }
        None => {
            registry.init();
            Telemetry { provider: None }
        }
    }
}

/// Reads a W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The `traceparent`/`tracestate` headers that continue `span`'s trace in another process.
pub fn trace_headers(span: &tracing::Span) -> Vec<(String, String)> {
    let mut headers: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&span.context(), &mut headers));
    headers.into_iter().collect()
}

/// Middleware body: runs the request inside a span named `name` (e.g. `node.request`) whose
/// parent is the caller's trace context, if the request carries one.
pub async fn traced<B: MessageBody>(
    name: &'static str,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let route = req
        .match_pattern()
        .unwrap_or_else(|| req.path().to_string());
    let request_id = req
        .extensions()
        .get::<crate::request_id::RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        http.method = %req.method(),
        http.route = %route,
        request_id = %request_id,
        http.status_code = tracing::field::Empty,
    );
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    let _ = span.set_parent(parent);
    let res = next.call(req).instrument(span.clone()).await?;
    span.record("http.status_code", res.status().as_u16());
    Ok(res)
}

/// Latency buckets from 0.5 ms to ~33 s.
pub fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 17).unwrap_or_default()
}

/// HTTP request counters by route pattern and status, and their wall time by route.
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers `{prefix}_requests_total{route,status}` and
    /// `{prefix}_request_duration_seconds{route}` in `registry`.
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_requests_total"),
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}_request_duration_seconds"),
                "HTTP request wall time",
            )
            .buckets(seconds_buckets()),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// Middleware recording [`HttpMetrics`] (found as `web::Data<HttpMetrics>` app data); route
/// patterns, not raw paths, keep the label set small.
pub async fn http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let status = res.status().as_u16().to_string();
        m.requests
            .with_label_values(&[route.as_str(), status.as_str()])
            .inc();
        m.duration
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}
