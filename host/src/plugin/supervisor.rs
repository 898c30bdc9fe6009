//! Keeps one adapter running: starts incarnations, replays the node's subscriptions into
//! each, restarts after a trap or deadline with backoff, and gives up (marking the adapter
//! failed) after too many failures in a window. Local service never depends on it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use super::bindings::HealthStatus;
use super::error::Failure;
use super::host_impl::Shared;
use super::instance::{self, Code, Control, Exit, Job};
use super::outbox::Outbox;
use crate::backplane::{Backplane, BackplaneStatus};
use crate::config::RestartPolicy;

/// Where work for the live incarnation goes.
struct Live {
    jobs: mpsc::Sender<Job>,
    control: Control,
    outbox: Arc<Outbox>,
}

/// The handle the node holds: publish, subscribe, and read the status.
#[derive(Clone)]
pub struct Supervised {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    /// The live incarnation's queue, control list and outbox; `None` while (re)starting or
    /// failed.
    current: RwLock<Option<Live>>,
    /// Every topic the node wants, replayed into each new incarnation.
    subscriptions: Mutex<BTreeSet<String>>,
    status: Mutex<BackplaneStatus>,
    stop: Notify,
}

impl Supervised {
    /// Starts supervising; returns at once. The first incarnation starts in the background.
    pub fn start(
        code: Code,
        shared: Shared,
        config_json: String,
        policy: RestartPolicy,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let inner = Arc::new(Inner {
            shared,
            current: RwLock::new(None),
            subscriptions: Mutex::new(BTreeSet::new()),
            status: Mutex::new(BackplaneStatus::Starting),
            stop: Notify::new(),
        });
        let task = tokio::spawn(supervise(inner.clone(), code, config_json, policy));
        (Self { inner }, task)
    }

    fn send(&self, job: Job) -> bool {
        let current = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(live) => live.jobs.try_send(job).is_ok(),
            None => false,
        }
    }

    /// Hands a subscribe or unsubscribe to the live incarnation without a chance of loss: it
    /// goes on the control list, and a `Wake` is queued (when the queue is full the thread is
    /// busy and will look at the list before its next job anyway). With no live incarnation
    /// the next one's replay covers it.
    fn control(&self, job: Job) {
        let current = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = current.as_ref() {
            live.control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(job);
            let _ = live.jobs.try_send(Job::Wake);
        }
    }

    /// Asks the adapter for its health; `None` when no incarnation answers in time.
    pub async fn health(&self) -> Option<HealthStatus> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Job::Health(tx)) {
            return None;
        }
        tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()
    }

    /// Whether the adapter reports itself `ready` (connected and subscribed).
    pub async fn is_ready(&self) -> bool {
        matches!(self.health().await, Some(HealthStatus::Ready))
    }

    /// Shuts the live incarnation down and stops supervising.
    pub fn stop(&self) {
        self.inner.stop.notify_one();
    }
}

/// How long a stopping incarnation gets to publish what waits in its outbox.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Publishes an ended incarnation never took are lost: count them.
fn count_abandoned(inner: &Inner, outbox: &Outbox) {
    let lost = outbox.abandon() as u64;
    inner
        .shared
        .metrics
        .publish_dropped
        .fetch_add(lost, Ordering::Relaxed);
}

fn set_status(inner: &Inner, s: BackplaneStatus) {
    inner
        .shared
        .metrics
        .state
        .store(s.code(), Ordering::Relaxed);
    *inner.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
}

impl Backplane for Supervised {
    fn publish(&self, topic: &str, payload: Bytes) {
        let current = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        let queued = current.as_ref().map(|live| {
            let pushed = live.outbox.push(topic, &payload);
            // Into an empty outbox: the thread may be asleep. With the job queue full it is
            // busy, and looks at the outbox between jobs anyway.
            if pushed == Ok(true) {
                let _ = live.jobs.try_send(Job::Wake);
            }
            pushed.is_ok()
        });
        if queued != Some(true) {
            // Nothing blocks the caller: with no live incarnation or a full outbox the message
            // is lost, and counted.
            self.inner
                .shared
                .metrics
                .publish_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn subscribe(&self, topic: &str) {
        let fresh = self
            .inner
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned());
        if fresh {
            self.control(Job::Subscribe(topic.to_owned()));
        }
    }

    fn unsubscribe(&self, topic: &str) {
        let was = self
            .inner
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
        if was {
            self.control(Job::Unsubscribe(topic.to_owned()));
        }
    }

    fn status(&self) -> BackplaneStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn supervise(inner: Arc<Inner>, code: Code, config_json: String, policy: RestartPolicy) {
    let window = Duration::from_secs(policy.window_secs);
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Duration::from_millis(policy.backoff_initial_ms);
    let name = inner.shared.name.clone();
    loop {
        let inc = instance::spawn(code.clone(), inner.shared.clone(), config_json.clone());
        let ready = tokio::select! {
            r = inc.ready => r.unwrap_or_else(|_| Err(Failure::Instantiate("the adapter thread ended during start".into()))),
            _ = inner.stop.notified() => {
                let _ = inc.jobs.send(Job::Shutdown).await;
                set_status(&inner, BackplaneStatus::Stopped);
                return;
            }
        };
        let failure = match ready {
            Ok(()) => {
                // Make the incarnation current first, then replay: a subscribe racing with
                // the replay then reaches it either way (subscribe is idempotent).
                *inner.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Live {
                    jobs: inc.jobs.clone(),
                    control: inc.control.clone(),
                    outbox: inc.outbox.clone(),
                });
                let topics: Vec<String> = inner
                    .subscriptions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                for t in topics {
                    if inc.jobs.send(Job::Subscribe(t)).await.is_err() {
                        break;
                    }
                }
                set_status(&inner, BackplaneStatus::Running);
                tracing::info!(adapter = %name, "adapter running");
                let mut ended = inc.exit;
                let exit = tokio::select! {
                    e = &mut ended => e.unwrap_or(Exit::Failed(Failure::Trap("the adapter thread panicked".into()))),
                    _ = inner.stop.notified() => {
                        *inner.current.write().unwrap_or_else(|e| e.into_inner()) = None;
                        // The thread publishes what waits in the outbox before it shuts down;
                        // whatever it could not (a trap, a thread already gone, no time) is
                        // counted.
                        let _ = inc.jobs.send(Job::Shutdown).await;
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut ended).await;
                        count_abandoned(&inner, &inc.outbox);
                        set_status(&inner, BackplaneStatus::Stopped);
                        return;
                    }
                };
                *inner.current.write().unwrap_or_else(|e| e.into_inner()) = None;
                count_abandoned(&inner, &inc.outbox);
                match exit {
                    Exit::Stopped => {
                        set_status(&inner, BackplaneStatus::Stopped);
                        return;
                    }
                    Exit::Failed(f) => f,
                }
            }
            Err(f) => f,
        };
        inner
            .shared
            .metrics
            .restarts
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(adapter = %name, failure = %failure, "adapter incarnation ended");
        if failure.is_fatal() {
            set_status(&inner, BackplaneStatus::Failed(failure.to_string()));
            return;
        }
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            failures.pop_front();
        }
        if failures.len() >= policy.max_failures {
            let reason = format!(
                "{} failures within {}s; last: {failure}",
                failures.len(),
                policy.window_secs
            );
            tracing::error!(adapter = %name, %reason, "adapter marked failed; serving local clients only");
            set_status(&inner, BackplaneStatus::Failed(reason));
            return;
        }
        set_status(&inner, BackplaneStatus::Restarting(failure.to_string()));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = inner.stop.notified() => {
                set_status(&inner, BackplaneStatus::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(Duration::from_millis(policy.backoff_max_ms));
    }
}
