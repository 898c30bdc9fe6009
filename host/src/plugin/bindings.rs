//! The only `bindgen!`: host-side bindings for `switchyard:adapter@0.1.0`.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/adapter@0.1.0",
        world: "backplane-adapter",
    });
}

pub use generated::exports::switchyard::adapter::adapter::Guest as AdapterExports;
pub use generated::switchyard::adapter::host::Host as HostImports;
pub use generated::switchyard::adapter::types::{
    AdapterError, HealthStatus, Host as TypesHost, HostError, LogLevel,
};
pub use generated::{BackplaneAdapter, BackplaneAdapterPre};

/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The export every adapter must provide, with its version.
pub const ADAPTER_EXPORT: &str = "switchyard:adapter/adapter@0.1.0";
/// The package prefix shared by every version of the contract.
pub const PACKAGE_PREFIX: &str = "switchyard:adapter/";
