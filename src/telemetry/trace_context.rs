//! W3C Trace Context (`traceparent` and `tracestate`), parsed and written by
//! OpenTelemetry's `TraceContextPropagator` — not by hand.
//!
//! The context travels HTTP request → outbox row → Kafka headers → consumer →
//! the outbox rows that consumer writes, so one trace id follows an order
//! through every hop, and a caller's `tracestate` (vendor data) travels with
//! it. The headers are stored verbatim in the outbox row when the business
//! transaction writes it: the relay copies them, so published messages are
//! parented to the span that caused them, not to the relay.

use std::collections::HashMap;
use std::fmt;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rand::RngCore;

/// Header (and outbox header key) names of the W3C context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A valid remote or local span context: trace id, span id, flags and
/// `tracestate`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceContext(SpanContext);

struct Headers<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

struct Out(HashMap<String, String>);

impl Injector for Out {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl TraceContext {
    /// Reads a `traceparent` (and its `tracestate`, if any). `None` for
    /// anything the W3C spec calls invalid: malformed, unknown-version rules
    /// broken, all-zero ids.
    pub fn extract(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let mut pairs = vec![(TRACEPARENT, traceparent)];
        if let Some(ts) = tracestate {
            pairs.push((TRACESTATE, ts));
        }
        let cx = TraceContextPropagator::new().extract(&Headers(&pairs));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(TraceContext(sc))
    }

    /// The context as headers: `traceparent`, and `tracestate` when not empty.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Out(HashMap::new());
        let cx = Context::new().with_remote_span_context(self.0.clone());
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        let mut v = Vec::with_capacity(2);
        if let Some(tp) = out.0.remove(TRACEPARENT) {
            v.push((TRACEPARENT, tp));
        }
        if let Some(ts) = out.0.remove(TRACESTATE).filter(|s| !s.is_empty()) {
            v.push((TRACESTATE, ts));
        }
        v
    }

    /// The `tracestate` header value, when there is one.
    pub fn tracestate(&self) -> Option<String> {
        let s = self.0.trace_state().header();
        (!s.is_empty()).then_some(s)
    }

    /// A new root trace (sampled).
    pub fn new_root() -> TraceContext {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        TraceContext(SpanContext::new(
            TraceId::from_bytes(trace_id),
            new_span_id(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    /// The same trace (flags and `tracestate` too) with a new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext(SpanContext::new(
            self.0.trace_id(),
            new_span_id(),
            self.0.trace_flags(),
            true,
            self.0.trace_state().clone(),
        ))
    }

    /// Wraps a valid OpenTelemetry span context.
    pub fn from_span_context(sc: SpanContext) -> Option<TraceContext> {
        sc.is_valid().then_some(TraceContext(sc))
    }

    pub fn span_context(&self) -> &SpanContext {
        &self.0
    }

    pub fn trace_id_hex(&self) -> String {
        self.0.trace_id().to_string()
    }
}

fn new_span_id() -> SpanId {
    let mut span_id = [0u8; 8];
    while span_id == [0; 8] {
        rand::rng().fill_bytes(&mut span_id);
    }
    SpanId::from_bytes(span_id)
}

/// The `traceparent` value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.0.trace_id(), self.0.span_id(), self.0.trace_flags().to_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_the_spec_example_with_its_tracestate() {
        let tc = TraceContext::extract(EXAMPLE, Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")).unwrap();
        assert_eq!(tc.to_string(), EXAMPLE);
        assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            tc.headers(),
            vec![(TRACEPARENT, EXAMPLE.to_owned()), (TRACESTATE, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_owned())]
        );
        let child = tc.child();
        assert_eq!(child.span_context().trace_id(), tc.span_context().trace_id());
        assert_ne!(child.span_context().span_id(), tc.span_context().span_id());
        assert_eq!(child.tracestate(), tc.tracestate(), "a child keeps the caller's tracestate");
        // Without tracestate, no tracestate header.
        assert_eq!(TraceContext::extract(EXAMPLE, None).unwrap().headers().len(), 1);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::extract(bad, None).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn new_roots_are_valid_and_distinct() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id_hex(), b.trace_id_hex());
        assert_eq!(TraceContext::extract(&a.to_string(), None), Some(a));
    }
}
