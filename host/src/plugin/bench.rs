//! Measurement hooks for `examples/adapter_bench.rs`: the raw cost of a host→guest call,
//! taken on a store driven directly on the calling thread (no queue, no thread hop).

use std::path::Path;
use std::time::Instant;

use tokio::sync::mpsc;

use super::host_impl::Shared;
use super::{sandbox, AdapterMetrics, Runtime};
use crate::config::SandboxLimits;

/// Nanoseconds per call, by kind.
#[derive(Debug)]
pub struct CallCosts {
    pub health: f64,
    pub publish_100b: f64,
    pub publish_10kb: f64,
    /// Per message, in batches of 256 messages of 100 bytes.
    pub publish_batched_100b: f64,
}

/// Instantiates the component at `path` (an adapter that ignores unsubscribed publishes, such
/// as `loopback`) and times `iterations` calls of each kind.
pub fn call_costs(runtime: &Runtime, path: &Path, iterations: u32) -> wasmtime::Result<CallCosts> {
    let loaded = runtime
        .load(path)
        .map_err(|e| wasmtime::Error::msg(e.to_string()))?;
    let pre = runtime
        .link(&loaded)
        .map_err(|e| wasmtime::Error::msg(e.to_string()))?;
    let limits = SandboxLimits::default();
    let (deliveries, _rx) = mpsc::channel(16);
    let (jobs, _jobs_rx) = mpsc::channel(16);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shared = Shared {
        name: "bench".into(),
        node_id: "bench".into(),
        allow: sandbox::AllowList::new(&[]),
        limits: limits.clone(),
        rt: rt.handle().clone(),
        deliveries,
        keep: None,
        metrics: std::sync::Arc::new(AdapterMetrics::default()),
        tls: std::sync::Arc::new(Err("no TLS in the call-cost bench".into())),
    };
    let mut store = super::instance::new_store(runtime.engine(), shared, jobs);
    let ticks = sandbox::deadline_ticks(&limits);
    store.set_epoch_deadline(ticks);
    let bindings = pre.instantiate(&mut store)?;
    let api = bindings.switchyard_adapter_adapter();
    api.call_init(&mut store, "{}", None)?
        .map_err(|e| wasmtime::Error::msg(format!("{e:?}")))?;
    let time = |f: &mut dyn FnMut() -> wasmtime::Result<()>, n: u32| -> wasmtime::Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            f()?;
        }
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    };
    let small = vec![7u8; 100];
    let big = vec![7u8; 10 * 1024];
    let health = time(
        &mut || {
            store.set_epoch_deadline(ticks);
            api.call_health(&mut store).map(|_| ())
        },
        iterations,
    )?;
    let publish_100b = time(
        &mut || {
            store.set_epoch_deadline(ticks);
            api.call_publish(&mut store, "bench", &small).map(|_| ())
        },
        iterations,
    )?;
    let publish_10kb = time(
        &mut || {
            store.set_epoch_deadline(ticks);
            api.call_publish(&mut store, "bench", &big).map(|_| ())
        },
        iterations,
    )?;
    let mut batch = Vec::new();
    for _ in 0..256 {
        switchyard_packed::push(&mut batch, "bench", &small);
    }
    let per_batch = time(
        &mut || {
            store.set_epoch_deadline(ticks);
            api.call_publish_batch(&mut store, &batch).map(|_| ())
        },
        (iterations / 256).max(1),
    )?;
    drop(rt);
    Ok(CallCosts {
        health,
        publish_100b,
        publish_10kb,
        publish_batched_100b: per_batch / 256.0,
    })
}
