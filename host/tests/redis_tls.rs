//! The Redis adapter over TLS: a `redis-server` of the test's own serving TLS only, with a
//! certificate from a CA the test makes with `openssl`. Trusted through `adapter.tls_ca_file`,
//! traffic flows; an unknown issuer or a certificate for another name fails the handshake,
//! which the adapter's log says, and the adapter never becomes ready.

mod broker;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use broker::{free_port, round_trip, until_ready, Broker, REDIS_TLS};
use switchyard::backplane::Backplane;
use switchyard::config::AdapterConfig;
use switchyard::plugin::{Delivery, Runtime, Supervised};
use tokio::sync::mpsc;

/// A CA and a server certificate for `ip` signed by it, in a fresh folder.
fn certificates(ip: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-redis-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl must be installed for the TLS tests: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=IP:{ip}\n")).unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=switchyard test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
    dir
}

/// A TLS-only broker with a certificate for `ip` from a test CA; its certificate folder goes
/// with it.
struct TlsBroker {
    certs: PathBuf,
    broker: Broker,
}

impl TlsBroker {
    async fn start(ip: &str) -> Self {
        captured_log();
        let certs = certificates(ip);
        let file = |name: &str| certs.join(name).display().to_string();
        let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
        let broker = Broker::start_with(
            &REDIS_TLS,
            free_port(),
            &[
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
            ],
        )
        .await;
        Self { certs, broker }
    }

    /// An adapter connected to it, trusting the test CA or only the built-in roots.
    fn adapter(&self, trust_ca: bool) -> (Supervised, mpsc::Receiver<Delivery>) {
        start_adapter(
            self.broker.port,
            trust_ca.then(|| self.certs.join("ca.crt")),
        )
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

fn start_adapter(port: u16, ca_file: Option<PathBuf>) -> (Supervised, mpsc::Receiver<Delivery>) {
    let cfg = AdapterConfig {
        driver: "redis".into(),
        plugins_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-adapters/target/wasm32-wasip2/release"),
        allow: vec![format!("127.0.0.1:{port}")],
        tls_ca_file: ca_file,
        config: serde_json::json!({
            "host": "127.0.0.1",
            "port": port,
            "tls": true,
            "prefix": "tls:",
            "reconnect_initial_ms": 50,
            "reconnect_max_ms": 200,
        }),
        ..AdapterConfig::default()
    };
    let (tx, rx) = mpsc::channel(4096);
    let (sup, _metrics) = Runtime::new(None)
        .unwrap()
        .start(&cfg, "node-1", tx)
        .expect("run scripts/build-guests first");
    (sup, rx)
}

/// Everything logged in this test binary (the adapters' logs reach `tracing`).
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until the log holds `needle`.
async fn logged(needle: &str) {
    let log = captured_log();
    for _ in 0..300 {
        if String::from_utf8_lossy(&log.lock().unwrap()).contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never logged {needle:?}");
}

#[tokio::test]
async fn messages_flow_over_tls_to_a_broker_with_a_private_ca() {
    let broker = TlsBroker::start("127.0.0.1").await;
    let (sup, mut rx) = broker.adapter(true);
    until_ready(&sup).await;
    sup.subscribe("room");
    round_trip(&sup, &mut rx, "room").await;
    sup.stop();
}

#[tokio::test]
async fn an_untrusted_broker_certificate_keeps_the_adapter_down() {
    let broker = TlsBroker::start("127.0.0.1").await;
    // Only the built-in roots: the test CA is not among them.
    let (sup, _rx) = broker.adapter(false);
    logged("TLS handshake failed: invalid peer certificate: UnknownIssuer").await;
    assert!(!sup.is_ready().await, "ready without trusting the broker");
    sup.stop();
}

#[tokio::test]
async fn a_certificate_for_another_name_keeps_the_adapter_down() {
    // Issued by the trusted CA, but for 127.0.0.2 while the adapter connects to 127.0.0.1.
    let broker = TlsBroker::start("127.0.0.2").await;
    let (sup, _rx) = broker.adapter(true);
    logged("certificate not valid for name \"127.0.0.1\"").await;
    assert!(
        !sup.is_ready().await,
        "ready with a certificate for another name"
    );
    sup.stop();
}

/// What an adapter publishes just before it is stopped still reaches the broker: an
/// encrypted connection writes only from its socket task, and closing it waits for what is
/// queued (and ends the session) instead of cutting it.
#[tokio::test]
async fn publishes_just_before_a_stop_still_go_out() {
    let broker = TlsBroker::start("127.0.0.1").await;
    let (listener, mut rx) = broker.adapter(true);
    until_ready(&listener).await;
    listener.subscribe("room");
    round_trip(&listener, &mut rx, "room").await;
    let (publisher, _) = broker.adapter(true);
    until_ready(&publisher).await;
    for i in 0u32..2000 {
        publisher.publish("room", bytes::Bytes::copy_from_slice(&i.to_be_bytes()));
    }
    publisher.stop();
    let mut next = 0u32;
    while next < 2000 {
        let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {next} of 2000 arrived; log:\n{}",
                    String::from_utf8_lossy(&captured_log().lock().unwrap())
                )
            })
            .unwrap();
        if d.payload.len() == 4 {
            assert_eq!(&d.payload[..], &next.to_be_bytes()[..]);
            next += 1;
        }
    }
    listener.stop();
}
