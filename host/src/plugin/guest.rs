//! What an incarnation calls: the adapter's exports, whether they run as a sandboxed component
//! or as native code (see `native`). The incarnation's loop is written once against `Guest`.

use wasmtime::Store;

use super::bindings::{
    AdapterError, AdapterExports, BackplaneAdapter, BackplaneAdapterPre, HealthStatus,
};
use super::error::Failure;
use super::host_impl::StoreState;
use super::instance::IoEvent;
use super::outbox::Batch;
use super::sandbox;

/// A guest call's outcome: `Err` ends the incarnation (a trap, a missed deadline, a panic),
/// `Ok(Err)` is the adapter's own error, reported while it lives on.
pub type Call = wasmtime::Result<Result<(), AdapterError>>;

/// The adapter exports, as the incarnation's thread calls them.
pub trait Guest {
    fn init(&mut self, config: &str) -> Call;
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Call;
    /// `publish-batch` with the publishers' `packed-messages` buffer (see `outbox`).
    fn publish_packed(&mut self, batch: &Batch) -> Call;
    fn subscribe(&mut self, topic: &str) -> Call;
    fn unsubscribe(&mut self, topic: &str) -> Call;
    /// Hands an I/O result to the matching callback, unless its socket or timer is gone.
    fn on_event(&mut self, ev: IoEvent) -> wasmtime::Result<()>;
    fn health(&mut self) -> wasmtime::Result<HealthStatus>;
    fn shutdown(&mut self);
}

/// A component instance in its own store, with the CPU deadline re-armed before every call
/// (deadlines count from when they are set).
pub struct Wasm {
    store: Store<StoreState>,
    bindings: BackplaneAdapter,
    ticks: u64,
}

impl Wasm {
    pub fn instantiate(
        pre: &BackplaneAdapterPre<StoreState>,
        mut store: Store<StoreState>,
    ) -> Result<Self, Failure> {
        let ticks = sandbox::deadline_ticks(&store.data().host.shared.limits);
        store.set_epoch_deadline(ticks);
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| Failure::Instantiate(e.to_string()))?;
        Ok(Self {
            store,
            bindings,
            ticks,
        })
    }

    /// The store, armed for one call, and the adapter's exports.
    fn arm(&mut self) -> (&mut Store<StoreState>, &AdapterExports) {
        self.store.set_epoch_deadline(self.ticks);
        (&mut self.store, self.bindings.switchyard_adapter_adapter())
    }
}

impl Guest for Wasm {
    fn init(&mut self, config: &str) -> Call {
        let (store, api) = self.arm();
        api.call_init(store, config, None)
    }
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Call {
        let (store, api) = self.arm();
        api.call_publish(store, topic, payload)
    }
    fn publish_packed(&mut self, batch: &Batch) -> Call {
        // Packed by the publishers already: it crosses into the guest's memory in one copy.
        let (store, api) = self.arm();
        api.call_publish_batch(store, &batch.packed)
    }
    fn subscribe(&mut self, topic: &str) -> Call {
        let (store, api) = self.arm();
        api.call_subscribe(store, topic)
    }
    fn unsubscribe(&mut self, topic: &str) -> Call {
        let (store, api) = self.arm();
        api.call_unsubscribe(store, topic)
    }
    fn on_event(&mut self, ev: IoEvent) -> wasmtime::Result<()> {
        if !self.store.data_mut().host.accept_event(&ev) {
            return Ok(());
        }
        let (store, api) = self.arm();
        match ev {
            IoEvent::Connected(c) => api.call_on_connected(store, c),
            IoEvent::Data(c, d) => api.call_on_data(store, c, &d),
            IoEvent::Closed(c, why) => api.call_on_closed(store, c, &why),
            IoEvent::Timer(t) => api.call_on_timer(store, t),
        }
    }
    fn health(&mut self) -> wasmtime::Result<HealthStatus> {
        let (store, api) = self.arm();
        api.call_health(store)
    }
    fn shutdown(&mut self) {
        let (store, api) = self.arm();
        let _ = api.call_shutdown(store);
    }
}
