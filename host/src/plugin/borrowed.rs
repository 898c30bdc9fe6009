//! The two host functions that carry bulk bytes out of a guest, `send` and `deliver-batch`,
//! defined over the generated bindings' versions so they read the guest's memory in place.
//! The generated ones lift a `list<u8>` into a fresh `Vec` element by element; here `send`
//! writes to the socket straight from guest memory (copying only what must wait) and
//! `deliver-batch` makes its one owned copy with `memcpy`.

use bytes::Bytes;
use wasmtime::component::{Linker, WasmList};

use super::bindings::HostError;
use super::host_impl::StoreState;

/// The contract's host interface, as the component imports it.
const HOST_INTERFACE: &str = "switchyard:adapter/host@0.1.0";

/// Replaces the generated `send` and `deliver-batch` in `linker`, which must already hold the
/// host interface.
pub fn shadow(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "send",
        |store, (conn, bytes): (u32, WasmList<u8>)| -> wasmtime::Result<(Result<(), HostError>,)> {
            let bytes = bytes.as_le_slice(&store);
            Ok((store.data().send_slice(conn, bytes),))
        },
    )?;
    host.func_wrap(
        "deliver-batch",
        |store, (messages,): (WasmList<u8>,)| -> wasmtime::Result<(Result<(), HostError>,)> {
            let owned = Bytes::copy_from_slice(messages.as_le_slice(&store));
            Ok((store.data().deliver_packed(owned),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
