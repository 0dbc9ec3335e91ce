//! Logging and optional OTLP trace export, set up once at process start.
//!
//! Logs go to stderr (`PALISADE_LOG` filter, `PALISADE_LOG_FORMAT=json`). Traces are
//! exported over OTLP/HTTP (protobuf) when an endpoint is configured:
//! `PALISADE_OTLP_ENDPOINT` (a collector base URL; `/v1/traces` is appended) or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
//! `PALISADE_OTLP_SAMPLE_RATIO` (0–1, default 1) samples root spans. Spans carry method,
//! route, status, tenant and receipt ids — never prompt text, keys or tokens (the same
//! rule as logs). Export runs on the batch processor's own thread, so a slow or absent
//! collector never blocks a request; spans it cannot take are dropped and counted by the
//! SDK, not queued without bound.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace pipeline alive; `shutdown` flushes what is batched.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OTLP pipeline, if an endpoint is configured. Errors are reported and tracing
/// continues without export: telemetry must not stop the gateway.
fn provider() -> Option<SdkTracerProvider> {
    let ours = env("PALISADE_OTLP_ENDPOINT");
    if ours.is_none()
        && env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return None;
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(std::time::Duration::from_secs(5));
    if let Some(base) = ours {
        builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = match builder.build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OTLP trace export disabled: {e}");
            return None;
        }
    };
    let ratio = env("PALISADE_OTLP_SAMPLE_RATIO")
        .and_then(|r| r.parse::<f64>().ok())
        .filter(|r| r.is_finite())
        .unwrap_or(1.0)
        .clamp(0.0, 1.0);
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("palisade")
                    .build(),
            )
            .build(),
    )
}

pub fn init() -> Telemetry {
    let filter = EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PALISADE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let provider = provider();
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("palisade"))
            // Only Palisade's own spans; dependencies' spans stay out of traces.
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target().starts_with("palisade")
            }))
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel);
    if json {
        registry.with(fmt.json().with_filter(filter)).init();
    } else {
        registry.with(fmt.with_filter(filter)).init();
    }
    Telemetry { provider }
}
