//! Topic names the cluster uses on the backplane. Adapters add their own prefix and map the
//! names onto what their broker allows; to them these are opaque strings.

/// Control traffic every node receives: heartbeats, presence, occupancy, queries, terminate.
pub const CONTROL: &str = "ctl";

/// Replies addressed to one node.
pub fn node(id: u32) -> String {
    format!("node:{id}")
}

/// Every event of an app (broadcast routing), and cache-channel events under either routing,
/// so every node's cache holds the last event.
pub fn app(app: &str) -> String {
    format!("app:{app}")
}

/// One channel's events (interest routing).
pub fn channel(app: &str, channel: &str) -> String {
    format!("ch:{app}:{channel}")
}

/// Whether `topic` is a per-channel topic (interest routing).
pub fn is_channel(topic: &str) -> bool {
    topic.starts_with("ch:")
}
