//! Fan-out through a Pusher server: N subscribers over M channels, events published through
//! the HTTP API at a fixed rate, measured at the clients (latency, loss, order) and at the
//! server (CPU per delivered message, from /proc).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::http::Publisher;
use crate::procfs;

#[derive(clap::Args, Clone)]
pub struct FanoutArgs {
    /// Server address for WebSocket and HTTP (host:port).
    #[arg(long, default_value = "127.0.0.1:6001")]
    pub addr: String,
    /// HTTP API address when it differs from `--addr` (for multi-node runs).
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Extra WebSocket addresses; subscribers are spread round-robin over all of them.
    #[arg(long = "also-ws")]
    pub also_ws: Vec<String>,
    #[arg(long, default_value = "app-id")]
    pub app_id: String,
    #[arg(long, default_value = "app-key")]
    pub key: String,
    #[arg(long, default_value = "app-secret")]
    pub secret: String,
    /// Subscribing connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channels; subscriber i joins channel i % channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Events per second, spread round-robin over the channels.
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Events per HTTP request (batch_events when > 1; consecutive events of a batch go to the
    /// same channel, so they queue up per socket).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of padding in each event's data.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Server process ids to sample CPU and RSS from (repeat for several nodes).
    #[arg(long)]
    pub pid: Vec<u32>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    event: &'a str,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    s: u64,
    t: u64,
}

#[derive(Default)]
pub struct Counters {
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    duplicates: AtomicU64,
}

pub struct Outcome {
    pub published: u64,
    pub expected: u64,
    pub delivered: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub server_cpu: Duration,
    pub rss_per_conn: Option<f64>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn subscribe(
    addr: &str,
    key: &str,
    channel: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let url = format!("ws://{addr}/app/{key}?protocol=7&client=bench&version=1.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let sub = serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel}});
    ws.send(Message::text(sub.to_string())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("subscription_succeeded") => return Ok(ws),
            Some(Ok(_)) => {}
            other => anyhow::bail!("subscription to {channel} failed: {other:?}"),
        }
    }
}

pub async fn run(a: &FanoutArgs) -> anyhow::Result<Outcome> {
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let rss_before: u64 = a
        .pid
        .iter()
        .filter_map(|p| procfs::rss_bytes(*p).ok())
        .sum();
    let ws_addrs: Vec<String> = std::iter::once(a.addr.clone())
        .chain(a.also_ws.iter().cloned())
        .collect();
    let mut tasks = Vec::with_capacity(a.subscribers);
    let started = Instant::now();
    for i in 0..a.subscribers {
        let channel = format!("bench-{}", i % a.channels);
        let ws = subscribe(&ws_addrs[i % ws_addrs.len()], &a.key, &channel).await?;
        let counters = counters.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let (_tx, mut rx) = ws.split();
            let mut last: Option<u64> = None;
            while let Some(Ok(msg)) = rx.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(env) = serde_json::from_str::<Envelope>(&t) else {
                    continue;
                };
                if env.event != "bench" {
                    continue;
                }
                let Some(p) = env
                    .data
                    .and_then(|d| serde_json::from_str::<Payload>(&d).ok())
                else {
                    continue;
                };
                let us = now_us().saturating_sub(p.t) as u32;
                latencies.lock().unwrap_or_else(|e| e.into_inner()).push(us);
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                match last {
                    Some(l) if p.s == l => {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(l) if p.s < l => {
                        counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => last = Some(p.s),
                }
            }
        }));
    }
    eprintln!(
        "{} subscribers on {} channel(s) connected in {:.1}s",
        a.subscribers,
        a.channels,
        started.elapsed().as_secs_f64()
    );
    let rss_after: u64 = a
        .pid
        .iter()
        .filter_map(|p| procfs::rss_bytes(*p).ok())
        .sum();
    let rss_per_conn = (!a.pid.is_empty())
        .then(|| (rss_after.saturating_sub(rss_before)) as f64 / a.subscribers as f64);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = a.http_addr.clone().unwrap_or_else(|| a.addr.clone());
    let mut publisher = Publisher::connect(&http, &a.app_id, &a.key, &a.secret).await?;
    let subs_per_channel: Vec<u64> = (0..a.channels)
        .map(|c| (0..a.subscribers).filter(|i| i % a.channels == c).count() as u64)
        .collect();
    let pad = "x".repeat(a.payload);
    let requests_per_sec = a.rate / a.batch as f64;
    let total_requests = (a.duration * requests_per_sec).round() as u64;
    let mut seq = vec![0u64; a.channels];
    let mut expected = 0u64;
    let mut published = 0u64;
    let cpu0: Duration = a.pid.iter().filter_map(|p| procfs::cpu_time(*p).ok()).sum();
    let t0 = tokio::time::Instant::now();
    let mut channel = 0usize;
    for r in 0..total_requests {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(r as f64 / requests_per_sec)).await;
        let mut events = Vec::with_capacity(a.batch);
        for _ in 0..a.batch {
            seq[channel] += 1;
            let data = format!(
                "{{\"s\":{},\"t\":{},\"p\":\"{pad}\"}}",
                seq[channel],
                now_us()
            );
            events.push(serde_json::json!({"name":"bench","channel":format!("bench-{channel}"),"data":data}));
            expected += subs_per_channel[channel];
            published += 1;
        }
        if a.batch == 1 {
            publisher.post("events", &events[0].to_string()).await?;
        } else {
            publisher
                .post(
                    "batch_events",
                    &serde_json::json!({"batch": events}).to_string(),
                )
                .await?;
        }
        channel = (channel + 1) % a.channels;
    }
    // Let in-flight deliveries land, then stop.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while counters.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu1: Duration = a.pid.iter().filter_map(|p| procfs::cpu_time(*p).ok()).sum();
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as u64
    };
    Ok(Outcome {
        published,
        expected,
        delivered: counters.delivered.load(Ordering::Relaxed),
        out_of_order: counters.out_of_order.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: lat.last().copied().unwrap_or(0) as u64,
        server_cpu: cpu1.saturating_sub(cpu0),
        rss_per_conn,
    })
}
