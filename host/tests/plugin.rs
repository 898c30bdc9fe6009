//! The plugin runtime against real components: the loopback adapter for traffic, and the
//! fixture adapter for every sandbox limit (obeyed and violated) and for supervision.
//! Guests are built once by `scripts/build-guests` (part of `scripts/test`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard::backplane::{Backplane, BackplaneStatus};
use switchyard::config::{AdapterConfig, RestartPolicy, SandboxLimits};
use switchyard::plugin::{AdapterMetrics, Delivery, LoadError, Runtime, Supervised};
use tokio::sync::mpsc;

fn guest(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_GUEST_DIR").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../guest-adapters/target/wasm32-wasip2/release")
        },
        PathBuf::from,
    );
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests first",
        path.display()
    );
    path
}

/// A plugins folder holding a copy of the named guests.
fn plugins_dir(names: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-plugins-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for n in names {
        std::fs::copy(guest(n), dir.join(format!("{n}.wasm"))).unwrap();
    }
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn config(driver: &str) -> AdapterConfig {
    AdapterConfig {
        driver: driver.into(),
        plugins_dir: plugins_dir(&[driver]),
        cache_dir: None,
        allow: Vec::new(),
        tls_ca_file: None,
        config: serde_json::json!({}),
        limits: SandboxLimits {
            memory_bytes: 16 << 20,
            call_deadline_ms: 50,
            max_sockets: 2,
            max_timers: 3,
            max_call_bytes: 4096,
            ..SandboxLimits::default()
        },
        restart: RestartPolicy {
            max_failures: 3,
            window_secs: 60,
            backoff_initial_ms: 10,
            backoff_max_ms: 50,
        },
    }
}

struct Running {
    sup: Supervised,
    metrics: Arc<AdapterMetrics>,
    rx: mpsc::Receiver<Delivery>,
}

async fn start_with(cfg: AdapterConfig, queue: usize) -> Running {
    let runtime = Runtime::new(None).unwrap();
    let (tx, rx) = mpsc::channel(queue);
    let (sup, metrics) = runtime.start(&cfg, "node-1", tx).expect("adapter loads");
    let r = Running { sup, metrics, rx };
    wait_status(&r, |s| *s == BackplaneStatus::Running).await;
    r
}

async fn start(cfg: AdapterConfig) -> Running {
    start_with(cfg, 1024).await
}

async fn wait_status(r: &Running, want: impl Fn(&BackplaneStatus) -> bool) -> BackplaneStatus {
    for _ in 0..500 {
        let s = r.sup.status();
        if want(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("status never matched; last {:?}", r.sup.status());
}

async fn next(r: &mut Running, topic: &str) -> Delivery {
    loop {
        let d = tokio::time::timeout(Duration::from_secs(5), r.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no delivery on {topic}"))
            .expect("delivery channel open");
        if d.topic == topic {
            return d;
        }
    }
}

async fn nothing_on(r: &mut Running, topic: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, r.rx.recv()).await {
        assert_ne!(d.topic, topic, "unexpected delivery on {topic}");
    }
}

fn cmd(r: &Running, c: &str) {
    r.sup
        .publish("fixture/cmd", Bytes::copy_from_slice(c.as_bytes()));
}

/// Waits until the counter reaches `n`.
async fn counter_reaches(c: &std::sync::atomic::AtomicU64, n: u64) {
    for _ in 0..500 {
        if c.load(Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("counter stuck at {}", c.load(Ordering::Relaxed));
}

#[tokio::test]
async fn loopback_carries_subscribed_topics_in_order() {
    // The node's delivery queue holds the whole burst; a smaller one would drop (and count).
    let mut r = start_with(config("loopback"), 4096).await;
    r.sup.subscribe("room");
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0u32..2000 {
        r.sup
            .publish("room", Bytes::copy_from_slice(&i.to_le_bytes()));
    }
    r.sup.publish("elsewhere", Bytes::from_static(b"x"));
    for i in 0u32..2000 {
        let d = next(&mut r, "room").await;
        assert_eq!(d.payload, Bytes::copy_from_slice(&i.to_le_bytes()));
    }
    nothing_on(&mut r, "elsewhere").await;
    r.sup.unsubscribe("room");
    tokio::time::sleep(Duration::from_millis(20)).await;
    r.sup.publish("room", Bytes::from_static(b"late"));
    nothing_on(&mut r, "room").await;
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn cpu_deadline_ends_an_endless_loop_and_subscriptions_are_replayed() {
    let mut r = start(config("fixture")).await;
    r.sup.subscribe("keep");
    cmd(&r, "report-subs");
    assert_eq!(next(&mut r, "fixture/subs").await.payload, "keep");
    cmd(&r, "spin");
    counter_reaches(&r.metrics.restarts, 1).await;
    wait_status(&r, |s| *s == BackplaneStatus::Running).await;
    cmd(&r, "report-subs");
    assert_eq!(
        next(&mut r, "fixture/subs").await.payload,
        "keep",
        "replayed into the new incarnation"
    );
    r.sup.publish("keep", Bytes::from_static(b"after"));
    assert_eq!(next(&mut r, "keep").await.payload, "after");
}

#[tokio::test]
async fn memory_limit_obeyed_and_violated() {
    let mut r = start(config("fixture")).await;
    r.sup.subscribe("t");
    cmd(&r, "alloc-once:4194304");
    r.sup.publish("t", Bytes::from_static(b"alive"));
    assert_eq!(
        next(&mut r, "t").await.payload,
        "alive",
        "4 MiB fits in 16 MiB"
    );
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 0);
    cmd(&r, "alloc");
    counter_reaches(&r.metrics.restarts, 1).await;
    wait_status(&r, |s| *s == BackplaneStatus::Running).await;
    r.sup.publish("t", Bytes::from_static(b"again"));
    assert_eq!(next(&mut r, "t").await.payload, "again");
}

#[tokio::test]
async fn a_panic_restarts_only_that_incarnation() {
    let mut r = start(config("fixture")).await;
    r.sup.subscribe("t");
    cmd(&r, "panic");
    counter_reaches(&r.metrics.restarts, 1).await;
    wait_status(&r, |s| *s == BackplaneStatus::Running).await;
    r.sup.publish("t", Bytes::from_static(b"ok"));
    assert_eq!(next(&mut r, "t").await.payload, "ok");
}

#[tokio::test]
async fn allow_list_and_socket_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = config("fixture");
    cfg.allow = vec![format!("127.0.0.1:{port}")];
    let mut r = start(cfg).await;

    // Allowed: the host connects, the guest hears of it, and bytes flow both ways.
    cmd(&r, &format!("connect:127.0.0.1:{port}"));
    let (mut peer, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let conn = u32::from_le_bytes(
        next(&mut r, "fixture/connected").await.payload[..4]
            .try_into()
            .unwrap(),
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    peer.write_all(b"hello guest").await.unwrap();
    assert_eq!(
        next(&mut r, &format!("fixture/data/{conn}")).await.payload,
        "hello guest"
    );
    cmd(&r, &format!("send:{conn}:hello broker"));
    let mut buf = [0u8; 12];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello broker");
    // Over the bytes-per-call limit (4096), or on a handle that is not open: refused, and
    // nothing reaches the socket; the next send does.
    cmd(&r, &format!("send:{conn}:{}", "x".repeat(5000)));
    counter_reaches(&r.metrics.adapter_errors, 1).await;
    cmd(&r, &format!("send:{}:lost", conn + 1000));
    counter_reaches(&r.metrics.adapter_errors, 2).await;
    cmd(&r, &format!("send:{conn}:after"));
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");
    drop(peer);
    next(&mut r, &format!("fixture/closed/{conn}")).await;

    // Forbidden: refused by the host, counted, and the instance lives on.
    cmd(&r, &format!("connect:127.0.0.1:{}", port.wrapping_add(1)));
    counter_reaches(&r.metrics.refused_connects, 1).await;
    counter_reaches(&r.metrics.adapter_errors, 3).await;

    // Socket limit (2): the third open connection is refused.
    for _ in 0..3 {
        cmd(&r, &format!("connect:127.0.0.1:{port}"));
    }
    counter_reaches(&r.metrics.adapter_errors, 4).await;
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 0);
}

/// `connect(.., tls: true)`: a name that cannot be a TLS server name is refused at once; a
/// peer that does not speak TLS ends in `on-closed` saying the handshake failed.
#[tokio::test]
async fn tls_connections_fail_with_a_reason() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = config("fixture");
    cfg.allow = vec![format!("127.0.0.1:{port}"), "bad name:1".into()];
    let mut r = start(cfg).await;
    cmd(&r, "connect-tls:bad name:1");
    counter_reaches(&r.metrics.adapter_errors, 1).await;
    assert_eq!(r.metrics.refused_connects.load(Ordering::Relaxed), 0);

    cmd(&r, &format!("connect-tls:127.0.0.1:{port}"));
    let (mut peer, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    peer.write_all(b"-ERR this is not TLS\r\n").await.unwrap();
    // The first socket id of a fresh instance is 1.
    let closed = next(&mut r, "fixture/closed/1").await;
    let why = String::from_utf8_lossy(&closed.payload).to_string();
    assert!(why.starts_with("TLS handshake failed"), "{why}");
    nothing_on(&mut r, "fixture/connected").await;
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn timer_limit_obeyed_and_violated() {
    let mut r = start(config("fixture")).await;
    cmd(&r, "timers:3");
    for _ in 0..3 {
        next(&mut r, "fixture/timer").await;
    }
    assert_eq!(r.metrics.adapter_errors.load(Ordering::Relaxed), 0);
    cmd(&r, "timers:4");
    counter_reaches(&r.metrics.adapter_errors, 1).await;
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn bytes_per_call_limit_obeyed_and_violated() {
    let mut r = start(config("fixture")).await;
    cmd(&r, "deliver-big:4000");
    assert_eq!(next(&mut r, "fixture/big").await.payload.len(), 4000);
    cmd(&r, "deliver-big:100000");
    counter_reaches(&r.metrics.adapter_errors, 1).await;
    counter_reaches(&r.metrics.deliveries_dropped, 1).await;
    nothing_on(&mut r, "fixture/big").await;
}

/// `deliver-batch`: many messages in one call arrive in order; each is held to the per-call
/// byte bound as `deliver` holds one, so an oversized message is dropped and counted while the
/// rest of its batch arrives, and a batch bigger than the bound as a whole loses nothing.
#[tokio::test]
async fn batched_deliveries_keep_order_and_bound_each_message() {
    let mut r = start(config("fixture")).await;
    // 100 × (100 B + a 13 B topic) is 11 KB, over the fixture config's 4096-byte bound.
    cmd(&r, "deliver-batch:100:100");
    for i in 0u32..100 {
        let d = next(&mut r, "fixture/batch").await;
        assert_eq!(d.payload.len(), 100);
        assert_eq!(d.payload[..4], i.to_le_bytes());
    }
    // The middle one of five is 5000 B: dropped, counted, reported; its neighbours arrive.
    cmd(&r, "deliver-batch:5:10:5000");
    for i in [0u32, 1, 3, 4] {
        assert_eq!(
            next(&mut r, "fixture/batch").await.payload[..4],
            i.to_le_bytes()
        );
    }
    counter_reaches(&r.metrics.deliveries_dropped, 1).await;
    counter_reaches(&r.metrics.adapter_errors, 1).await;
    nothing_on(&mut r, "fixture/batch").await;
}

/// A batch larger than the node's delivery queue: what fits is delivered, the rest dropped and
/// counted, and the instance keeps serving.
#[tokio::test]
async fn a_batched_flood_is_bounded_and_counted() {
    let mut r = start_with(config("fixture"), 16).await;
    cmd(&r, "deliver-batch:100:8");
    counter_reaches(&r.metrics.deliveries_dropped, 84).await;
    let mut got = 0;
    while r.rx.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 16);
    r.sup.subscribe("t");
    r.sup.publish("t", Bytes::from_static(b"fine"));
    assert_eq!(next(&mut r, "t").await.payload, "fine");
}

#[tokio::test]
async fn a_delivery_flood_is_bounded_and_counted() {
    let mut r = start_with(config("fixture"), 16).await;
    cmd(&r, "flood:100000");
    counter_reaches(&r.metrics.deliveries_dropped, 1).await;
    // The host stayed in charge: the queue holds at most its bound, the instance is alive.
    let mut got = 0;
    while r.rx.try_recv().is_ok() {
        got += 1;
    }
    assert!(got <= 16, "{got}");
    r.sup.subscribe("t");
    r.sup.publish("t", Bytes::from_static(b"fine"));
    assert_eq!(next(&mut r, "t").await.payload, "fine");
}

/// Starts the fixture with a config that makes every incarnation fail, and waits until the
/// supervisor gives up.
async fn start_failing(mode: &str) -> (Running, BackplaneStatus) {
    let mut cfg = config("fixture");
    cfg.config = serde_json::json!({ "mode": mode });
    let runtime = Runtime::new(None).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (sup, metrics) = runtime.start(&cfg, "n", tx).unwrap();
    let r = Running { sup, metrics, rx };
    let s = wait_status(&r, |s| matches!(s, BackplaneStatus::Failed(_))).await;
    (r, s)
}

#[tokio::test]
async fn a_crash_loop_ends_in_the_failed_state() {
    let (r, s) = start_failing("panic-on-init").await;
    assert!(
        matches!(s, BackplaneStatus::Failed(ref why) if why.contains("3 failures")),
        "{s:?}"
    );
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 3);
    // Publishing to a failed adapter neither blocks nor panics; it is counted.
    r.sup.publish("t", Bytes::from_static(b"x"));
    assert_eq!(r.metrics.publish_dropped.load(Ordering::Relaxed), 1);
}

/// Every publish is handed to a guest or counted as dropped: refused by a full outbox, or
/// left waiting in the outbox of an incarnation that ended.
#[tokio::test]
async fn publishes_are_handed_over_or_counted_when_an_incarnation_dies() {
    let mut cfg = config("fixture");
    cfg.limits.queue = 4;
    let mut r = start(cfg).await;
    let before = r.metrics.publishes.load(Ordering::Relaxed);
    cmd(&r, "spin");
    // Published while the guest spins: four wait in the outbox, the rest are refused.
    next(&mut r, "fixture/spinning").await;
    for i in 0..50 {
        r.sup.publish("t", Bytes::from(format!("{i}")));
    }
    // The spin ends in a missed deadline and a restart.
    counter_reaches(&r.metrics.restarts, 1).await;
    let handed = r.metrics.publishes.load(Ordering::Relaxed) - before;
    let dropped = r.metrics.publish_dropped.load(Ordering::Relaxed);
    assert_eq!((handed, dropped), (1, 50));
}

#[tokio::test]
async fn a_rejected_config_fails_at_once() {
    let (r, s) = start_failing("bad-config").await;
    assert!(
        matches!(s, BackplaneStatus::Failed(ref why) if why.contains("config")),
        "{s:?}"
    );
    assert_eq!(r.metrics.restarts.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_misbehaving_instance_does_not_disturb_another() {
    let mut bad_cfg = config("fixture");
    bad_cfg.restart.max_failures = 10;
    let bad = start(bad_cfg).await;
    let mut good = start(config("loopback")).await;
    good.sup.subscribe("g");
    tokio::time::sleep(Duration::from_millis(20)).await;
    for round in 0..3u8 {
        cmd(&bad, "spin");
        for i in 0..50u8 {
            good.sup.publish("g", Bytes::copy_from_slice(&[round, i]));
        }
        for i in 0..50u8 {
            assert_eq!(
                next(&mut good, "g").await.payload,
                Bytes::copy_from_slice(&[round, i])
            );
        }
        counter_reaches(&bad.metrics.restarts, round as u64 + 1).await;
        wait_status(&bad, |s| *s == BackplaneStatus::Running).await;
    }
    assert_eq!(good.metrics.restarts.load(Ordering::Relaxed), 0);
}

#[test]
fn check_accepts_adapters_and_names_the_file_when_refusing() {
    let runtime = Runtime::new(None).unwrap();
    let ok = runtime
        .check(&guest("fixture"))
        .expect("fixture is an adapter");
    assert_eq!(ok.version, "0.1.0");
    let dir = plugins_dir(&[]);
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0garbage").unwrap();
    let err = runtime.check(&junk).unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err}");
    assert!(err.to_string().contains("junk.wasm"));
    let missing = runtime.check(&dir.join("missing.wasm")).unwrap_err();
    assert!(matches!(missing, LoadError::Read { .. }));
    assert!(missing.to_string().contains("missing.wasm"));
}

#[test]
fn compiled_components_are_cached_and_a_bad_cache_entry_is_recompiled() {
    let cache = plugins_dir(&[]).join("cache");
    let path = guest("loopback");
    let first = Runtime::new(Some(cache.clone()))
        .unwrap()
        .load(&path)
        .unwrap();
    assert!(!first.from_cache);
    let t = std::time::Instant::now();
    let second = Runtime::new(Some(cache.clone()))
        .unwrap()
        .load(&path)
        .unwrap();
    assert!(second.from_cache);
    eprintln!("warm-cache load took {:?}", t.elapsed());
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"corrupt").unwrap();
    }
    let third = Runtime::new(Some(cache)).unwrap().load(&path).unwrap();
    assert!(
        !third.from_cache,
        "a corrupt entry is discarded and the component recompiled"
    );
}

#[test]
fn the_cli_checks_a_plugin() {
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let out = std::process::Command::new(bin)
        .args(["plugin", "check"])
        .arg(guest("loopback"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("switchyard:adapter@0.1.0"));
    let junk = plugins_dir(&[]).join("not-wasm.wasm");
    std::fs::write(&junk, b"hello").unwrap();
    let out = std::process::Command::new(bin)
        .args(["plugin", "check"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not-wasm.wasm"));
}

#[path = "../examples/adapter_bench/bridge.rs"]
mod bridge;

/// Native adapters get the same supervision: a panic ends only that incarnation, a fresh one
/// starts with the subscriptions replayed.
#[tokio::test]
async fn a_native_adapter_that_panics_is_restarted_with_its_subscriptions() {
    let runtime = Runtime::new(None).unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let cfg = AdapterConfig {
        driver: "fixture-native".into(),
        ..config("fixture")
    };
    let (sup, metrics) = runtime.start_native(
        bridge::factory::<fixture_adapter::Fixture>(),
        &cfg,
        "node-1",
        tx,
    );
    let mut r = Running { sup, metrics, rx };
    wait_status(&r, |s| *s == BackplaneStatus::Running).await;
    r.sup.subscribe("t");
    r.sup.publish("t", Bytes::from_static(b"before"));
    assert_eq!(next(&mut r, "t").await.payload, "before");
    cmd(&r, "panic");
    counter_reaches(&r.metrics.restarts, 1).await;
    wait_status(&r, |s| *s == BackplaneStatus::Running).await;
    r.sup.publish("t", Bytes::from_static(b"after"));
    assert_eq!(next(&mut r, "t").await.payload, "after");
}
