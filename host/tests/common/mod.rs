//! Shared helpers for integration tests: an in-process server on a free port, a real
//! WebSocket client, and signed HTTP API calls.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchyard::config::Config;
use switchyard::server::Server;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), switchyard::server::StartError>>,
}

impl TestServer {
    /// Stops the server as SIGTERM would and waits for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().expect("once").send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.done)
            .await
            .expect("server stopped in time")
            .expect("server task did not panic")
            .expect("server ran");
    }
}

/// Starts the server with the default app on 127.0.0.1 and a free port.
pub async fn start_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut cfg = Config::default();
    cfg.server.port = 0;
    cfg.webhooks.leave_delay_ms = 0;
    tweak(&mut cfg);
    cfg.validate("test").expect("valid test config");
    let server = Server::bind(cfg).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        stop: Some(tx),
        done,
    }
}

/// Connects as pusher-js would and returns the socket and its socket id.
pub async fn connect(addr: SocketAddr, key: &str) -> (Ws, String) {
    let url = format!("ws://{addr}/app/{key}?protocol=7&client=rust&version=1.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let first = next_json(&mut ws).await;
    assert_eq!(first["event"], "pusher:connection_established");
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    (ws, data["socket_id"].as_str().unwrap().to_owned())
}

/// The next text message as JSON, failing after two seconds.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Waits for the next message with `event`, skipping others.
pub async fn next_event(ws: &mut Ws, event: &str) -> Value {
    loop {
        let m = next_json(ws).await;
        if m["event"] == event {
            return m;
        }
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

pub fn sign(secret: &str, msg: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A signed HTTP API call with a hand-rolled HTTP/1.1 client (one request per connection).
pub async fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    use md5::Digest;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut params = vec![
        ("auth_key".to_string(), "app-key".to_string()),
        ("auth_timestamp".to_string(), ts.to_string()),
        ("auth_version".to_string(), "1.0".to_string()),
    ];
    if !body.is_empty() {
        params.push((
            "body_md5".into(),
            hex::encode(md5::Md5::digest(body.as_bytes())),
        ));
    }
    let (path_only, extra) = path.split_once('?').unwrap_or((path, ""));
    for kv in extra.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        params.push((k.into(), v.into()));
    }
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = query.join("&");
    let sig = sign("app-secret", &format!("{method}\n{path_only}\n{query}"));
    let req = format!(
        "{method} {path_only}?{query}&auth_signature={sig} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_http(addr, req.as_bytes()).await
}

/// Sends raw bytes and parses a `Connection: close` HTTP response.
pub async fn raw_http(addr: SocketAddr, req: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
