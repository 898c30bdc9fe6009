//! Adapters compiled for the host's own target, run through the same runtime as components:
//! the same incarnation thread, queue, host-owned sockets, limits on what they ask for, and
//! supervision. There is no sandbox around native code, so the server never loads it from
//! config; it exists to measure what the sandbox costs (`examples/adapter_bench`) and to debug
//! an adapter with native tools. A panic ends the incarnation like a trap.
//!
//! `switchyard-adapter-sdk` adapters plug in through a small bridge (see the bench).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::bindings::HostImports;
pub use super::bindings::{AdapterError, HealthStatus, HostError, LogLevel};
use super::guest::{Call, Guest};
use super::host_impl::StoreState;
use super::instance::IoEvent;
use super::outbox::Batch;
pub use switchyard_packed::MessageRef;

/// The adapter exports, natively. Same meaning as in `wit/adapter@0.1.0/adapter.wit`.
pub trait NativeAdapter {
    fn init(&mut self, config: &str, snapshot: Option<Vec<u8>>) -> Result<(), AdapterError>;
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), AdapterError>;
    fn publish_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), AdapterError>;
    fn subscribe(&mut self, topic: &str) -> Result<(), AdapterError>;
    fn unsubscribe(&mut self, topic: &str) -> Result<(), AdapterError>;
    fn on_connected(&mut self, conn: u32);
    fn on_data(&mut self, conn: u32, data: Vec<u8>);
    fn on_closed(&mut self, conn: u32, reason: String);
    fn on_timer(&mut self, timer: u32);
    fn health(&mut self) -> HealthStatus;
    fn shutdown(&mut self);
}

/// Builds one incarnation's adapter, given the host it calls (on the incarnation's thread).
pub type NativeFactory = Arc<dyn Fn(NativeHost) -> Box<dyn NativeAdapter> + Send + Sync>;

/// The host interface for a native adapter: the same checks and I/O a component gets.
/// Cheap to clone; valid on the incarnation's thread only.
#[derive(Clone)]
pub struct NativeHost(Rc<RefCell<StoreState>>);

impl NativeHost {
    fn with<R>(&self, f: impl FnOnce(&mut StoreState) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
    pub fn connect(&self, host: &str, port: u16, tls: bool) -> Result<u32, HostError> {
        self.with(|s| s.connect(host.to_owned(), port, tls))
    }
    pub fn send(&self, conn: u32, bytes: &[u8]) -> Result<(), HostError> {
        self.with(|s| s.send_slice(conn, bytes))
    }
    pub fn close(&self, conn: u32) {
        self.with(|s| s.close(conn))
    }
    pub fn set_timer(&self, after_ms: u64) -> Result<u32, HostError> {
        self.with(|s| s.set_timer(after_ms))
    }
    pub fn cancel_timer(&self, timer: u32) {
        self.with(|s| s.cancel_timer(timer))
    }
    pub fn deliver(&self, topic: &str, payload: &[u8]) -> Result<(), HostError> {
        self.with(|s| s.deliver(topic.to_owned(), payload.to_vec()))
    }
    /// `deliver-batch`: a `packed-messages` buffer (see `switchyard_packed`), copied once as a
    /// component's is when it leaves the sandbox.
    pub fn deliver_packed(&self, packed: &[u8]) -> Result<(), HostError> {
        self.with(|s| s.deliver_packed(Bytes::copy_from_slice(packed)))
    }
    pub fn log(&self, level: LogLevel, message: &str) {
        self.with(|s| s.log(level, message.to_owned()))
    }
    pub fn node_id(&self) -> String {
        self.with(|s| s.node_id())
    }
    pub fn now_ms(&self) -> u64 {
        self.with(|s| s.now_ms())
    }
}

/// A native adapter as the incarnation's `Guest`.
pub(super) struct Native {
    host: Rc<RefCell<StoreState>>,
    adapter: Box<dyn NativeAdapter>,
}

impl Native {
    pub fn new(factory: &NativeFactory, state: StoreState) -> Self {
        let host = Rc::new(RefCell::new(state));
        let adapter = factory(NativeHost(host.clone()));
        Self { host, adapter }
    }

    fn call<R>(&mut self, f: impl FnOnce(&mut dyn NativeAdapter) -> R) -> wasmtime::Result<R> {
        catch_unwind(AssertUnwindSafe(|| f(&mut *self.adapter))).map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            wasmtime::Error::msg(format!("the native adapter panicked: {why}"))
        })
    }
}

impl Guest for Native {
    fn init(&mut self, config: &str) -> Call {
        self.call(|a| a.init(config, None))
    }
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Call {
        self.call(|a| a.publish(topic, payload))
    }
    fn publish_packed(&mut self, batch: &Batch) -> Call {
        // Borrowed from the publishers' buffer; a component gets a copy in its memory instead.
        let Some(batch) = switchyard_packed::unpack(&batch.packed) else {
            return Ok(Err(AdapterError::Other("malformed publish batch".into())));
        };
        self.call(|a| a.publish_batch(&batch))
    }
    fn subscribe(&mut self, topic: &str) -> Call {
        self.call(|a| a.subscribe(topic))
    }
    fn unsubscribe(&mut self, topic: &str) -> Call {
        self.call(|a| a.unsubscribe(topic))
    }
    fn on_event(&mut self, ev: IoEvent) -> wasmtime::Result<()> {
        if !self.host.borrow_mut().host.accept_event(&ev) {
            return Ok(());
        }
        self.call(|a| match ev {
            IoEvent::Connected(c) => a.on_connected(c),
            IoEvent::Data(c, d) => a.on_data(c, d),
            IoEvent::Closed(c, why) => a.on_closed(c, why),
            IoEvent::Timer(t) => a.on_timer(t),
        })
    }
    fn health(&mut self) -> wasmtime::Result<HealthStatus> {
        self.call(|a| a.health())
    }
    fn shutdown(&mut self) {
        let _ = self.call(|a| a.shutdown());
    }
}
