//! Counters of the cluster layer, exported at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Other nodes currently heard from.
    pub peers: AtomicU64,
    /// Messages received from other nodes and applied.
    pub received: AtomicU64,
    /// Messages dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Messages from other nodes that never arrived (holes in their sequence numbers).
    pub gaps: AtomicU64,
    /// Messages that could not be decoded or named an unknown app or invalid channel.
    pub invalid: AtomicU64,
    /// Messages this node sent to the backplane.
    pub sent: AtomicU64,
    /// Nodes declared dead after going silent.
    pub node_deaths: AtomicU64,
    /// Snapshots of this node's state sent to others.
    pub snapshots_sent: AtomicU64,
    pub queries: AtomicU64,
    /// Queries answered before every node replied (timeout).
    pub partial_queries: AtomicU64,
}

impl ClusterMetrics {
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP switchyard_cluster_peers Other nodes currently heard from\n# TYPE switchyard_cluster_peers gauge\nswitchyard_cluster_peers {}",
            self.peers.load(Ordering::Relaxed)
        );
        let rows: [(&str, &str, &AtomicU64); 9] = [
            (
                "received",
                "Cluster messages received and applied",
                &self.received,
            ),
            (
                "duplicates",
                "Cluster messages dropped as duplicates",
                &self.duplicates,
            ),
            (
                "gaps",
                "Cluster messages from other nodes that never arrived",
                &self.gaps,
            ),
            (
                "invalid",
                "Cluster messages refused as malformed",
                &self.invalid,
            ),
            ("sent", "Cluster messages sent", &self.sent),
            (
                "node_deaths",
                "Nodes declared dead after going silent",
                &self.node_deaths,
            ),
            (
                "snapshots_sent",
                "State snapshots sent to other nodes",
                &self.snapshots_sent,
            ),
            ("queries", "Cross-node queries made", &self.queries),
            (
                "partial_queries",
                "Cross-node queries answered without every node",
                &self.partial_queries,
            ),
        ];
        for (n, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP switchyard_cluster_{n}_total {help}\n# TYPE switchyard_cluster_{n}_total counter\nswitchyard_cluster_{n}_total {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}
