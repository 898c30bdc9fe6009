//! The loopback adapter: a one-node "broker" in memory. A publish on a subscribed topic is
//! delivered straight back to the host. Used by host tests that need a working component.

use std::collections::HashSet;

use switchyard_adapter_sdk::{export_adapter, host, Adapter, Error};

/// Which topics are subscribed; the whole state, so any incarnation can rebuild it from replay.
#[derive(Default)]
pub struct Loopback {
    topics: HashSet<String>,
}

impl Loopback {
    /// The topics a publish to `topic` should reach (itself, when subscribed).
    pub fn routes(&self, topic: &str) -> bool {
        self.topics.contains(topic)
    }
}

impl Adapter for Loopback {
    fn init(_config: &str, _snapshot: Option<Vec<u8>>) -> Result<Self, Error> {
        Ok(Self::default())
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        if self.routes(topic) {
            host::deliver(topic, payload).map_err(|e| Error::Other(format!("{e:?}")))?;
        }
        Ok(())
    }

    fn subscribe(&mut self, topic: &str) -> Result<(), Error> {
        self.topics.insert(topic.to_owned());
        Ok(())
    }

    fn unsubscribe(&mut self, topic: &str) -> Result<(), Error> {
        self.topics.remove(topic);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
}

export_adapter!(Loopback);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_subscribed_topics() {
        let mut l = Loopback::default();
        l.topics.insert("a".into());
        assert!(l.routes("a"));
        assert!(!l.routes("b"));
    }
}
