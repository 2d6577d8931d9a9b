//! Logs, traces and metrics.
//!
//! Log levels follow one rule: ERROR only when an operator must act (the
//! daemon cannot make progress on its own); WARN for things that need a look
//! but heal or wait (a quarantined saga, a broker outage being ridden out);
//! INFO for lifecycle; DEBUG for per-event detail.

pub mod metrics;
pub mod otel;
pub mod trace_context;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber: logs (JSON or text) and OpenTelemetry
/// spans (exported over OTLP when `otlp_endpoint` is set). Keep the returned
/// guard alive until exit: dropping it flushes the exporter. Safe to call more
/// than once (tests): later calls install nothing.
pub fn init(format: LogFormat, filter: &str, otlp_endpoint: Option<&str>, service_name: &str) -> otel::TelemetryGuard {
    // The scheduler logs every job start at INFO; keep it to warnings unless asked.
    let directives = if filter.contains("tokio_cron_scheduler") {
        filter.to_owned()
    } else {
        format!("{filter},tokio_cron_scheduler=warn")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match otel::provider(otlp_endpoint, service_name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("order-saga: {e}; traces will not be exported");
            match otel::provider(None, service_name) {
                Ok(p) => p,
                Err(_) => return otel::TelemetryGuard::none(),
            }
        }
    };
    let (otel_layer, guard) = otel::layer(provider, service_name);
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    if result.is_err() { otel::TelemetryGuard::none() } else { guard }
}
