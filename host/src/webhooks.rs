//! Webhooks (summary §12): events are queued without blocking the connection path, held
//! briefly to debounce leave/join flaps, batched per URL, signed, and retried with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{AppConfig, WebhookEventType, WebhookSettings};
use crate::metrics::Metrics;
use crate::protocol::auth;

/// One webhook event, before it is serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    ChannelOccupied {
        channel: String,
    },
    ChannelVacated {
        channel: String,
    },
    MemberAdded {
        channel: String,
        user_id: String,
    },
    MemberRemoved {
        channel: String,
        user_id: String,
    },
    ClientEvent {
        channel: String,
        event: String,
        /// The event's data as a string (client objects are JSON-encoded).
        data: String,
        socket_id: String,
        user_id: Option<String>,
    },
    CacheMiss {
        channel: String,
    },
    SubscriptionCount {
        channel: String,
        count: usize,
    },
}

impl HookEvent {
    pub fn kind(&self) -> WebhookEventType {
        match self {
            Self::ChannelOccupied { .. } => WebhookEventType::ChannelOccupied,
            Self::ChannelVacated { .. } => WebhookEventType::ChannelVacated,
            Self::MemberAdded { .. } => WebhookEventType::MemberAdded,
            Self::MemberRemoved { .. } => WebhookEventType::MemberRemoved,
            Self::ClientEvent { .. } => WebhookEventType::ClientEvent,
            Self::CacheMiss { .. } => WebhookEventType::CacheMiss,
            Self::SubscriptionCount { .. } => WebhookEventType::SubscriptionCount,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::ChannelOccupied { channel } => {
                json!({"name": "channel_occupied", "channel": channel})
            }
            Self::ChannelVacated { channel } => {
                json!({"name": "channel_vacated", "channel": channel})
            }
            Self::MemberAdded { channel, user_id } => {
                json!({"name": "member_added", "channel": channel, "user_id": user_id})
            }
            Self::MemberRemoved { channel, user_id } => {
                json!({"name": "member_removed", "channel": channel, "user_id": user_id})
            }
            Self::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                let mut v = json!({"name": "client_event", "channel": channel, "event": event,
                    "data": data, "socket_id": socket_id});
                if let Some(u) = user_id {
                    v["user_id"] = json!(u);
                }
                v
            }
            Self::CacheMiss { channel } => json!({"name": "cache_miss", "channel": channel}),
            Self::SubscriptionCount { channel, count } => {
                json!({"name": "subscription_count", "channel": channel, "subscription_count": count})
            }
        }
    }

    /// For a leave event, the join that cancels it, as a key; `None` for other events.
    fn flap_key(&self) -> Option<(bool, String, Option<String>)> {
        match self {
            Self::ChannelVacated { channel } => Some((true, channel.clone(), None)),
            Self::ChannelOccupied { channel } => Some((false, channel.clone(), None)),
            Self::MemberRemoved { channel, user_id } => {
                Some((true, channel.clone(), Some(user_id.clone())))
            }
            Self::MemberAdded { channel, user_id } => {
                Some((false, channel.clone(), Some(user_id.clone())))
            }
            _ => None,
        }
    }
}

struct Job {
    app: Arc<AppConfig>,
    event: HookEvent,
}

/// The sending side; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Queues `event` for every URL of `app` that wants its kind. Drops (and counts) when full.
    pub fn emit(&self, app: &Arc<AppConfig>, event: HookEvent) {
        let kind = event.kind();
        let wanted = app
            .webhooks
            .iter()
            .any(|h| h.event_types.is_empty() || h.event_types.contains(&kind));
        if !wanted {
            return;
        }
        let job = Job {
            app: app.clone(),
            event,
        };
        if self.tx.try_send(job).is_err() {
            Metrics::inc(&self.metrics.webhooks_dropped);
        }
    }
}

/// Starts the sender task. It runs until `shutdown` turns true, then flushes what it holds
/// (leave events included) and waits for in-flight deliveries.
pub fn spawn(
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (Webhooks, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(settings.queue);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .build()
        .expect("a reqwest client with default TLS settings builds");
    let task = tokio::spawn(run(settings, metrics.clone(), rx, shutdown, client));
    (Webhooks { tx, metrics }, task)
}

type FlapKey = (String, String, Option<String>);

async fn run(
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
    client: reqwest::Client,
) {
    let leave_delay = Duration::from_millis(settings.leave_delay_ms);
    let window = Duration::from_millis(settings.batch_window_ms.max(1));
    // Leave events waiting out the debounce delay, keyed by (app, channel, user).
    let mut held: HashMap<FlapKey, (Instant, Job)> = HashMap::new();
    let mut ready: Vec<Job> = Vec::new();
    let mut inflight = JoinSet::new();
    let mut tick = tokio::time::interval(window);
    loop {
        tokio::select! {
            job = rx.recv() => {
                let Some(job) = job else { break };
                accept(job, &mut held, &mut ready, leave_delay);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<FlapKey> = held.iter().filter(|(_, (t, _))| *t <= now).map(|(k, _)| k.clone()).collect();
                for k in due {
                    if let Some((_, job)) = held.remove(&k) {
                        ready.push(job);
                    }
                }
                dispatch(&mut ready, &settings, &client, &metrics, &mut inflight);
                while inflight.try_join_next().is_some() {}
            }
            _ = shutdown.changed() => break,
        }
    }
    while let Ok(job) = rx.try_recv() {
        accept(job, &mut held, &mut ready, leave_delay);
    }
    ready.extend(held.into_values().map(|(_, j)| j));
    dispatch(&mut ready, &settings, &client, &metrics, &mut inflight);
    while inflight.join_next().await.is_some() {}
}

fn accept(
    job: Job,
    held: &mut HashMap<FlapKey, (Instant, Job)>,
    ready: &mut Vec<Job>,
    delay: Duration,
) {
    match job.event.flap_key() {
        Some((true, channel, user)) if !delay.is_zero() => {
            held.insert(
                (job.app.id.clone(), channel, user),
                (Instant::now() + delay, job),
            );
        }
        Some((false, channel, user)) => {
            // A join inside the delay cancels the held leave and is itself not reported.
            if held.remove(&(job.app.id.clone(), channel, user)).is_none() {
                ready.push(job);
            }
        }
        _ => ready.push(job),
    }
}

/// Groups ready events by app and URL into batches and starts one delivery task per batch.
fn dispatch(
    ready: &mut Vec<Job>,
    settings: &WebhookSettings,
    client: &reqwest::Client,
    metrics: &Arc<Metrics>,
    inflight: &mut JoinSet<()>,
) {
    if ready.is_empty() {
        return;
    }
    let mut batches: HashMap<(String, usize), (Arc<AppConfig>, Vec<serde_json::Value>)> =
        HashMap::new();
    for job in ready.drain(..) {
        let kind = job.event.kind();
        for (i, hook) in job.app.webhooks.iter().enumerate() {
            if hook.event_types.is_empty() || hook.event_types.contains(&kind) {
                batches
                    .entry((job.app.id.clone(), i))
                    .or_insert_with(|| (job.app.clone(), Vec::new()))
                    .1
                    .push(job.event.to_json());
            }
        }
    }
    for ((_, i), (app, events)) in batches {
        for chunk in events.chunks(settings.batch_max) {
            // Deliveries retrying against a dead endpoint must not pile up without bound.
            if inflight.len() >= settings.max_in_flight {
                Metrics::add(&metrics.webhooks_dropped, chunk.len() as u64);
                continue;
            }
            let body = json!({"time_ms": now_ms(), "events": chunk}).to_string();
            let url = app.webhooks[i].url.clone();
            let signature = auth::sign(&app.secret, body.as_bytes());
            let ctx = Delivery {
                client: client.clone(),
                url,
                key: app.key.clone(),
                signature,
                body,
                retry_for: Duration::from_secs(settings.retry_for_secs),
                metrics: metrics.clone(),
            };
            inflight.spawn(ctx.run());
        }
    }
}

struct Delivery {
    client: reqwest::Client,
    url: String,
    key: String,
    signature: String,
    body: String,
    retry_for: Duration,
    metrics: Arc<Metrics>,
}

impl Delivery {
    /// Posts until a 2xx, backing off 1 s, 2 s, 4 s … (capped at 60 s) within `retry_for`.
    async fn run(self) {
        let started = Instant::now();
        let mut backoff = Duration::from_secs(1);
        loop {
            let result = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-pusher-key", &self.key)
                .header("x-pusher-signature", &self.signature)
                .body(self.body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(r) if r.status().is_success() => {
                    Metrics::inc(&self.metrics.webhooks_sent);
                    return;
                }
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() + backoff > self.retry_for {
                Metrics::inc(&self.metrics.webhooks_failed);
                tracing::warn!(url = %self.url, %failure, "webhook given up");
                return;
            }
            Metrics::inc(&self.metrics.webhooks_retried);
            tracing::debug!(url = %self.url, %failure, ?backoff, "webhook retry");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
