//! The Redis adapter component against a real `redis-server` that the test starts on a free
//! port: traffic both ways, and recovery when the broker is killed and comes back.

mod broker;

use std::time::Duration;

use broker::{free_port, round_trip, until_ready, Broker, REDIS};
use bytes::Bytes;
use switchyard::backplane::Backplane;
use switchyard::plugin::{Delivery, Supervised};
use tokio::sync::mpsc;

async fn start_adapter(port: u16) -> (Supervised, mpsc::Receiver<Delivery>) {
    broker::start_adapter("redis", port, serde_json::json!({"port": port, "prefix": "test:", "reconnect_initial_ms": 50, "reconnect_max_ms": 200})).await
}

#[tokio::test]
async fn messages_flow_through_redis_in_order() {
    let broker = Broker::start(&REDIS, free_port()).await;
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
    let broker = Broker::start(&REDIS, free_port()).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    sup.subscribe("room");
    round_trip(&sup, &mut rx, "room").await;
    let port = broker.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sup.is_ready().await, "not ready while the broker is down");
    let back = std::time::Instant::now();
    let _broker = Broker::start(&REDIS, port).await;
    round_trip(&sup, &mut rx, "room").await;
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "delivery back after {:?}",
        back.elapsed()
    );
    sup.stop();
}

#[path = "../examples/adapter_bench/bridge.rs"]
mod bridge;

/// The same adapter compiled for the host runs through the same runtime (what the adapter
/// benchmark compares the component against): host-owned sockets, allow-list, deliveries.
#[tokio::test]
async fn the_adapter_compiled_natively_runs_through_the_same_runtime() {
    let broker = Broker::start(&REDIS, free_port()).await;
    let cfg = switchyard::config::AdapterConfig {
        driver: "redis-native".into(),
        allow: vec![format!("127.0.0.1:{}", broker.port)],
        config: serde_json::json!({"port": broker.port, "prefix": "native:"}),
        ..Default::default()
    };
    let runtime = switchyard::plugin::Runtime::new(None).unwrap();
    let (tx, mut rx) = mpsc::channel(8192);
    let (sup, metrics) =
        runtime.start_native(bridge::factory::<redis_adapter::Redis>(), &cfg, "n1", tx);
    until_ready(&sup).await;
    sup.subscribe("room");
    round_trip(&sup, &mut rx, "room").await;
    for i in 0u32..2000 {
        sup.publish("room", Bytes::copy_from_slice(&i.to_be_bytes()));
    }
    for i in 0u32..2000 {
        let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&d.payload[..], &i.to_be_bytes()[..]);
    }
    assert!(
        metrics
            .deliveries
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2000
    );
    sup.stop();

    // The allow-list binds native code too: a port it does not list is refused.
    let cfg = switchyard::config::AdapterConfig {
        allow: vec!["127.0.0.1:1".into()],
        ..cfg
    };
    let (tx, _rx) = mpsc::channel(16);
    let (sup, metrics) =
        runtime.start_native(bridge::factory::<redis_adapter::Redis>(), &cfg, "n1", tx);
    for _ in 0..200 {
        if metrics
            .refused_connects
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics
            .refused_connects
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(!sup.is_ready().await);
    sup.stop();
}
