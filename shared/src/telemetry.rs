//! One initialiser for logs and traces. It takes its sinks as parameters so that tests can
//! capture everything a run logged and every span it produced (and search them for personal
//! data) while production writes JSON to stdout and exports spans over OTLP/HTTP.
//!
//! Trace context crosses process boundaries as W3C `traceparent`/`tracestate`, in HTTP headers
//! at intake and in AMQP message headers everywhere else; see [`inject_current`] and [`extract_into`].

use crate::config::{LogFormat, TelemetrySettings};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and shuts the tracer provider down when dropped (or on [`Telemetry::shutdown`]).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Errors here mean the collector is unreachable; nothing more can be done on exit.
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: could not flush spans on exit: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Production set-up: logs to stdout, spans to the OTLP endpoint when one is configured.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    init_with(service, settings, std::io::stdout, None)
}

/// Set-up with explicit sinks. `recorder` receives every finished span (tests).
pub fn init_with<W>(
    service: &'static str,
    settings: &TelemetrySettings,
    writer: W,
    recorder: Option<SpanRecorder>,
) -> anyhow::Result<Telemetry>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    if !settings.otlp_endpoint.is_empty() {
        use opentelemetry_otlp::WithExportConfig;
        let endpoint = format!("{}/v1/traces", settings.otlp_endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    if let Some(r) = recorder {
        builder = builder.with_simple_exporter(r);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);

    let filter = EnvFilter::try_new(&settings.log_filter)?;
    let fmt = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_target(false)
            .with_ansi(std::env::var_os("NO_COLOR").is_none())
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Keeps a text rendering of every finished span (name, attributes, events, links) so that a
/// test can search all of them for a canary value.
#[derive(Debug, Clone, Default)]
pub struct SpanRecorder(Arc<Mutex<Vec<RecordedSpan>>>);

#[derive(Debug, Clone)]
pub struct RecordedSpan {
    pub name: String,
    pub trace_id: String,
    pub attributes: HashMap<String, String>,
    /// Everything above plus events, as one searchable string.
    pub text: String,
}

impl SpanRecorder {
    pub fn spans(&self) -> Vec<RecordedSpan> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl SpanExporter for SpanRecorder {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let mut spans = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for s in batch {
            let attributes: HashMap<String, String> = s
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect();
            let mut text = format!("{} {:?}", s.name, attributes);
            for e in s.events.iter() {
                text.push_str(&format!(" {} {:?}", e.name, e.attributes));
            }
            spans.push(RecordedSpan {
                name: s.name.to_string(),
                trace_id: s.span_context.trace_id().to_string(),
                attributes,
                text,
            });
        }
        Ok(())
    }
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapReader<'a>(&'a HashMap<String, String>);

impl Extractor for MapReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The W3C trace context of the current span (`traceparent`, maybe `tracestate`).
pub fn inject_current() -> HashMap<String, String> {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(
        &tracing::Span::current().context(),
        &mut MapCarrier(&mut map),
    );
    map
}

/// Makes `span` a child of the trace described by `headers` (no-op without a valid context).
pub fn extract_into(span: &tracing::Span, headers: &HashMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(&MapReader(headers));
    // An error only means no OpenTelemetry layer is installed (a bare tool); nothing to link.
    if let Err(e) = span.set_parent(cx) {
        tracing::trace!(error = %e, "span not linked to incoming trace context");
    }
}

/// The trace id of the current span, for correlation in logs and problem documents.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
