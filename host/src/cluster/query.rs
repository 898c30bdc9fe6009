//! Cross-node queries: a request on the control topic, one reply per node on the asker's own
//! topic, summed as they arrive, answered when every node has replied or the timeout passes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::wire::QueryKind;
use crate::channels::App;

/// Subscription counts per occupied channel, summed over the nodes that answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    pub counts: HashMap<String, u32>,
    /// Nodes that did not answer in time; empty when the answer is complete.
    pub missing: Vec<u32>,
}

struct Pending {
    waiting: HashSet<u32>,
    counts: HashMap<String, u32>,
    done: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
pub struct Queries {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

impl Queries {
    /// Registers a query waiting for `peers`, starting from this node's own `local` answer.
    pub fn open(
        &self,
        peers: HashSet<u32>,
        local: HashMap<String, u32>,
    ) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(
            id,
            Pending {
                waiting: peers,
                counts: local,
                done: Some(tx),
            },
        );
        (id, rx)
    }

    /// Adds `from`'s reply; ignored when the query is over or `from` already answered.
    pub fn reply(&self, id: u64, from: u32, channels: Vec<(String, u32)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = pending.get_mut(&id) else {
            return;
        };
        if !p.waiting.remove(&from) {
            return;
        }
        for (name, n) in channels {
            let c = p.counts.entry(name).or_insert(0);
            *c = c.saturating_add(n);
        }
        if p.waiting.is_empty() {
            if let Some(tx) = p.done.take() {
                let _ = tx.send(());
            }
        }
    }

    /// A node died: nobody waits for it any longer.
    pub fn forget_node(&self, node: u32) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for p in pending.values_mut() {
            if p.waiting.remove(&node) && p.waiting.is_empty() {
                if let Some(tx) = p.done.take() {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Ends a query and returns what was gathered.
    pub fn close(&self, id: u64) -> Answer {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.remove(&id) {
            Some(p) => Answer {
                counts: p.counts,
                missing: p.waiting.into_iter().collect(),
            },
            None => Answer::default(),
        }
    }
}

/// This node's own answer: local subscription counts of the channels asked about.
pub fn local_answer(app: &App, kind: &QueryKind) -> HashMap<String, u32> {
    match kind {
        QueryKind::Channels { prefix } => app
            .registry
            .list(prefix)
            .into_iter()
            .map(|(name, s)| (name, s.subscription_count as u32))
            .collect(),
        QueryKind::Channel { name } => app
            .registry
            .stats(name)
            .map(|s| (name.clone(), s.subscription_count as u32))
            .into_iter()
            .collect(),
        QueryKind::Names { names } => names
            .iter()
            .filter_map(|n| {
                let s = app.registry.stats(n)?;
                Some((n.clone(), s.subscription_count as u32))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_summed_once_per_node() {
        let q = Queries::default();
        let (id, mut rx) = q.open(
            [1, 2].into_iter().collect(),
            [("a".to_string(), 1)].into_iter().collect(),
        );
        q.reply(id, 1, vec![("a".into(), 2), ("b".into(), 1)]);
        q.reply(id, 1, vec![("a".into(), 100)]);
        assert!(rx.try_recv().is_err(), "still waiting for node 2");
        q.reply(id, 2, vec![]);
        assert!(rx.try_recv().is_ok());
        let a = q.close(id);
        assert_eq!(a.counts["a"], 3);
        assert_eq!(a.counts["b"], 1);
        assert!(a.missing.is_empty());
    }

    #[test]
    fn a_silent_node_makes_the_answer_partial() {
        let q = Queries::default();
        let (id, _rx) = q.open([7].into_iter().collect(), HashMap::new());
        assert_eq!(q.close(id).missing, vec![7]);
        let (id, mut rx) = q.open([8].into_iter().collect(), HashMap::new());
        q.forget_node(8);
        assert!(rx.try_recv().is_ok());
        assert!(q.close(id).missing.is_empty());
    }
}
