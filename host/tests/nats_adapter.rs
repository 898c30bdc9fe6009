//! The NATS adapter component against a real `nats-server` that the test starts on a free
//! port: traffic both ways, binary payloads, topics that are not valid NATS tokens, the
//! server's max_payload, and recovery when the broker is killed and comes back.

mod broker;

use std::time::Duration;

use broker::{free_port, round_trip, silence, until_ready, Broker, NATS};
use bytes::Bytes;
use switchyard::backplane::Backplane;
use switchyard::plugin::{Delivery, Supervised};
use tokio::sync::mpsc;

async fn start_adapter(port: u16) -> (Supervised, mpsc::Receiver<Delivery>) {
    broker::start_adapter("nats", port, serde_json::json!({"port": port, "prefix": "test.sy", "reconnect_initial_ms": 50, "reconnect_max_ms": 200})).await
}

#[tokio::test]
async fn messages_flow_through_nats_in_order() {
    let broker = Broker::start(&NATS, free_port()).await;
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
    let broker = Broker::start(&NATS, free_port()).await;
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
    let broker = Broker::start_with(&NATS, port, &["-c", conf.to_str().unwrap()]).await;
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
    let broker = Broker::start(&NATS, free_port()).await;
    let (sup, mut rx) = start_adapter(broker.port).await;
    until_ready(&sup).await;
    sup.subscribe("room");
    sup.subscribe("node:2.x*");
    round_trip(&sup, &mut rx, "room").await;
    let port = broker.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sup.is_ready().await, "not ready while the broker is down");
    let back = std::time::Instant::now();
    let _broker = Broker::start(&NATS, port).await;
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
