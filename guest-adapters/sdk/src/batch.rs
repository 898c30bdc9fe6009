//! Deliveries packed as an adapter decodes them: one buffer, reused from read to read, that
//! crosses to the host in one `deliver-batch` call with no intermediate list of messages.

use crate::{host, HostError};

/// Messages waiting for one `deliver-batch` call, already in `packed-messages` form.
#[derive(Debug, Default)]
pub struct Batch {
    packed: Vec<u8>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one message.
    pub fn push(&mut self, topic: &str, payload: &[u8]) {
        crate::packed::push(&mut self.packed, topic, payload);
    }

    /// Bytes packed so far (each message costs 8 more than its topic and payload).
    pub fn bytes(&self) -> usize {
        self.packed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// Hands every message to the host in one call and empties the batch, keeping its
    /// buffer. An empty batch makes no call.
    pub fn deliver(&mut self) -> Result<(), HostError> {
        if self.packed.is_empty() {
            return Ok(());
        }
        let result = host::deliver_packed(&self.packed);
        self.packed.clear();
        result
    }
}
