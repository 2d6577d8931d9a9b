//! OpenTelemetry tracing: spans get real trace and span ids (always, so that
//! `traceparent` propagation works), and are exported over OTLP/HTTP only when
//! `ORDER_SAGA_OTLP_ENDPOINT` is set.
//!
//! The W3C context travels HTTP request → outbox row → Kafka headers →
//! consumer span → the outbox rows that span writes → …, so one trace id
//! follows an order through every hop. [`TraceContext`] is the carrier the
//! rest of the crate stores and sends (parsed and written by OpenTelemetry's
//! propagator); this module attaches it to spans and reads it back.

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace_context::TraceContext;

/// Flushes and stops the exporter when dropped (end of `main`).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

impl TelemetryGuard {
    pub fn none() -> TelemetryGuard {
        TelemetryGuard { provider: None }
    }
}

/// The URL spans are posted to: `{endpoint}/v1/traces` unless the endpoint
/// already names a path.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed.split("://").nth(1).is_some_and(|rest| rest.contains('/'));
    if has_path { trimmed.to_owned() } else { format!("{trimmed}/v1/traces") }
}

/// Builds the tracer provider: parent-based sampling (a sampled caller's
/// trace is kept), batch export when an endpoint is given.
pub fn provider(endpoint: Option<&str>, service_name: &str) -> Result<SdkTracerProvider, String> {
    let resource =
        Resource::builder().with_attributes([KeyValue::new("service.name", service_name.to_owned())]).build();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource);
    if let Some(endpoint) = endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The tracing layer for `provider`, plus the guard that shuts it down.
pub fn layer<S>(provider: SdkTracerProvider, service_name: &str) -> (impl tracing_subscriber::Layer<S>, TelemetryGuard)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let tracer = provider.tracer(service_name.to_owned());
    (tracing_opentelemetry::layer().with_tracer(tracer), TelemetryGuard { provider: Some(provider) })
}

/// Makes `span` a child of the remote context `tc` (its `tracestate` too).
pub fn set_remote_parent(span: &tracing::Span, tc: &TraceContext) {
    let _ = span.set_parent(Context::new().with_remote_span_context(tc.span_context().clone()));
}

/// The `traceparent` of `span`, when the OpenTelemetry layer is installed.
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceContext> {
    TraceContext::from_span_context(span.context().span().span_context().clone())
}

/// A span's `traceparent`, or — without the OpenTelemetry layer (unit tests,
/// embedded use) — a child of `parent`, or a new root.
pub fn propagate(span: &tracing::Span, parent: Option<&TraceContext>) -> TraceContext {
    traceparent_of(span).unwrap_or_else(|| parent.map(TraceContext::child).unwrap_or_else(TraceContext::new_root))
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_url_appends_the_signal_path_only_to_a_bare_endpoint() {
        assert_eq!(super::traces_url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(super::traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(super::traces_url("https://otel.example/custom/traces"), "https://otel.example/custom/traces");
    }
}
