//! What `serve` sets up to be watched: logging to stderr filtered by `RUST_LOG`,
//! and (feature `metrics`) the Prometheus endpoint fed by the router's
//! metrics publisher.

use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;

use sharded_router::Router;
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset: warnings and errors (dead letters,
/// failed shards, misbehaving clients).
const DEFAULT_FILTER: &str = "warn";

/// Logs `tracing` events to stderr, filtered as `RUST_LOG` says (e.g.
/// `RUST_LOG=sharded_router=debug` for a span per gateway request and channel
/// open). A filter that does not parse is reported and the default used.
pub fn init_logging() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|e| {
            eprintln!("RUST_LOG={directives:?} does not parse ({e}); logging at {DEFAULT_FILTER}");
            EnvFilter::new(DEFAULT_FILTER)
        }),
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
    };
    // Fails only if a subscriber is already set, which then keeps logging.
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What keeps the metrics flowing; dropped when `serve` ends.
pub struct Metrics {
    #[cfg(feature = "metrics")]
    _publisher: sharded_router::observe::PublisherGuard,
}

/// Serves `/metrics` on `addr` in Prometheus' text format, with the router's
/// metrics published every second. Must run inside the tokio runtime that will
/// drive the HTTP listener.
#[cfg(feature = "metrics")]
pub fn serve_metrics(router: &Router, addr: SocketAddr) -> Result<Metrics, Box<dyn Error>> {
    use std::time::Duration;

    use metrics_exporter_prometheus::PrometheusBuilder;
    use sharded_router::observe::MetricsPublisher;

    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let publisher = MetricsPublisher::spawn(router, Duration::from_secs(1))?;
    Ok(Metrics { _publisher: publisher })
}

/// Without the feature `metrics` there is nothing to serve.
#[cfg(not(feature = "metrics"))]
pub fn serve_metrics(_router: &Router, addr: SocketAddr) -> Result<Metrics, Box<dyn Error>> {
    Err(format!("--metrics-bind {addr}: this build has no metrics (built without the feature `metrics`)")
        .into())
}
