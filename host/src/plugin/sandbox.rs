//! The sandbox around one adapter instance: the engine's CPU interruption, the store's memory
//! limits, a WASI context that grants nothing, and the allow-list of broker endpoints.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use crate::config::SandboxLimits;

/// How often the engine's epoch advances; CPU deadlines are whole ticks of this.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Builds the one engine the process uses and starts its epoch ticker.
pub fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    // Epoch interruption is the cheaper CPU limit (10-25 % vs 20-40 % for fuel).
    config.epoch_interruption(true);
    // On by default in 48 and 2.5-4x slower per call; we use no component-model async.
    config.concurrency_support(false);
    // For profiling guests with `perf`: names JIT code in /tmp/perf-<pid>.map.
    if std::env::var_os("SWITCHYARD_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| wasmtime::Error::msg(format!("starting the epoch ticker: {e}")))?;
    Ok(engine)
}

/// Ticks a guest call may run: the configured deadline rounded up, at least one full tick.
pub fn deadline_ticks(limits: &SandboxLimits) -> u64 {
    let tick = EPOCH_TICK.as_millis() as u64;
    limits.call_deadline_ms.div_ceil(tick).max(1) + 1
}

/// Memory and table limits for one store. One instance, its memories and tables, no more.
pub fn store_limits(limits: &SandboxLimits) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .instances(16)
        .memories(16)
        .tables(64)
        .table_elements(100_000)
        .trap_on_grow_failure(true)
        .build()
}

/// A WASI context that grants nothing: no files, no environment, no arguments, no stdio, no
/// sockets of its own. Randomness and clocks stay, as the Rust standard library needs them.
pub fn wasi_ctx() -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    b.build()
}

/// The broker endpoints an adapter may open, from `adapter.allow`.
#[derive(Debug, Default)]
pub struct AllowList {
    entries: Vec<(String, u16)>,
}

impl AllowList {
    /// Parses `host:port` entries (validated by the config loader).
    pub fn new(entries: &[String]) -> Arc<Self> {
        let entries = entries
            .iter()
            .filter_map(|e| {
                let (h, p) = e.rsplit_once(':')?;
                Some((
                    h.trim_matches(['[', ']']).to_ascii_lowercase(),
                    p.parse().ok()?,
                ))
            })
            .collect();
        Arc::new(Self { entries })
    }

    /// Whether the guest may connect to `host`:`port`, compared by name as given (the host
    /// resolves names itself, after this check).
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.entries.iter().any(|(h, p)| *p == port && *h == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_host_and_port_exactly() {
        let a = AllowList::new(&[
            "Redis.internal:6379".into(),
            "127.0.0.1:4222".into(),
            "[::1]:1".into(),
        ]);
        assert!(a.permits("redis.internal", 6379));
        assert!(a.permits("127.0.0.1", 4222));
        assert!(a.permits("::1", 1));
        assert!(!a.permits("redis.internal", 6380));
        assert!(!a.permits("127.0.0.2", 4222));
        assert!(!AllowList::new(&[]).permits("127.0.0.1", 6379));
    }

    #[test]
    fn deadlines_round_up_to_ticks() {
        let l = SandboxLimits {
            call_deadline_ms: 12,
            ..SandboxLimits::default()
        };
        assert_eq!(deadline_ticks(&l), 4);
    }
}
