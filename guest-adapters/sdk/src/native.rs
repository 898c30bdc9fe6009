//! The adapter's host, natively: the same functions as the component's imports, dispatched to a
//! [`Host`] installed on the calling thread. It lets a host process run an adapter's code
//! compiled for its own target (to measure what the sandbox costs, or to debug with native
//! tools); protocol unit tests need none of it.

use std::cell::RefCell;

use crate::{ConnId, HostError, LogLevel, TimerId};

/// What a native host provides: the `host` interface of the contract, one method per function.
pub trait Host {
    fn connect(&mut self, host: &str, port: u16, tls: bool) -> Result<ConnId, HostError>;
    fn send(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), HostError>;
    fn close(&mut self, conn: ConnId);
    fn set_timer(&mut self, after_ms: u64) -> Result<TimerId, HostError>;
    fn cancel_timer(&mut self, timer: TimerId);
    fn deliver(&mut self, topic: &str, payload: &[u8]) -> Result<(), HostError>;
    /// `deliver-batch`: a `packed-messages` buffer (see `switchyard_packed`).
    fn deliver_packed(&mut self, packed: &[u8]) -> Result<(), HostError>;
    fn log(&mut self, level: LogLevel, message: &str);
    fn node_id(&mut self) -> String;
    fn now_ms(&mut self) -> u64;
}

thread_local! {
    static HOST: RefCell<Option<Box<dyn Host>>> = const { RefCell::new(None) };
}

/// Installs `host` for adapters called on this thread, returning the one it replaces.
pub fn install(host: Box<dyn Host>) -> Option<Box<dyn Host>> {
    HOST.with(|h| h.borrow_mut().replace(host))
}

/// Removes this thread's host.
pub fn uninstall() -> Option<Box<dyn Host>> {
    HOST.with(|h| h.borrow_mut().take())
}

fn with<R>(f: impl FnOnce(&mut dyn Host) -> R) -> R {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let host = h
            .as_deref_mut()
            .expect("no switchyard_adapter_sdk::native::Host installed on this thread");
        f(host)
    })
}

/// The `host` functions, with the signatures the component bindings have.
pub mod calls {
    use super::with;
    use crate::{ConnId, HostError, LogLevel, MessageRef, TimerId};

    pub fn connect(host: &str, port: u16, tls: bool) -> Result<ConnId, HostError> {
        with(|h| h.connect(host, port, tls))
    }
    pub fn send(conn: ConnId, bytes: &[u8]) -> Result<(), HostError> {
        with(|h| h.send(conn, bytes))
    }
    pub fn close(conn: ConnId) {
        with(|h| h.close(conn))
    }
    pub fn set_timer(after_ms: u64) -> Result<TimerId, HostError> {
        with(|h| h.set_timer(after_ms))
    }
    pub fn cancel_timer(timer: TimerId) {
        with(|h| h.cancel_timer(timer))
    }
    pub fn deliver(topic: &str, payload: &[u8]) -> Result<(), HostError> {
        with(|h| h.deliver(topic, payload))
    }
    pub fn deliver_batch(messages: &[MessageRef<'_>]) -> Result<(), HostError> {
        deliver_packed(&crate::packed::pack(messages))
    }
    pub fn deliver_packed(packed: &[u8]) -> Result<(), HostError> {
        with(|h| h.deliver_packed(packed))
    }
    pub fn log(level: LogLevel, message: &str) {
        with(|h| h.log(level, message))
    }
    pub fn node_id() -> String {
        with(|h| h.node_id())
    }
    pub fn now_ms() -> u64 {
        with(|h| h.now_ms())
    }
}
