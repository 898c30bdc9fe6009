//! Shared by the adapter tests: a broker process of the test's own on a free port, the
//! adapter component started against it, and waits for readiness and a live round trip.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use switchyard::backplane::Backplane;
use switchyard::config::AdapterConfig;
use switchyard::plugin::{Delivery, Runtime, Supervised};
use tokio::sync::mpsc;

/// A broker binary and how to point it at a port.
pub struct Kind {
    pub bin: &'static str,
    pub args: fn(u16) -> Vec<String>,
}

pub const REDIS: Kind = Kind {
    bin: "redis-server",
    args: |p| redis_args(&["--port", &p.to_string()]),
};

/// redis-server with its plain port off and TLS on the given one (clients need no
/// certificate); the certificate files come as extra arguments (`Broker::start_with`).
pub const REDIS_TLS: Kind = Kind {
    bin: "redis-server",
    args: |p| {
        redis_args(&[
            "--port",
            "0",
            "--tls-port",
            &p.to_string(),
            "--tls-auth-clients",
            "no",
        ])
    },
};

/// A throwaway Redis on 127.0.0.1: nothing saved to disk.
fn redis_args(listen: &[&str]) -> Vec<String> {
    let fixed = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    listen.iter().chain(&fixed).map(|a| a.to_string()).collect()
}

pub const NATS: Kind = Kind {
    bin: "nats-server",
    args: |p| {
        ["-a", "127.0.0.1", "-p", &p.to_string()]
            .map(String::from)
            .to_vec()
    },
};

pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn start(kind: &Kind, port: u16) -> Self {
        Self::start_with(kind, port, &[]).await
    }

    /// Starts the broker on `port` with `extra` arguments (a config file, say).
    pub async fn start_with(kind: &Kind, port: u16, extra: &[&str]) -> Self {
        let mut child = Command::new(kind.bin)
            .args((kind.args)(port))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} must be installed for the adapter tests (apt-get install {}): {e}",
                    kind.bin, kind.bin
                )
            });
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self { child, port };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not start on port {port}", kind.bin);
    }

    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the `driver` component (built by scripts/build-guests) against the broker on
/// `port`, with `config` as its adapter config.
pub async fn start_adapter(
    driver: &str,
    port: u16,
    config: serde_json::Value,
) -> (Supervised, mpsc::Receiver<Delivery>) {
    let guests = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-adapters/target/wasm32-wasip2/release");
    assert!(
        guests.join(format!("{driver}.wasm")).exists(),
        "run scripts/build-guests first"
    );
    let cfg = AdapterConfig {
        driver: driver.into(),
        plugins_dir: guests,
        allow: vec![format!("127.0.0.1:{port}")],
        config,
        ..AdapterConfig::default()
    };
    let runtime = Runtime::new(None).unwrap();
    let (tx, rx) = mpsc::channel(8192);
    let (sup, _metrics) = runtime.start(&cfg, "n1", tx).unwrap();
    (sup, rx)
}

pub async fn until_ready(sup: &Supervised) {
    for _ in 0..500 {
        if sup.is_ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("adapter never became ready");
}

/// Publishes `probe` until it comes back, proving the subscription is live.
pub async fn round_trip(sup: &Supervised, rx: &mut mpsc::Receiver<Delivery>, topic: &str) {
    for _ in 0..200 {
        sup.publish(topic, Bytes::from_static(b"probe"));
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(25), rx.recv()).await {
            assert_eq!(d.topic, topic);
            while rx.try_recv().is_ok() {}
            return;
        }
    }
    panic!("no round trip through the broker on {topic}");
}

/// Nothing arrives for a while.
pub async fn silence(rx: &mut mpsc::Receiver<Delivery>) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected delivery on {:?}", d.topic);
    }
}
