//! Runs a `switchyard-adapter-sdk` adapter natively through the host's plugin runtime: the
//! SDK's `host` functions reach the runtime's `NativeHost`, and the runtime's calls reach the
//! adapter's trait methods. Only type conversions live here.

use std::sync::Arc;

use switchyard::plugin::native::{
    AdapterError, HealthStatus, HostError, LogLevel, MessageRef, NativeAdapter, NativeFactory,
    NativeHost,
};
use switchyard_adapter_sdk as sdk;

/// A factory for the runtime that builds `A` natively.
pub fn factory<A: sdk::Adapter>() -> NativeFactory {
    Arc::new(|host: NativeHost| {
        // The factory runs on the incarnation's thread, where the adapter will be called.
        sdk::native::install(Box::new(Link(host)));
        Box::new(Bridge::<A>(None))
    })
}

struct Bridge<A>(Option<A>);

impl<A> Drop for Bridge<A> {
    /// The thread's SDK host holds the incarnation's sockets and timers: let them go with the
    /// adapter, before the runtime reports the incarnation ended.
    fn drop(&mut self) {
        self.0 = None;
        sdk::native::uninstall();
    }
}

impl<A: sdk::Adapter> Bridge<A> {
    fn with<R>(
        &mut self,
        f: impl FnOnce(&mut A) -> Result<R, sdk::Error>,
    ) -> Result<R, AdapterError> {
        match self.0.as_mut() {
            Some(a) => f(a).map_err(adapter_error),
            None => Err(AdapterError::Unavailable("adapter not initialised".into())),
        }
    }
}

impl<A: sdk::Adapter> NativeAdapter for Bridge<A> {
    fn init(&mut self, config: &str, snapshot: Option<Vec<u8>>) -> Result<(), AdapterError> {
        self.0 = Some(A::init(config, snapshot).map_err(adapter_error)?);
        Ok(())
    }
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), AdapterError> {
        self.with(|a| a.publish(topic, payload))
    }
    fn publish_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), AdapterError> {
        extra_work(messages.len());
        // One type on both sides: both come from `switchyard-packed`.
        self.with(|a| a.publish_batch(messages))
    }
    fn subscribe(&mut self, topic: &str) -> Result<(), AdapterError> {
        self.with(|a| a.subscribe(topic))
    }
    fn unsubscribe(&mut self, topic: &str) -> Result<(), AdapterError> {
        self.with(|a| a.unsubscribe(topic))
    }
    fn on_connected(&mut self, conn: u32) {
        if let Some(a) = self.0.as_mut() {
            a.on_connected(conn);
        }
    }
    fn on_data(&mut self, conn: u32, data: Vec<u8>) {
        // About 140 bytes per pub/sub message of 100 B on the wire.
        extra_work(data.len() / 140);
        if let Some(a) = self.0.as_mut() {
            a.on_data(conn, data);
        }
    }
    fn on_closed(&mut self, conn: u32, reason: String) {
        if let Some(a) = self.0.as_mut() {
            a.on_closed(conn, reason);
        }
    }
    fn on_timer(&mut self, timer: u32) {
        if let Some(a) = self.0.as_mut() {
            a.on_timer(timer);
        }
    }
    fn health(&mut self) -> HealthStatus {
        match self.0.as_ref().map(|a| a.health()) {
            None | Some(sdk::Health::Starting) => HealthStatus::Starting,
            Some(sdk::Health::Ready) => HealthStatus::Ready,
            Some(sdk::Health::Degraded(why)) => HealthStatus::Degraded(why),
        }
    }
    fn shutdown(&mut self) {
        if let Some(a) = self.0.as_mut() {
            a.shutdown();
        }
    }
}

fn adapter_error(e: sdk::Error) -> AdapterError {
    match e {
        sdk::Error::InvalidConfig(m) => AdapterError::InvalidConfig(m),
        sdk::Error::Unavailable(m) => AdapterError::Unavailable(m),
        sdk::Error::Other(m) => AdapterError::Other(m),
    }
}

fn sdk_host_error(e: HostError) -> sdk::HostError {
    match e {
        HostError::NotAllowed(m) => sdk::HostError::NotAllowed(m),
        HostError::Limit(m) => sdk::HostError::Limit(m),
        HostError::UnknownHandle => sdk::HostError::UnknownHandle,
    }
}

/// The SDK's native host, answered by the runtime.
struct Link(NativeHost);

impl sdk::native::Host for Link {
    fn connect(&mut self, host: &str, port: u16, tls: bool) -> Result<u32, sdk::HostError> {
        self.0.connect(host, port, tls).map_err(sdk_host_error)
    }
    fn send(&mut self, conn: u32, bytes: &[u8]) -> Result<(), sdk::HostError> {
        self.0.send(conn, bytes).map_err(sdk_host_error)
    }
    fn close(&mut self, conn: u32) {
        self.0.close(conn)
    }
    fn set_timer(&mut self, after_ms: u64) -> Result<u32, sdk::HostError> {
        self.0.set_timer(after_ms).map_err(sdk_host_error)
    }
    fn cancel_timer(&mut self, timer: u32) {
        self.0.cancel_timer(timer)
    }
    fn deliver(&mut self, topic: &str, payload: &[u8]) -> Result<(), sdk::HostError> {
        self.0.deliver(topic, payload).map_err(sdk_host_error)
    }
    fn deliver_packed(&mut self, packed: &[u8]) -> Result<(), sdk::HostError> {
        self.0.deliver_packed(packed).map_err(sdk_host_error)
    }
    fn log(&mut self, level: sdk::LogLevel, message: &str) {
        let level = match level {
            sdk::LogLevel::Trace => LogLevel::Trace,
            sdk::LogLevel::Debug => LogLevel::Debug,
            sdk::LogLevel::Info => LogLevel::Info,
            sdk::LogLevel::Warn => LogLevel::Warn,
            sdk::LogLevel::Error => LogLevel::Error,
        };
        self.0.log(level, message)
    }
    fn node_id(&mut self) -> String {
        self.0.node_id()
    }
    fn now_ms(&mut self) -> u64 {
        self.0.now_ms()
    }
}

/// `ADAPTER_BENCH_NATIVE_EXTRA_NS`: busy time added to the native adapter per message, to see
/// how the end-to-end figures respond to a slower adapter (the sandbox's cost, simulated).
fn extra_work(messages: usize) {
    static NS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::env::var("ADAPTER_BENCH_NATIVE_EXTRA_NS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    if *NS == 0 {
        return;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_nanos(*NS * messages as u64);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}
