//! The seam between the node and whatever carries its traffic to other nodes: a thin trait
//! that the WebAssembly adapter runtime implements (and an in-memory fake can, for tests).
//! Messages are opaque bytes on named topics; what they mean is the cluster layer's business.

use bytes::Bytes;

/// A message the backplane received on a topic this node subscribed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub payload: Bytes,
}

pub trait Backplane: Send + Sync + 'static {
    /// Sends `payload` to every node subscribed to `topic`. Never blocks; may drop (counted).
    fn publish(&self, topic: &str, payload: Bytes);
    /// Starts receiving `topic`. Idempotent.
    fn subscribe(&self, topic: &str);
    /// Stops receiving `topic`. Idempotent.
    fn unsubscribe(&self, topic: &str);
    fn status(&self) -> BackplaneStatus;
}

/// Where a backplane stands, for `/up` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackplaneStatus {
    /// Single node: nothing to carry.
    Local,
    Starting,
    Running,
    /// An incarnation failed and a new one is being started.
    Restarting(String),
    /// Gave up after repeated failures; the node serves its local clients only.
    Failed(String),
    Stopped,
}

impl BackplaneStatus {
    /// The value of the `switchyard_adapter_state` gauge.
    pub fn code(&self) -> u8 {
        match self {
            Self::Local => 0,
            Self::Starting => 1,
            Self::Running => 2,
            Self::Restarting(_) => 3,
            Self::Failed(_) => 4,
            Self::Stopped => 5,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting(_) => "restarting",
            Self::Failed(_) => "failed",
            Self::Stopped => "stopped",
        }
    }
}
