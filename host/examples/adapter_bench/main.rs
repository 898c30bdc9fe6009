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
//!    Component / native is what the sandbox costs. Each run prints messages per second and
//!    CPU per message, of the whole process and of the adapter's thread alone.
//!
//! redis-server gets the last CPU and this process the others (`taskset`), as when the broker
//! has a machine of its own; `ADAPTER_BENCH_NO_PIN=1` leaves placement to the scheduler.
//! `ADAPTER_BENCH_NATIVE_EXTRA_NS=N` adds N ns of busy work per message to the native adapter,
//! to see how the figures respond to a slower adapter.

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

/// CPU time used by each of this process's threads (`/proc/self/task/*/schedstat`, in
/// nanoseconds rather than the 10 ms ticks of `/proc/self/stat`), marking the adapter's
/// incarnation threads so a run shows where the sandbox's cost lands.
struct Cpu(Vec<(u32, bool, Duration)>);

impl Cpu {
    fn now() -> Self {
        let mut threads = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = task.path();
            let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
            let ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if let (Some(tid), Some(ns)) = (tid, ns) {
                threads.push((tid, comm.starts_with("adapter-"), Duration::from_nanos(ns)));
            }
        }
        Self(threads)
    }

    /// What was used since `before`: (every thread, the adapter threads). A thread that
    /// ended in between is missed; the runs start and stop theirs outside the interval.
    fn since(&self, before: &Cpu) -> (Duration, Duration) {
        let (mut all, mut adapter) = (Duration::ZERO, Duration::ZERO);
        for (tid, is_adapter, t) in &self.0 {
            let was = before
                .0
                .iter()
                .find(|b| b.0 == *tid)
                .map_or(Duration::ZERO, |b| b.2);
            let used = t.saturating_sub(was);
            all += used;
            if *is_adapter {
                adapter += used;
            }
        }
        (all, adapter)
    }
}

/// Gives the broker the last CPU and this process the others, when there are at least two
/// (with `taskset`): as when the broker runs on a machine of its own, neither steals the
/// other's core. Unpinned, on a small machine the scheduler's placement alone swings a run by
/// a factor of two.
fn pin(broker_pid: u32) -> Option<usize> {
    let cpus = std::thread::available_parallelism().ok()?.get();
    if cpus < 2 {
        return None;
    }
    let taskset = |args: &[String]| {
        std::process::Command::new("taskset")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ours = format!("0-{}", cpus - 2);
    let broker = taskset(&[
        "-p".into(),
        "-c".into(),
        (cpus - 1).to_string(),
        broker_pid.to_string(),
    ]);
    // Every thread of this process; threads started later inherit their creator's mask.
    let us = taskset(&[
        "-a".into(),
        "-p".into(),
        "-c".into(),
        ours,
        std::process::id().to_string(),
    ]);
    (broker && us).then_some(cpus)
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
        let cpu = Cpu::now();
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
        Ok::<_, anyhow::Error>((t.elapsed(), Cpu::now().since(&cpu).0))
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
) -> anyhow::Result<(Duration, (Duration, Duration))> {
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
    let cpu = Cpu::now();
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
    let cpu = Cpu::now().since(&cpu);
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
    // The adapter tests' broker helper: a redis-server of our own on a free port.
    let redis = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(broker::Broker::start(&broker::REDIS, broker::free_port()));
    let port = redis.port;
    let pinned = if std::env::var_os("ADAPTER_BENCH_NO_PIN").is_some() {
        None
    } else {
        pin(redis.pid())
    };
    // Built after pinning: it sizes its worker pool to the CPUs this process may use.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("\nRedis adapter code, {messages} messages of {} B through redis-server (publish → subscribe → deliver):", payload.len());
        match pinned {
            Some(cpus) => println!("  (redis-server on CPU {}, this process on CPUs 0-{})", cpus - 1, cpus - 2),
            None => println!("  (not pinned: redis-server and this process share every CPU)"),
        }
        println!("  CPU per message: the whole process (the adapter thread's share)");
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        let mut adapter_cpus = Vec::new();
        let rate = |d: Duration| messages as f64 / d.as_secs_f64() / 1e6;
        let per_msg = |cpu: Duration| cpu.as_nanos() as f64 / messages as f64 / 1e3;
        for round in 0..rounds {
            let (b, bcpu) = bare(port, messages, &payload).await?;
            // Alternate which goes first, so drift on the shared cores hits both alike.
            let ((n, ncpu), (w, wcpu)) = if round % 2 == 0 {
                let n = through_runtime(&runtime, false, port, messages, &payload).await?;
                (n, through_runtime(&runtime, true, port, messages, &payload).await?)
            } else {
                let w = through_runtime(&runtime, true, port, messages, &payload).await?;
                (through_runtime(&runtime, false, port, messages, &payload).await?, w)
            };
            println!(
                "  round {round}: bare {:.2} M msg/s {:.2} µs | native {:.2} M msg/s {:.2} µs ({:.2}) | component {:.2} M msg/s {:.2} µs ({:.2}) | component/native {:.2}",
                rate(b),
                per_msg(bcpu),
                rate(n),
                per_msg(ncpu.0),
                per_msg(ncpu.1),
                rate(w),
                per_msg(wcpu.0),
                per_msg(wcpu.1),
                rate(w) / rate(n)
            );
            rates.push(rate(w) / rate(n));
            cpus.push(per_msg(ncpu.0) / per_msg(wcpu.0));
            adapter_cpus.push(per_msg(ncpu.1) / per_msg(wcpu.1));
        }
        println!(
            "  median over {rounds} rounds, component / native (same runtime): throughput {:.2}, CPU per message {:.2}, on the adapter thread {:.2} (native's CPU over the component's)",
            median(&mut rates),
            median(&mut cpus),
            median(&mut adapter_cpus)
        );
        Ok::<_, anyhow::Error>(())
    })
}
