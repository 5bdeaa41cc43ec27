//! Logging setup: `tracing` to stderr, text or JSON, filtered by `RUST_LOG`.
//!
//! JSON lines are flat, to filter on without knowing spans: `timestamp`, `level`, `message`,
//! the event's fields, and the fields of the spans around it. Lines about an
//! object carry `namespace`, `name` and, once known, `hostId`; lines about a provider
//! answer carry its `traceId`; transitions carry their `reason`.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => json_layer(std::io::stderr).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init();
}

/// The JSON log layer, writing to `writer`: one flat object a line (span names left out,
/// an inner span's field over an outer one's of the same name).
pub fn json_layer<S, W>(writer: W) -> tracing_flat_json::FlatJsonLayer<S, W>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_flat_json::FlatJsonLayer::new(writer)
}
