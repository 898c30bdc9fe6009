//! The plugin runtime: loads adapter components, links them against the host interface,
//! sandboxes them, and supervises their incarnations.
//!
//! State lives at three levels: the process (`Runtime`: one engine and its compile cache), the
//! loaded adapter (`Supervised`: its linked `InstancePre`, subscriptions and status), and the
//! incarnation (one `Store` on its own thread, see `instance`).

#[doc(hidden)]
pub mod bench;
mod bindings;
mod borrowed;
pub mod error;
mod guest;
mod host_impl;
mod instance;
mod loader;
pub mod native;
mod outbox;
pub mod sandbox;
mod supervisor;
pub(crate) mod tls;

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

pub use bindings::{HealthStatus, CONTRACT_VERSION};
pub use error::{Failure, LoadError};
pub use host_impl::{Delivery, DeliveryFilter};
pub use loader::Loaded;
pub use supervisor::Supervised;

use crate::config::AdapterConfig;
use bindings::{BackplaneAdapter, BackplaneAdapterPre};
use host_impl::{Shared, StoreState};
use instance::Code;

/// Counters for one adapter, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct AdapterMetrics {
    /// `BackplaneStatus::code` of the adapter.
    pub state: AtomicU8,
    pub restarts: AtomicU64,
    pub publishes: AtomicU64,
    /// Publishes lost because no incarnation was live or its queue was full.
    pub publish_dropped: AtomicU64,
    /// Calls the adapter answered with an error.
    pub adapter_errors: AtomicU64,
    pub deliveries: AtomicU64,
    pub deliveries_dropped: AtomicU64,
    /// Connections refused by the allow-list.
    pub refused_connects: AtomicU64,
}

impl AdapterMetrics {
    pub fn render(&self, name: &str, out: &mut String) {
        let l = format!("{{adapter=\"{name}\"}}");
        let rows: [(&str, &str, &AtomicU64); 7] = [
            (
                "switchyard_adapter_restarts_total",
                "Adapter incarnations that ended in failure",
                &self.restarts,
            ),
            (
                "switchyard_adapter_publishes_total",
                "Messages handed to the adapter",
                &self.publishes,
            ),
            (
                "switchyard_adapter_publish_dropped_total",
                "Messages lost with no live adapter or a full queue",
                &self.publish_dropped,
            ),
            (
                "switchyard_adapter_errors_total",
                "Adapter calls answered with an error",
                &self.adapter_errors,
            ),
            (
                "switchyard_adapter_deliveries_total",
                "Messages the adapter delivered to the node",
                &self.deliveries,
            ),
            (
                "switchyard_adapter_deliveries_dropped_total",
                "Deliveries dropped on a full node queue",
                &self.deliveries_dropped,
            ),
            (
                "switchyard_adapter_refused_connects_total",
                "Connections refused by the allow-list",
                &self.refused_connects,
            ),
        ];
        let _ = writeln!(
            out,
            "# HELP switchyard_adapter_state 0 local, 1 starting, 2 running, 3 restarting, 4 failed, 5 stopped\n# TYPE switchyard_adapter_state gauge\nswitchyard_adapter_state{l} {}",
            self.state.load(Ordering::Relaxed)
        );
        for (n, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {n} {help}\n# TYPE {n} counter\n{n}{l} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// The process-wide part: one engine (with its epoch ticker) and the compile cache.
pub struct Runtime {
    loader: loader::Loader,
}

impl Runtime {
    pub fn new(cache_dir: Option<PathBuf>) -> wasmtime::Result<Self> {
        let engine = sandbox::engine()?;
        Ok(Self {
            loader: loader::Loader::new(engine, cache_dir),
        })
    }

    pub fn engine(&self) -> &Engine {
        self.loader.engine()
    }

    /// Loads and checks a component (compiling or reading the cache).
    pub fn load(&self, path: &Path) -> Result<Loaded, LoadError> {
        self.loader.load(path)
    }

    /// Links a loaded component against WASI (granting nothing) and the host interface.
    fn link(&self, loaded: &Loaded) -> Result<BackplaneAdapterPre<StoreState>, LoadError> {
        let link_err = |e: wasmtime::Error| LoadError::Link {
            path: loaded.path.clone(),
            reason: e.to_string(),
        };
        let mut linker = Linker::<StoreState>::new(self.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        BackplaneAdapter::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(link_err)?;
        borrowed::shadow(&mut linker).map_err(link_err)?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .map_err(link_err)?;
        BackplaneAdapterPre::new(pre).map_err(link_err)
    }

    /// Loads and links `path`: everything `switchyard plugin check` verifies.
    pub fn check(&self, path: &Path) -> Result<Loaded, LoadError> {
        let loaded = self.load(path)?;
        self.link(&loaded)?;
        Ok(loaded)
    }

    /// Loads the configured adapter and starts supervising it. Deliveries from the broker
    /// arrive on `deliveries`.
    pub fn start(
        &self,
        cfg: &AdapterConfig,
        node_id: &str,
        deliveries: mpsc::Sender<Delivery>,
    ) -> Result<(Supervised, Arc<AdapterMetrics>), LoadError> {
        self.start_filtered(cfg, node_id, deliveries, None)
    }

    /// `start`, with `keep` deciding which deliveries reach the node.
    pub fn start_filtered(
        &self,
        cfg: &AdapterConfig,
        node_id: &str,
        deliveries: mpsc::Sender<Delivery>,
        keep: Option<DeliveryFilter>,
    ) -> Result<(Supervised, Arc<AdapterMetrics>), LoadError> {
        let path = cfg.plugins_dir.join(format!("{}.wasm", cfg.driver));
        let loaded = self.load(&path)?;
        let pre = self.link(&loaded)?;
        tracing::info!(adapter = %cfg.driver, path = %path.display(), cached = loaded.from_cache, version = %loaded.version, "adapter loaded");
        Ok(supervise(
            Code::Component(Box::new(pre)),
            cfg,
            node_id,
            deliveries,
            keep,
        ))
    }

    /// `start` for an adapter compiled into the host process (see `native`): same runtime,
    /// no sandbox around its code. `cfg.driver` only names it.
    pub fn start_native(
        &self,
        factory: native::NativeFactory,
        cfg: &AdapterConfig,
        node_id: &str,
        deliveries: mpsc::Sender<Delivery>,
    ) -> (Supervised, Arc<AdapterMetrics>) {
        supervise(Code::Native(factory), cfg, node_id, deliveries, None)
    }
}

fn supervise(
    code: Code,
    cfg: &AdapterConfig,
    node_id: &str,
    deliveries: mpsc::Sender<Delivery>,
    keep: Option<DeliveryFilter>,
) -> (Supervised, Arc<AdapterMetrics>) {
    let metrics = Arc::new(AdapterMetrics::default());
    let shared = Shared {
        name: cfg.driver.as_str().into(),
        node_id: node_id.into(),
        allow: sandbox::AllowList::new(&cfg.allow),
        limits: cfg.limits.clone(),
        rt: tokio::runtime::Handle::current(),
        deliveries,
        keep,
        metrics: metrics.clone(),
        tls: Arc::new(tls::connector(cfg.tls_ca_file.as_deref())),
    };
    let (sup, _task) = Supervised::start(code, shared, cfg.config.to_string(), cfg.restart.clone());
    (sup, metrics)
}
