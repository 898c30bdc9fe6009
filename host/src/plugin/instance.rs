//! One incarnation of an adapter: an OS thread that owns the `Store` and takes work from a
//! bounded queue. A dedicated thread because sync WASI must not run on a tokio worker, and
//! because a guest call, however short, should never stall the server's async tasks.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::ResourceTable;
use wasmtime::Store;

use super::bindings::{AdapterError, BackplaneAdapterPre, HealthStatus};
use super::error::Failure;
use super::guest::{self, Guest};
use super::host_impl::{HostState, Shared, StoreState};
use super::native::{self, NativeFactory};
use super::{sandbox, AdapterMetrics};
use crate::config::SandboxLimits;

/// Work for an incarnation.
pub enum Job {
    Publish(String, Bytes),
    Subscribe(String),
    Unsubscribe(String),
    Io(IoEvent),
    Health(oneshot::Sender<HealthStatus>),
    /// Call `shutdown` and end.
    Shutdown,
    /// Nothing to do but look at the control list (see `Control`).
    Wake,
}

/// Subscribe and unsubscribe requests, kept apart from the bounded job queue so a queue full
/// of publishes can never drop them. The thread drains the list before every job.
pub type Control = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Job>>>;

/// Results of host-owned I/O, delivered to the guest's callbacks.
#[derive(Debug)]
pub enum IoEvent {
    Connected(u32),
    Data(u32, Vec<u8>),
    Closed(u32, String),
    Timer(u32),
}

/// How an incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shut down on request.
    Stopped,
    Failed(Failure),
}

/// A running incarnation, as its supervisor sees it.
pub struct Incarnation {
    pub jobs: mpsc::Sender<Job>,
    pub control: Control,
    /// Resolves once `init` succeeded or failed.
    pub ready: oneshot::Receiver<Result<(), Failure>>,
    /// Resolves when the thread ends.
    pub exit: oneshot::Receiver<Exit>,
}

/// The adapter's code: a linked component, or native code (see `native`).
#[derive(Clone)]
pub enum Code {
    Component(Box<BackplaneAdapterPre<StoreState>>),
    Native(NativeFactory),
}

pub fn spawn(code: Code, shared: Shared, config_json: String) -> Incarnation {
    let (jobs_tx, jobs_rx) = mpsc::channel(shared.limits.queue);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (exit_tx, exit_rx) = oneshot::channel();
    let name = format!("adapter-{}", shared.name);
    let io_jobs = jobs_tx.clone();
    let control = Control::default();
    let thread_control = control.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let limits = shared.limits.clone();
        let metrics = shared.metrics.clone();
        let guest: Result<Box<dyn Guest>, Failure> = match &code {
            Code::Component(pre) => {
                let store = new_store(pre.engine(), shared, io_jobs);
                guest::Wasm::instantiate(pre, store).map(|g| Box::new(g) as Box<dyn Guest>)
            }
            Code::Native(factory) => Ok(Box::new(native::Native::new(
                factory,
                store_state(shared, io_jobs),
            ))),
        };
        let exit = match guest {
            Ok(g) => run(
                g,
                &limits,
                &metrics,
                &config_json,
                jobs_rx,
                thread_control,
                ready_tx,
            ),
            Err(f) => {
                let _ = ready_tx.send(Err(f.clone()));
                Exit::Failed(f)
            }
        };
        let _ = exit_tx.send(exit);
    });
    if let Err(e) = spawned {
        // The closures were dropped with the failed spawn, so both receivers report it.
        tracing::error!(error = %e, "could not start an adapter thread");
    }
    Incarnation {
        jobs: jobs_tx,
        control,
        ready: ready_rx,
        exit: exit_rx,
    }
}

/// What a store holds: a WASI context that grants nothing, the sandbox's limits, and the
/// host-owned resources.
fn store_state(shared: Shared, jobs: mpsc::Sender<Job>) -> StoreState {
    StoreState {
        wasi: sandbox::wasi_ctx(),
        table: ResourceTable::new(),
        limits: sandbox::store_limits(&shared.limits),
        host: HostState::new(shared, jobs),
    }
}

/// A store with the sandbox's limits.
pub(super) fn new_store(
    engine: &wasmtime::Engine,
    shared: Shared,
    jobs: mpsc::Sender<Job>,
) -> Store<StoreState> {
    let mut store = Store::new(engine, store_state(shared, jobs));
    store.limiter(|s| &mut s.limits);
    store
}

fn run(
    mut guest: Box<dyn Guest>,
    limits: &SandboxLimits,
    metrics: &AdapterMetrics,
    config_json: &str,
    mut jobs: mpsc::Receiver<Job>,
    control: Control,
    ready: oneshot::Sender<Result<(), Failure>>,
) -> Exit {
    let init = match guest.init(config_json) {
        Err(e) => Err(Failure::from_call(&e)),
        Ok(Err(AdapterError::InvalidConfig(m))) => Err(Failure::InvalidConfig(m)),
        Ok(Err(other)) => Err(Failure::Init(describe(&other))),
        Ok(Ok(())) => Ok(()),
    };
    if let Err(f) = init {
        let _ = ready.send(Err(f.clone()));
        return Exit::Failed(f);
    }
    let _ = ready.send(Ok(()));

    let mut held: Option<Job> = None;
    loop {
        let pending_control = control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let next = match pending_control {
            Some(c) => Some(c),
            None => held.take().or_else(|| jobs.blocking_recv()),
        };
        let Some(job) = next else {
            return Exit::Stopped;
        };
        let outcome = match job {
            Job::Publish(topic, payload) => {
                let mut batch = vec![(topic, payload)];
                // Publishes that queued up go to the guest in one call.
                while batch.len() < limits.max_batch {
                    match jobs.try_recv() {
                        Ok(Job::Publish(t, p)) => batch.push((t, p)),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                metrics
                    .publishes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if batch.len() == 1 {
                    let (topic, payload) = &batch[0];
                    guest.publish(topic, payload)
                } else {
                    guest.publish_batch(batch)
                }
            }
            Job::Subscribe(t) => guest.subscribe(&t),
            Job::Unsubscribe(t) => guest.unsubscribe(&t),
            Job::Io(ev) => guest.on_event(ev).map(Ok),
            Job::Health(reply) => guest.health().map(|h| {
                let _ = reply.send(h);
                Ok(())
            }),
            Job::Shutdown => {
                guest.shutdown();
                return Exit::Stopped;
            }
            Job::Wake => continue,
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                metrics.adapter_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %describe(&e), "adapter call returned an error");
            }
            Err(e) => return Exit::Failed(Failure::from_call(&e)),
        }
    }
}

fn describe(e: &AdapterError) -> String {
    match e {
        AdapterError::InvalidConfig(m) => format!("invalid config: {m}"),
        AdapterError::Unavailable(m) => format!("unavailable: {m}"),
        AdapterError::Other(m) => m.clone(),
    }
}
