//! End-to-end tests of the server in process, through a real WebSocket client and raw HTTP.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn publish_reaches_subscribers_except_the_excluded_socket() {
    let srv = start_server(|_| {}).await;
    let (mut a, a_id) = connect(srv.addr, "app-key").await;
    let (mut b, _) = connect(srv.addr, "app-key").await;
    for ws in [&mut a, &mut b] {
        send(
            ws,
            json!({"event":"pusher:subscribe","data":{"channel":"news"}}),
        )
        .await;
        let ok = next_event(ws, "pusher_internal:subscription_succeeded").await;
        assert_eq!(ok["channel"], "news");
    }
    let body =
        json!({"name":"flash","channel":"news","data":"{\"n\":1}","socket_id":a_id}).to_string();
    let (status, resp) = api(srv.addr, "POST", "/apps/app-id/events", &body).await;
    assert_eq!((status, resp), (200, json!({})));
    let ev = next_event(&mut b, "flash").await;
    assert_eq!(ev["data"], "{\"n\":1}");
    assert_eq!(ev["channel"], "news");
    // a was excluded: the next thing it sees is its own pong.
    send(&mut a, json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(next_json(&mut a).await["event"], "pusher:pong");
    srv.shutdown().await;
}

#[tokio::test]
async fn private_subscription_checks_the_signature() {
    let srv = start_server(|_| {}).await;
    let (mut ws, sid) = connect(srv.addr, "app-key").await;
    let forged = format!("app-key:{}", sign("wrong", &format!("{sid}:private-a")));
    send(
        &mut ws,
        json!({"event":"pusher:subscribe","data":{"channel":"private-a","auth":forged}}),
    )
    .await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["event"], "pusher:subscription_error");
    assert_eq!(err["data"]["status"], 401);
    let good = format!(
        "app-key:{}",
        sign("app-secret", &format!("{sid}:private-a"))
    );
    send(
        &mut ws,
        json!({"event":"pusher:subscribe","data":{"channel":"private-a","auth":good}}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn presence_roster_and_member_events() {
    let srv = start_server(|_| {}).await;
    let join = |sid: &str, user: &str| {
        let data = json!({"user_id": user, "user_info": {"n": user}}).to_string();
        let auth = format!(
            "app-key:{}",
            sign("app-secret", &format!("{sid}:presence-r:{data}"))
        );
        json!({"event":"pusher:subscribe","data":{"channel":"presence-r","auth":auth,"channel_data":data}})
    };
    let (mut a, a_sid) = connect(srv.addr, "app-key").await;
    send(&mut a, join(&a_sid, "ann")).await;
    next_event(&mut a, "pusher_internal:subscription_succeeded").await;
    let (mut b, b_sid) = connect(srv.addr, "app-key").await;
    send(&mut b, join(&b_sid, "bob")).await;
    let ok = next_event(&mut b, "pusher_internal:subscription_succeeded").await;
    let roster: serde_json::Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
    assert_eq!(roster["presence"]["count"], 2);
    assert_eq!(roster["presence"]["hash"]["ann"], json!({"n": "ann"}));
    let added = next_event(&mut a, "pusher_internal:member_added").await;
    let added: serde_json::Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(added, json!({"user_id":"bob","user_info":{"n":"bob"}}));
    let (status, users) = api(
        srv.addr,
        "GET",
        "/apps/app-id/channels/presence-r/users",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    b.close(None).await.unwrap();
    let removed = next_event(&mut a, "pusher_internal:member_removed").await;
    assert_eq!(removed["data"], "{\"user_id\":\"bob\"}");
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_server_keeps_serving() {
    let srv = start_server(|c| c.server.max_message_bytes = 1024).await;
    let (mut bystander, _) = connect(srv.addr, "app-key").await;
    send(
        &mut bystander,
        json!({"event":"pusher:subscribe","data":{"channel":"calm"}}),
    )
    .await;
    next_event(&mut bystander, "pusher_internal:subscription_succeeded").await;

    let (mut ws, _) = connect(srv.addr, "app-key").await;
    ws.send(Message::text("{oops")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["event"], "pusher:error");
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut ws).await["event"], "pusher:error");
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a 1009 close, got {other:?}"),
    }

    let (status, _) = api(
        srv.addr,
        "POST",
        "/apps/app-id/events",
        &json!({"name":"e","channel":"calm","data":"ok"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_event(&mut bystander, "e").await["data"], "ok");
    srv.shutdown().await;
}

#[tokio::test]
async fn http_errors_have_statuses_and_json_bodies() {
    let srv = start_server(|_| {}).await;
    let (s, body) = api(srv.addr, "POST", "/apps/app-id/events", "{nope").await;
    assert_eq!(s, 400);
    assert!(body["error"].is_string());
    let big = json!({"name":"e","channel":"c","data":"x".repeat(10_241)}).to_string();
    assert_eq!(
        api(srv.addr, "POST", "/apps/app-id/events", &big).await.0,
        413
    );
    let (s, body) = raw_http(srv.addr, b"POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
    assert_eq!(s, 401);
    assert!(body["error"].as_str().unwrap().contains("auth_key"));
    let (s, _) = api(srv.addr, "GET", "/apps/app-id/channels?info=user_count", "").await;
    assert_eq!(s, 400);
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_4200() {
    let srv = start_server(|_| {}).await;
    let (mut ws, _) = connect(srv.addr, "app-key").await;
    let stopping = tokio::spawn(srv.shutdown());
    let err = next_json(&mut ws).await;
    assert_eq!(err["event"], "pusher:error");
    assert_eq!(err["data"]["code"], 4200);
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4200),
        other => panic!("expected a 4200 close, got {other:?}"),
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn metrics_count_connections_and_messages() {
    let srv = start_server(|_| {}).await;
    let (mut ws, _) = connect(srv.addr, "app-key").await;
    send(&mut ws, json!({"event":"pusher:ping","data":{}})).await;
    next_event(&mut ws, "pusher:pong").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).await.unwrap();
    assert!(text.contains("\nswitchyard_connections 1\n"), "{text}");
    assert!(
        text.contains("\nswitchyard_ws_messages_received_total 1\n"),
        "{text}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_configured_adapter_is_loaded_and_reported_by_up_and_metrics() {
    let guests = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-adapters/target/wasm32-wasip2/release");
    assert!(
        guests.join("loopback.wasm").exists(),
        "run scripts/build-guests first"
    );
    let cache = std::env::temp_dir().join(format!("switchyard-up-cache-{}", std::process::id()));
    let srv = start_server(|c| {
        c.adapter.driver = "loopback".into();
        c.adapter.plugins_dir = guests.clone();
        c.adapter.cache_dir = Some(cache.clone());
    })
    .await;
    let mut state = String::new();
    for _ in 0..200 {
        let (s, body) = raw_http(
            srv.addr,
            b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(body["adapter"], "loopback");
        state = body["adapter_state"].as_str().unwrap().to_owned();
        if state == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state, "running");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).await.unwrap();
    assert!(
        text.contains("switchyard_adapter_state{adapter=\"loopback\"} 2"),
        "{text}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_missing_adapter_stops_start_up_with_a_clear_error() {
    let mut cfg = switchyard::config::Config::default();
    cfg.server.port = 0;
    cfg.adapter.driver = "no-such-adapter".into();
    cfg.adapter.plugins_dir = std::env::temp_dir();
    let server = switchyard::server::Server::bind(cfg).await.unwrap();
    let err = server.run(std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("no-such-adapter.wasm"), "{err}");
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let srv = start_server(|c| c.apps[0].limits.max_subscriptions_per_connection = 2).await;
    let (mut ws, _) = connect(srv.addr, "app-key").await;
    for ch in ["a", "b", "a"] {
        send(
            &mut ws,
            json!({"event":"pusher:subscribe","data":{"channel":ch}}),
        )
        .await;
        let ok = next_json(&mut ws).await;
        assert_eq!(
            ok["event"], "pusher_internal:subscription_succeeded",
            "{ch}"
        );
    }
    send(
        &mut ws,
        json!({"event":"pusher:subscribe","data":{"channel":"c"}}),
    )
    .await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["event"], "pusher:subscription_error");
    assert_eq!(err["data"]["status"], 403);
    send(
        &mut ws,
        json!({"event":"pusher:unsubscribe","data":{"channel":"a"}}),
    )
    .await;
    send(
        &mut ws,
        json!({"event":"pusher:subscribe","data":{"channel":"c"}}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    srv.shutdown().await;
}
