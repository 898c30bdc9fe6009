//! Switchyard: a Pusher Channels protocol server whose cross-node adapters are sandboxed
//! WebAssembly components.
//!
//! # Layout
//! - `protocol`: wire types, names, signatures and codes; no I/O.
//! - `ws`: the WebSocket handshake, framing and one task per connection.
//! - `channels`: apps, subscriptions, presence, cache and signed-in users on this node.
//! - `http_api`: the Pusher REST API.
//! - `webhooks`: batched, signed, retried webhook delivery.
//! - `server`: the listener, routing and graceful shutdown.
//! - `cluster`: everything that crosses nodes: envelopes, presence replication, liveness,
//!   queries.
//! - `backplane`: the thin seam to whatever carries traffic between nodes.
//! - `plugin`: the WebAssembly adapter runtime: loading, sandbox, supervision.

pub mod backplane;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod http_api;
pub mod metrics;
pub mod plugin;
pub mod protocol;
pub mod server;
pub mod webhooks;
pub mod ws;
