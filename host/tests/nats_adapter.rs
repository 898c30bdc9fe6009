//! The NATS adapter component against a real `nats-server` that the test starts on a free
//! port: traffic both ways, binary payloads, topics that are not valid NATS tokens, the
//! server's max_payload, and recovery when the broker is killed and comes back.

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
        Self::start_with(port, &[]).await
    }

    /// Starts `nats-server` on `port` with `extra` arguments (a `-c` config file, say).
    async fn start_with(port: u16, extra: &[&str]) -> Self {
        let port_arg = port.to_string();
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed for the NATS adapter tests (apt-get install nats-server)");
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
        panic!("nats-server did not start on port {port}");
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
        guests.join("nats.wasm").exists(),
        "run scripts/build-guests first"
    );
    let cfg = AdapterConfig {
        driver: "nats".into(),
        plugins_dir: guests,
        allow: vec![format!("127.0.0.1:{port}")],
        config: serde_json::json!({"port": port, "prefix": "test.sy", "reconnect_initial_ms": 50, "reconnect_max_ms": 200}),
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
    panic!("no round trip through NATS on {topic}");
}

/// Nothing arrives for a while.
async fn silence(rx: &mut mpsc::Receiver<Delivery>) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected delivery on {:?}", d.topic);
    }
}

#[tokio::test]
async fn messages_flow_through_nats_in_order() {
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
    silence(&mut rx).await;
    sup.stop();
}

#[tokio::test]
async fn binary_payloads_and_topics_with_dots_and_stars_arrive_intact() {
    let broker = Broker::start(free_port()).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    // '.' separates NATS subject tokens and '*' is a wildcard; both must stay literal.
    let topic = "ch:app-id:private-chat.room*1";
    sup.subscribe(topic);
    round_trip(&sup, &mut rx, topic).await;
    // Every byte value, and text that looks like protocol frames.
    let payload: Vec<u8> = (0u8..=255)
        .chain(*b"\r\nMSG test.sy.x 1 3\r\nabc\r\nPING\r\n")
        .collect();
    sup.publish(topic, Bytes::from(payload.clone()));
    let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.topic.as_str(), &d.payload[..]), (topic, &payload[..]));
    // Were '*' a wildcard or '.' a separator, these would match the subscription.
    for near in [
        "ch:app-id:private-chat.room*2",
        "ch:app-id:private-chat.roomX1",
        "ch:app-id:private-chat",
    ] {
        sup.publish(near, Bytes::from_static(b"no"));
    }
    silence(&mut rx).await;
    // Unsubscribing stops delivery.
    sup.unsubscribe(topic);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sup.publish(topic, Bytes::from_static(b"gone"));
    silence(&mut rx).await;
    sup.stop();
}

#[tokio::test]
async fn publishes_over_the_server_max_payload_are_dropped_and_the_connection_stays() {
    let port = free_port();
    let conf = std::env::temp_dir().join(format!("switchyard-nats-{port}.conf"));
    std::fs::write(&conf, "max_payload: 1024\n").unwrap();
    let broker = Broker::start_with(port, &["-c", conf.to_str().unwrap()]).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    sup.subscribe("room");
    round_trip(&sup, &mut rx, "room").await;
    sup.publish("room", Bytes::from(vec![7u8; 2000]));
    sup.publish("room", Bytes::from(vec![8u8; 1024]));
    let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d.payload[..], &[8u8; 1024][..], "only the one that fits");
    assert!(
        sup.is_ready().await,
        "the server did not drop the connection"
    );
    silence(&mut rx).await;
    sup.stop();
    let _ = std::fs::remove_file(conf);
}

#[tokio::test]
async fn the_adapter_reconnects_and_resubscribes_after_a_broker_restart() {
    let broker = Broker::start(free_port()).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    sup.subscribe("room");
    sup.subscribe("node:2.x*");
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
    // Every topic was re-subscribed, not only the first.
    round_trip(&sup, &mut rx, "node:2.x*").await;
    sup.stop();
}
