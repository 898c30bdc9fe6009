//! Every metric the server exports, as one struct of atomic handles, rendered in the
//! Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused at the handshake (unknown app, disabled, over quota).
    pub connections_refused: AtomicU64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumers: AtomicU64,
    /// Live channel subscriptions (socket × channel).
    pub subscriptions: AtomicI64,
    /// WebSocket messages received from clients.
    pub ws_messages_in: AtomicU64,
    /// Frames queued to clients (each delivery counts once).
    pub ws_messages_out: AtomicU64,
    /// Bytes of fan-out frames queued to clients (counted once per publish, not per write,
    /// to keep shared atomics off the per-delivery path).
    pub ws_bytes_out: AtomicU64,
    /// Client events accepted and relayed.
    pub client_events: AtomicU64,
    /// Client frames answered with pusher:error.
    pub ws_errors: AtomicU64,
    /// HTTP API requests by outcome class.
    pub http_ok: AtomicU64,
    pub http_client_error: AtomicU64,
    pub http_server_error: AtomicU64,
    /// Events published through the HTTP API (per channel).
    pub http_events: AtomicU64,
    /// Webhook requests answered 2xx.
    pub webhooks_sent: AtomicU64,
    /// Webhook attempts that failed and will be retried.
    pub webhooks_retried: AtomicU64,
    /// Webhook batches given up after the retry window.
    pub webhooks_failed: AtomicU64,
    /// Webhook events dropped because the queue was full.
    pub webhooks_dropped: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed) as i64;
        let g = |v: &AtomicI64| v.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, i64); 13] = [
            (
                "switchyard_connections",
                "gauge",
                "Open WebSocket connections",
                g(&self.connections),
            ),
            (
                "switchyard_connections_total",
                "counter",
                "WebSocket connections accepted",
                c(&self.connections_total),
            ),
            (
                "switchyard_connections_refused_total",
                "counter",
                "Connections refused at the handshake",
                c(&self.connections_refused),
            ),
            (
                "switchyard_slow_consumers_total",
                "counter",
                "Connections closed for a full outbound queue",
                c(&self.slow_consumers),
            ),
            (
                "switchyard_subscriptions",
                "gauge",
                "Live channel subscriptions",
                g(&self.subscriptions),
            ),
            (
                "switchyard_ws_messages_received_total",
                "counter",
                "WebSocket messages received",
                c(&self.ws_messages_in),
            ),
            (
                "switchyard_ws_messages_sent_total",
                "counter",
                "Frames queued to clients",
                c(&self.ws_messages_out),
            ),
            (
                "switchyard_ws_bytes_sent_total",
                "counter",
                "Bytes of fan-out frames queued to clients",
                c(&self.ws_bytes_out),
            ),
            (
                "switchyard_client_events_total",
                "counter",
                "Client events relayed",
                c(&self.client_events),
            ),
            (
                "switchyard_ws_errors_total",
                "counter",
                "Client frames answered with pusher:error",
                c(&self.ws_errors),
            ),
            (
                "switchyard_http_events_total",
                "counter",
                "Channel events published through the HTTP API",
                c(&self.http_events),
            ),
            (
                "switchyard_webhooks_dropped_total",
                "counter",
                "Webhook events dropped on a full queue",
                c(&self.webhooks_dropped),
            ),
            (
                "switchyard_webhooks_retried_total",
                "counter",
                "Webhook attempts retried",
                c(&self.webhooks_retried),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_http_requests_total HTTP API requests by status class\n# TYPE switchyard_http_requests_total counter"
        );
        for (class, v) in [
            ("2xx", &self.http_ok),
            ("4xx", &self.http_client_error),
            ("5xx", &self.http_server_error),
        ] {
            let _ = writeln!(
                out,
                "switchyard_http_requests_total{{status=\"{class}\"}} {}",
                c(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_webhooks_total Webhook batches by result\n# TYPE switchyard_webhooks_total counter"
        );
        for (result, v) in [
            ("sent", &self.webhooks_sent),
            ("failed", &self.webhooks_failed),
        ] {
            let _ = writeln!(
                out,
                "switchyard_webhooks_total{{result=\"{result}\"}} {}",
                c(v)
            );
        }
        out
    }
}
