//! Run with `cargo run --release -p switchyard --example adapter_bench -- [MESSAGES] [ROUNDS] [BYTES]`
//! (after `scripts/build-guests`)
//!
//! What the adapter boundary costs:
//! 1. host→guest call cost on a store driven directly (health, publish 100 B / 10 KB, batched);
//! 2. the Redis adapter end to end through a real `redis-server` started on a free port:
//!    messages per second through the publish path and back through the on-data (subscriber)
//!    path, with the same in-flight window for all three ways of running it:
//!    - bare: its protocol code driven by a plain tokio client (no runtime at all);
//!    - native: the same adapter compiled for the host, run by the plugin runtime (queue,
//!      incarnation thread, host-owned sockets, deliveries) with no sandbox;
//!    - component: the `.wasm` build in the sandbox, through the same runtime.
//!
//!    Component / native is what the sandbox costs.

mod bridge;
#[path = "../../tests/broker/mod.rs"]
mod broker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_adapter::proto::{self, Decoder, Item};
use switchyard::backplane::Backplane;
use switchyard::config::AdapterConfig;
use switchyard::plugin::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WINDOW: u64 = 4096;
const BATCH: usize = 256;

fn guest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-adapters/target/wasm32-wasip2/release")
}

fn cpu_now() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |r| r.1)
        .split_whitespace()
        .collect();
    let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The adapter's protocol code driven by a bare tokio client: what no runtime at all costs.
async fn bare(port: u16, messages: u64, payload: &[u8]) -> anyhow::Result<(Duration, Duration)> {
    let mut publisher = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut subscriber = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut out = Vec::new();
    proto::encode_command(&mut out, &[b"SUBSCRIBE", b"bench:t"]);
    subscriber.write_all(&out).await?;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let counter = received.clone();
    let notify = progress.clone();
    // Aborted at the end: a subscriber left behind would make Redis fan every later round's
    // messages out to it too.
    let subscriber_task = tokio::spawn(async move {
        let mut dec = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut ready = Some(ready_tx);
        while let Ok(n) = subscriber.read(&mut buf).await {
            if n == 0 {
                break;
            }
            notify.notify_one();
            let _ = dec.decode(&buf[..n], |item| match item {
                Item::Message { .. } => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Item::Value(_) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
            });
        }
    });
    ready_rx.await?;
    let (mut pub_rd, mut pub_wr) = publisher.split();
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = pub_rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let send = async {
        let t = Instant::now();
        let cpu = cpu_now();
        let mut sent = 0u64;
        let mut out = Vec::with_capacity(BATCH * (payload.len() + 48));
        while sent < messages {
            if sent - received.load(Ordering::Relaxed) >= WINDOW {
                progress.notified().await;
                continue;
            }
            out.clear();
            let n = (messages - sent).min(BATCH as u64);
            for _ in 0..n {
                proto::encode_publish(&mut out, b"bench:", b"t", payload);
            }
            pub_wr.write_all(&out).await?;
            sent += n;
        }
        while received.load(Ordering::Relaxed) < messages {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok::<_, anyhow::Error>((t.elapsed(), cpu_now() - cpu))
    };
    let result = tokio::select! {
        r = send => r,
        _ = drain => Err(anyhow::anyhow!("publisher connection closed")),
    };
    subscriber_task.abort();
    result
}

/// The adapter behind the plugin runtime, as a sandboxed component or natively.
async fn through_runtime(
    runtime: &Runtime,
    sandboxed: bool,
    port: u16,
    messages: u64,
    payload: &[u8],
) -> anyhow::Result<(Duration, Duration)> {
    let cfg = AdapterConfig {
        driver: "redis".into(),
        plugins_dir: guest_dir(),
        allow: vec![format!("127.0.0.1:{port}")],
        config: serde_json::json!({"port": port, "prefix": "bench:"}),
        ..AdapterConfig::default()
    };
    let (tx, mut rx) = mpsc::channel(65536);
    let (sup, metrics) = if sandboxed {
        runtime.start(&cfg, "bench", tx)?
    } else {
        runtime.start_native(bridge::factory::<redis_adapter::Redis>(), &cfg, "bench", tx)
    };
    for _ in 0..500 {
        if sup.is_ready().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sup.subscribe("t");
    // Wait until the subscription is live: probe until a message comes back.
    loop {
        sup.publish("t", Bytes::from_static(b"probe"));
        if tokio::time::timeout(Duration::from_millis(50), rx.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    while rx.try_recv().is_ok() {}
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let counter = received.clone();
    let notify = progress.clone();
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if d.payload.len() > 5 {
                counter.fetch_add(1, Ordering::Relaxed);
                notify.notify_one();
            }
        }
    });
    let payload = Bytes::copy_from_slice(payload);
    let t = Instant::now();
    let cpu = cpu_now();
    let mut sent = 0u64;
    while sent < messages {
        if sent - received.load(Ordering::Relaxed) >= WINDOW {
            // Park instead of spinning: a busy driver would steal the cores being measured.
            progress.notified().await;
            continue;
        }
        sup.publish("t", payload.clone());
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = t.elapsed();
    let cpu = cpu_now() - cpu;
    let got = received.load(Ordering::Relaxed);
    anyhow::ensure!(
        got >= messages,
        "runtime path delivered {got} of {messages} (dropped {} publishes)",
        metrics.publish_dropped.load(Ordering::Relaxed)
    );
    sup.stop();
    Ok((elapsed, cpu))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let messages: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let size: usize = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let payload = vec![b'x'; size.max(6)];

    let cache = std::env::temp_dir().join("switchyard-adapter-bench-cache");
    let runtime = Runtime::new(Some(cache)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let costs = switchyard::plugin::bench::call_costs(
        &runtime,
        &guest_dir().join("loopback.wasm"),
        200_000,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("host→guest call cost (loopback, direct store, epoch deadline armed per call):");
    println!(
        "  health()                     {:>8.3} µs",
        costs.health / 1e3
    );
    println!(
        "  publish(100 B)               {:>8.3} µs",
        costs.publish_100b / 1e3
    );
    println!(
        "  publish(10 KB)               {:>8.3} µs",
        costs.publish_10kb / 1e3
    );
    println!(
        "  publish-batch(256 × 100 B)   {:>8.3} µs per message",
        costs.publish_batched_100b / 1e3
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The adapter tests' broker helper: a redis-server of our own on a free port.
        let redis = broker::Broker::start(&broker::REDIS, broker::free_port()).await;
        let port = redis.port;
        println!("\nRedis adapter code, {messages} messages of {} B through redis-server (publish → subscribe → deliver):", payload.len());
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        let rate = |d: Duration| messages as f64 / d.as_secs_f64();
        let per_msg = |cpu: Duration| cpu.as_nanos() as f64 / messages as f64 / 1e3;
        for round in 0..rounds {
            let (b, bcpu) = bare(port, messages, &payload).await?;
            // Alternate which goes first, so drift on the shared cores hits both alike.
            let (n, ncpu, w, wcpu) = if round % 2 == 0 {
                let (n, ncpu) = through_runtime(&runtime, false, port, messages, &payload).await?;
                let (w, wcpu) = through_runtime(&runtime, true, port, messages, &payload).await?;
                (n, ncpu, w, wcpu)
            } else {
                let (w, wcpu) = through_runtime(&runtime, true, port, messages, &payload).await?;
                let (n, ncpu) = through_runtime(&runtime, false, port, messages, &payload).await?;
                (n, ncpu, w, wcpu)
            };
            println!(
                "  round {round}: bare {:>9.0} msg/s ({:.2} µs CPU/msg)   native {:>9.0} msg/s ({:.2} µs CPU/msg)   component {:>9.0} msg/s ({:.2} µs CPU/msg)   component/native {:.2}",
                rate(b),
                per_msg(bcpu),
                rate(n),
                per_msg(ncpu),
                rate(w),
                per_msg(wcpu),
                rate(w) / rate(n)
            );
            rates.push(rate(w) / rate(n));
            cpus.push(per_msg(ncpu) / per_msg(wcpu));
        }
        println!(
            "  median over {rounds} rounds, component / native (same runtime): throughput {:.2}, CPU per message {:.2} (native's CPU over the component's)",
            median(&mut rates),
            median(&mut cpus)
        );
        Ok::<_, anyhow::Error>(())
    })
}
