//! The WebSocket side: the `/app/{key}` handshake, per-connection tasks and framing.

pub mod connection;
pub mod frame;
mod rate;
pub mod session;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::protocol::{messages, ErrorCode};
use crate::server::State;

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Why an upgraded connection is refused with a Pusher code right after the handshake.
fn refusal(
    state: &State,
    key: &str,
    query: Option<&str>,
) -> Result<Arc<crate::channels::App>, (ErrorCode, String)> {
    let protocol = query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "protocol")
        .map(|(_, v)| v.into_owned());
    if let Some(p) = protocol {
        match p.parse::<u32>() {
            Ok(5..=7) => {}
            _ => {
                return Err((
                    ErrorCode::UnsupportedProtocol,
                    format!("unsupported protocol version {p:?}; this server speaks 5 to 7"),
                ))
            }
        }
    }
    let Some(app) = state.hub.by_key(key) else {
        return Err((
            ErrorCode::AppNotFound,
            format!("app key {key:?} does not exist"),
        ));
    };
    if !app.config.enabled {
        return Err((ErrorCode::AppDisabled, "app is disabled".into()));
    }
    let open = state.hub.metrics.connections.load(Ordering::Relaxed);
    if open >= state.config.server.max_connections as i64 {
        return Err((ErrorCode::OverCapacity, "server is over capacity".into()));
    }
    let cap = app.config.max_connections;
    if cap > 0 && app.connections.load(Ordering::Relaxed) >= cap {
        return Err((
            ErrorCode::OverQuota,
            "app is over its connection quota".into(),
        ));
    }
    Ok(app.clone())
}

/// Answers a `GET /app/{key}` upgrade request and spawns the connection once upgraded.
pub fn upgrade(state: Arc<State>, key: &str, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let is_upgrade = headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v == "13");
    let Some(client_key) = headers
        .get("sec-websocket-key")
        .map(|v| v.as_bytes().to_vec())
    else {
        return plain(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    if !is_upgrade || !version_ok {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)\n",
        );
    }
    let verdict = refusal(&state, key, req.uri().query());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => p,
            Err(_) => return tracing::error!("upgraded connection is not a TCP stream"),
        };
        let stream = parts.io.into_inner();
        let _ = stream.set_nodelay(true);
        match verdict {
            Ok(app) => start(state, app, stream, parts.read_buf).await,
            Err((code, reason)) => refuse(stream, code, &reason, &state.hub.metrics).await,
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header("sec-websocket-accept", accept_key(&client_key))
        .body(Full::new(Bytes::new()))
        .expect("static response parts are valid")
}

async fn refuse(mut stream: TcpStream, code: ErrorCode, reason: &str, metrics: &Metrics) {
    use tokio::io::AsyncWriteExt;
    Metrics::inc(&metrics.connections_refused);
    let mut out = frame::text(&messages::error(reason, Some(code.code()))).to_vec();
    out.extend_from_slice(&frame::close(code.code(), reason));
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}

async fn start(
    state: Arc<State>,
    app: Arc<crate::channels::App>,
    stream: TcpStream,
    pre_read: Bytes,
) {
    let cfg = &state.config.server;
    let metrics = state.hub.metrics.clone();
    let stream = Arc::new(stream);
    let conn = Arc::new(Conn::new(state.hub.node_id, cfg.outbound_queue));
    conn.attach(stream.clone());
    app.connections.fetch_add(1, Ordering::Relaxed);
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&metrics.connections_total);
    conn.send(frame::text(&messages::connection_established(
        &conn.socket_id,
        cfg.activity_timeout_secs,
    )));
    // Registered before the shutdown check, so a shutdown sweep cannot miss it.
    state.hub.register(&conn);
    if *state.shutdown.borrow() {
        conn.close(ErrorCode::ReconnectImmediately, "server shutting down");
    }
    let timeouts = connection::Timeouts {
        activity: Duration::from_secs(cfg.activity_timeout_secs),
        pong: Duration::from_secs(cfg.pong_timeout_secs),
        authorize: match app.config.authorized_connections_timeout_secs {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
    };
    let session = session::Session::new(app, conn.clone(), metrics);
    connection::run(stream, pre_read, session, timeouts, cfg.max_message_bytes).await;
    state.hub.unregister(conn.id);
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
