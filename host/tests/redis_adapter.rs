//! The Redis adapter component against a real `redis-server` that the test starts on a free
//! port: traffic both ways, and recovery when the broker is killed and comes back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use switchyard::backplane::Backplane;
use switchyard::config::AdapterConfig;
use switchyard::plugin::{Delivery, Runtime, Supervised};
use tokio::sync::mpsc;

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    async fn start(port: u16) -> Self {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the Redis adapter tests (apt-get install redis-server)");
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
        panic!("redis-server did not start on port {port}");
    }

    fn kill(mut self) -> u16 {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_adapter(port: u16) -> (Supervised, mpsc::Receiver<Delivery>) {
    let guests = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-adapters/target/wasm32-wasip2/release");
    assert!(
        guests.join("redis.wasm").exists(),
        "run scripts/build-guests first"
    );
    let cfg = AdapterConfig {
        driver: "redis".into(),
        plugins_dir: guests,
        allow: vec![format!("127.0.0.1:{port}")],
        config: serde_json::json!({"port": port, "prefix": "test:", "reconnect_initial_ms": 50, "reconnect_max_ms": 200}),
        ..AdapterConfig::default()
    };
    let runtime = Runtime::new(None).unwrap();
    let (tx, rx) = mpsc::channel(8192);
    let (sup, _metrics) = runtime.start(&cfg, "n1", tx).unwrap();
    (sup, rx)
}

async fn until_ready(sup: &Supervised) {
    for _ in 0..500 {
        if sup.is_ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("adapter never became ready");
}

/// Publishes `probe` until it comes back, proving the subscription is live.
async fn round_trip(sup: &Supervised, rx: &mut mpsc::Receiver<Delivery>, topic: &str) {
    for _ in 0..200 {
        sup.publish(topic, Bytes::from_static(b"probe"));
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(25), rx.recv()).await {
            assert_eq!(d.topic, topic);
            while rx.try_recv().is_ok() {}
            return;
        }
    }
    panic!("no round trip through Redis on {topic}");
}

#[tokio::test]
async fn messages_flow_through_redis_in_order() {
    let broker = Broker::start(free_port()).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    sup.subscribe("room");
    round_trip(&sup, &mut rx, "room").await;
    for i in 0u32..3000 {
        sup.publish("room", Bytes::copy_from_slice(&i.to_be_bytes()));
        if i % 1000 == 999 {
            tokio::task::yield_now().await;
        }
    }
    for i in 0u32..3000 {
        let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.topic.as_str(), &d.payload[..]),
            ("room", &i.to_be_bytes()[..])
        );
    }
    // Not subscribed: nothing comes back.
    sup.publish("other", Bytes::from_static(b"x"));
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());
    sup.stop();
}

#[tokio::test]
async fn the_adapter_reconnects_and_resubscribes_after_a_broker_restart() {
    let broker = Broker::start(free_port()).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    sup.subscribe("room");
    round_trip(&sup, &mut rx, "room").await;
    let port = broker.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sup.is_ready().await, "not ready while the broker is down");
    let back = std::time::Instant::now();
    let _broker = Broker::start(port).await;
    round_trip(&sup, &mut rx, "room").await;
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "delivery back after {:?}",
        back.elapsed()
    );
    sup.stop();
}
