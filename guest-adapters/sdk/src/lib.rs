//! The guest SDK: implement [`Adapter`] for a type and call [`export_adapter!`] on it, and the
//! crate builds into a component for the `switchyard:adapter/backplane-adapter@0.1.0` world.
//!
//! The generated bindings stay in the hidden `wit` module; adapters see a plain Rust trait,
//! the [`host`] functions, and a handful of types.

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../../wit/adapter@0.1.0",
        world: "backplane-adapter",
        pub_export_macro: true,
        default_bindings_module: "switchyard_adapter_sdk::wit",
    });
}

mod batch;

pub use batch::Batch;
pub use switchyard_packed as packed;
pub use switchyard_packed::MessageRef;
pub use wit::switchyard::adapter::types::{
    AdapterError as Error, HealthStatus as Health, HostError, LogLevel,
};

/// A host connection handle.
pub type ConnId = u32;
/// A host timer handle.
pub type TimerId = u32;

/// What the host gives an adapter. Nothing here blocks.
#[cfg(target_arch = "wasm32")]
pub mod host {
    pub use crate::wit::switchyard::adapter::host::{
        cancel_timer, close, connect, deliver, log, node_id, now_ms, send, set_timer,
    };
    use crate::{HostError, MessageRef};

    /// `deliver` for many messages in one call across the sandbox (see `deliver-batch`).
    pub fn deliver_batch(messages: &[MessageRef<'_>]) -> Result<(), HostError> {
        deliver_packed(&crate::packed::pack(messages))
    }

    /// `deliver-batch` with messages already packed (see [`crate::Batch`]).
    pub fn deliver_packed(packed: &[u8]) -> Result<(), HostError> {
        crate::wit::switchyard::adapter::host::deliver_batch(packed)
    }
}

/// Natively the same functions reach whatever [`native::Host`] is installed on the thread.
#[cfg(not(target_arch = "wasm32"))]
pub use native::calls as host;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

/// A backplane adapter: one broker's protocol as a sans-IO state machine.
///
/// The host calls one instance from one thread; every method should return quickly. See
/// `wit/adapter@0.1.0/adapter.wit` for the meaning of each call, its idempotency and errors.
pub trait Adapter: Sized + 'static {
    /// Builds the adapter from its JSON config, or from a predecessor's snapshot (hot swap).
    fn init(config: &str, snapshot: Option<Vec<u8>>) -> Result<Self, Error>;
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), Error>;
    /// Defaults to one `publish` per message; override to pipeline. The messages borrow the
    /// host's batch buffer.
    fn publish_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), Error> {
        for m in messages {
            self.publish(m.topic, m.payload)?;
        }
        Ok(())
    }
    fn subscribe(&mut self, topic: &str) -> Result<(), Error>;
    fn unsubscribe(&mut self, topic: &str) -> Result<(), Error>;
    fn on_connected(&mut self, _conn: ConnId) {}
    fn on_data(&mut self, _conn: ConnId, _data: Vec<u8>) {}
    fn on_closed(&mut self, _conn: ConnId, _reason: String) {}
    fn on_timer(&mut self, _timer: TimerId) {}
    fn health(&self) -> Health {
        Health::Ready
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, Error> {
        Err(Error::Other(
            "this adapter cannot hand over its connections".into(),
        ))
    }
    fn shutdown(&mut self) {}
}

#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    use super::{Adapter, Error};

    thread_local! {
        // A component instance is single-threaded; this holds the one adapter value.
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn init<A: Adapter>(config: &str, snapshot: Option<Vec<u8>>) -> Result<(), Error> {
        let adapter = A::init(config, snapshot)?;
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(adapter)));
        Ok(())
    }

    /// Runs `f` on the adapter, or returns `None` before a successful `init`.
    pub fn with<A: Adapter, R>(f: impl FnOnce(&mut A) -> R) -> Option<R> {
        STATE.with(|s| {
            let mut slot = s.borrow_mut();
            slot.as_mut().and_then(|b| b.downcast_mut::<A>()).map(f)
        })
    }

    pub fn not_ready() -> Error {
        Error::Unavailable("adapter not initialised".into())
    }
}

/// Exports `$t: Adapter` as the component's `adapter` interface. Only on wasm32: native
/// builds (unit tests of the protocol code) get no exports.
#[macro_export]
macro_rules! export_adapter {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SwitchyardAdapter;

            impl $crate::wit::exports::switchyard::adapter::adapter::Guest for __SwitchyardAdapter {
                fn init(config: String, snapshot: Option<Vec<u8>>) -> Result<(), $crate::Error> {
                    $crate::__private::init::<$t>(&config, snapshot)
                }
                fn publish(topic: String, payload: Vec<u8>) -> Result<(), $crate::Error> {
                    $crate::__private::with::<$t, _>(|a| a.publish(&topic, &payload))
                        .unwrap_or_else(|| Err($crate::__private::not_ready()))
                }
                fn publish_batch(messages: Vec<u8>) -> Result<(), $crate::Error> {
                    let Some(messages) = $crate::packed::unpack(&messages) else {
                        return Err($crate::Error::Other("malformed publish batch".into()));
                    };
                    $crate::__private::with::<$t, _>(|a| a.publish_batch(&messages))
                        .unwrap_or_else(|| Err($crate::__private::not_ready()))
                }
                fn subscribe(topic: String) -> Result<(), $crate::Error> {
                    $crate::__private::with::<$t, _>(|a| a.subscribe(&topic))
                        .unwrap_or_else(|| Err($crate::__private::not_ready()))
                }
                fn unsubscribe(topic: String) -> Result<(), $crate::Error> {
                    $crate::__private::with::<$t, _>(|a| a.unsubscribe(&topic))
                        .unwrap_or_else(|| Err($crate::__private::not_ready()))
                }
                fn on_connected(conn: u32) {
                    $crate::__private::with::<$t, _>(|a| a.on_connected(conn));
                }
                fn on_data(conn: u32, data: Vec<u8>) {
                    $crate::__private::with::<$t, _>(|a| a.on_data(conn, data));
                }
                fn on_closed(conn: u32, reason: String) {
                    $crate::__private::with::<$t, _>(|a| a.on_closed(conn, reason));
                }
                fn on_timer(timer: u32) {
                    $crate::__private::with::<$t, _>(|a| a.on_timer(timer));
                }
                fn health() -> $crate::Health {
                    $crate::__private::with::<$t, _>(|a| a.health())
                        .unwrap_or($crate::Health::Starting)
                }
                fn snapshot() -> Result<Vec<u8>, $crate::Error> {
                    $crate::__private::with::<$t, _>(|a| a.snapshot())
                        .unwrap_or_else(|| Err($crate::__private::not_ready()))
                }
                fn shutdown() {
                    $crate::__private::with::<$t, _>(|a| a.shutdown());
                }
            }

    $crate::wit::export!(__SwitchyardAdapter with_types_in $crate::wit);
        };
    };
}
