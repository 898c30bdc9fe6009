//! One incarnation of an adapter: an OS thread that owns the `Store` and takes publishes from
//! its outbox and other work from a bounded queue. A dedicated thread because sync WASI must
//! not run on a tokio worker, and because a guest call, however short, should never stall the
//! server's async tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchyard_packed as packed;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::ResourceTable;
use wasmtime::Store;

use super::bindings::{AdapterError, BackplaneAdapterPre, HealthStatus};
use super::error::Failure;
use super::guest::{self, Guest};
use super::host_impl::{HostState, Shared, StoreState};
use super::native::{self, NativeFactory};
use super::outbox::{Batch, Outbox};
use super::{sandbox, AdapterMetrics};

/// Work for an incarnation. Publishes go through its `Outbox` instead.
pub enum Job {
    Subscribe(String),
    Unsubscribe(String),
    Io(IoEvent),
    Health(oneshot::Sender<HealthStatus>),
    /// Call `shutdown` and end.
    Shutdown,
    /// Nothing to do but look at the control list and the outbox.
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
    pub outbox: Arc<Outbox>,
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
    let outbox = Arc::new(Outbox::new(
        shared.limits.queue,
        shared.limits.max_batch,
        shared.limits.max_call_bytes,
    ));
    let thread_outbox = outbox.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
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
                &metrics,
                &config_json,
                jobs_rx,
                thread_control,
                &thread_outbox,
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
        outbox,
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
    metrics: &AdapterMetrics,
    config_json: &str,
    mut jobs: mpsc::Receiver<Job>,
    control: Control,
    outbox: &Outbox,
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

    loop {
        let pending_control = control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(job) = pending_control {
            match handle(&mut *guest, metrics, job) {
                Ok(Some(exit)) => return exit,
                Ok(None) => continue,
                Err(f) => return Exit::Failed(f),
            }
        }
        // One batch of publishes, then one job if any waits: neither starves the other. The
        // thread sleeps only with the outbox empty; a publish into an empty outbox queues a
        // `Wake`.
        let published = match publish_next(&mut *guest, metrics, outbox) {
            Ok(published) => published,
            Err(f) => return Exit::Failed(f),
        };
        let next = if published {
            jobs.try_recv().ok()
        } else {
            jobs.blocking_recv()
        };
        let job = match next {
            Some(job) => job,
            None if published => continue,
            None => return Exit::Stopped,
        };
        if let Job::Shutdown = job {
            // What was published before the shutdown still goes out.
            loop {
                match publish_next(&mut *guest, metrics, outbox) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(f) => return Exit::Failed(f),
                }
            }
        }
        match handle(&mut *guest, metrics, job) {
            Ok(Some(exit)) => return exit,
            Ok(None) => {}
            Err(f) => return Exit::Failed(f),
        }
    }
}

/// Publishes the outbox's oldest batch, if any: whether there was one.
fn publish_next(
    guest: &mut dyn Guest,
    metrics: &AdapterMetrics,
    outbox: &Outbox,
) -> Result<bool, Failure> {
    let Some(batch) = outbox.take() else {
        return Ok(false);
    };
    let outcome = publish(guest, metrics, &batch);
    outbox.recycle(batch.packed);
    outcome.map(|()| true)
}

/// Hands one batch to the guest: `publish` for a single message, `publish-batch` otherwise.
fn publish(guest: &mut dyn Guest, metrics: &AdapterMetrics, batch: &Batch) -> Result<(), Failure> {
    metrics
        .publishes
        .fetch_add(batch.count as u64, Ordering::Relaxed);
    let single = (batch.count == 1)
        .then(|| packed::unpack(&batch.packed))
        .flatten();
    let call = match single.as_deref() {
        Some([one]) => guest.publish(one.topic, one.payload),
        _ => guest.publish_packed(batch),
    };
    outcome(metrics, call)
}

/// Runs one job. `Ok(Some(exit))` ends the incarnation as asked.
fn handle(
    guest: &mut dyn Guest,
    metrics: &AdapterMetrics,
    job: Job,
) -> Result<Option<Exit>, Failure> {
    let call = match job {
        Job::Subscribe(t) => guest.subscribe(&t),
        Job::Unsubscribe(t) => guest.unsubscribe(&t),
        Job::Io(ev) => guest.on_event(ev).map(Ok),
        Job::Health(reply) => guest.health().map(|h| {
            let _ = reply.send(h);
            Ok(())
        }),
        Job::Shutdown => {
            guest.shutdown();
            return Ok(Some(Exit::Stopped));
        }
        Job::Wake => return Ok(None),
    };
    outcome(metrics, call).map(|()| None)
}

/// A call's result: the adapter's own errors are counted and logged, a trap ends the
/// incarnation.
fn outcome(metrics: &AdapterMetrics, call: super::guest::Call) -> Result<(), Failure> {
    match call {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            metrics.adapter_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %describe(&e), "adapter call returned an error");
            Ok(())
        }
        Err(e) => Err(Failure::from_call(&e)),
    }
}

fn describe(e: &AdapterError) -> String {
    match e {
        AdapterError::InvalidConfig(m) => format!("invalid config: {m}"),
        AdapterError::Unavailable(m) => format!("unavailable: {m}"),
        AdapterError::Other(m) => m.clone(),
    }
}
