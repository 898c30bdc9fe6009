//! Everything that crosses nodes, written once for every adapter: event envelopes with
//! duplicate and gap detection, presence and occupancy replication, node liveness, cross-node
//! queries and terminate. Talks to the adapter only through `Backplane`.
//!
//! Each node announces its own local changes (first subscriber of a channel, a user's first
//! socket in a presence channel, ...) on the control topic and keeps a replica of what every
//! other node announced. Member events and webhooks are decided against that replica, so a
//! user present on two nodes is added once and removed once. A node that goes silent past the
//! timeout is dropped from the replica; a gap in a node's control stream, or first contact,
//! makes us ask it for a full snapshot, which replaces what we knew of it.

pub mod fake;
mod inbound;
mod metrics;
mod query;
mod seq;
mod topics;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

pub use metrics::ClusterMetrics;
pub use query::{local_answer, Answer};
pub use wire::QueryKind;

use crate::backplane::{Backplane, Delivery};
use crate::channels::{App, Hub, Link};
use crate::config::{ClusterConfig, Routing};
use crate::protocol::ChannelName;
use seq::{Counters, Tracker};
use wire::Message;

/// What this node knows of the others.
struct Peers {
    /// Last time each other node was heard from.
    last_seen: HashMap<u32, Instant>,
    /// Last time our own heartbeat came back through the backplane: while it does not, we
    /// are the ones cut off, and nobody else is declared dead.
    own_echo: Instant,
    /// Whether any of our heartbeats has come back yet. Until one does, we keep saying hello
    /// (asking peers for their state): the first ones may have gone out before the adapter
    /// reached the broker.
    heard_self: bool,
    /// Last snapshot request per node, to ask at most once per interval.
    asked: HashMap<u32, Instant>,
}

pub struct Cluster {
    pub node_id: u32,
    cfg: ClusterConfig,
    backplane: Arc<dyn Backplane>,
    counters: Mutex<Counters>,
    tracker: Mutex<Tracker>,
    peers: Mutex<Peers>,
    queries: query::Queries,
    pub metrics: ClusterMetrics,
}

impl Cluster {
    pub fn new(node_id: u32, cfg: ClusterConfig, backplane: Arc<dyn Backplane>) -> Self {
        Self {
            node_id,
            cfg,
            backplane,
            counters: Mutex::new(Counters::new(node_id)),
            tracker: Mutex::new(Tracker::default()),
            peers: Mutex::new(Peers {
                last_seen: HashMap::new(),
                own_echo: Instant::now(),
                heard_self: false,
                asked: HashMap::new(),
            }),
            queries: query::Queries::default(),
            metrics: ClusterMetrics::default(),
        }
    }

    /// Stamps and sends one message. The counter lock is held through the hand-off so that
    /// sequence order is the order messages reach the adapter.
    fn send(&self, topic: &str, msg: &Message) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let header = counters.stamp(topic);
        self.backplane.publish(topic, msg.encode(header));
        drop(counters);
        crate::metrics::Metrics::inc(&self.metrics.sent);
    }

    /// Ids of the other nodes currently alive.
    pub fn peer_ids(&self) -> Vec<u32> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.last_seen.keys().copied().collect()
    }

    fn event_topic(&self, app: &str, channel: &ChannelName) -> String {
        // Cache channels travel on the app topic under either routing, so every node's cache
        // holds their last event even without local subscribers.
        if self.cfg.routing == Routing::Interest && !channel.is_cache() {
            topics::channel(app, channel.as_str())
        } else {
            topics::app(app)
        }
    }

    /// Under interest routing, whether `channel` has a topic of its own.
    fn own_topic(&self, channel: &str) -> bool {
        self.cfg.routing == Routing::Interest
            && ChannelName::parse(channel, usize::MAX).is_ok_and(|c| !c.is_cache())
    }

    /// Closes `user`'s connections on every other node (the caller handles this one).
    pub fn terminate(&self, app: &str, user: &str) {
        self.send(
            topics::CONTROL,
            &Message::Terminate {
                app: app.into(),
                user: user.into(),
            },
        );
    }

    /// Subscription counts of the channels `kind` asks about, summed over the cluster. Waits
    /// at most the query timeout; an answer missing nodes is logged and counted.
    pub async fn query(&self, app: &App, kind: QueryKind) -> Answer {
        crate::metrics::Metrics::inc(&self.metrics.queries);
        let local = local_answer(app, &kind);
        let peers: std::collections::HashSet<u32> = self.peer_ids().into_iter().collect();
        if peers.is_empty() {
            return Answer {
                counts: local,
                missing: Vec::new(),
            };
        }
        let (id, done) = self.queries.open(peers, local);
        self.send(
            topics::CONTROL,
            &Message::Query {
                id,
                app: app.config.id.clone(),
                kind,
            },
        );
        let _ = tokio::time::timeout(Duration::from_millis(self.cfg.query_timeout_ms), done).await;
        let answer = self.queries.close(id);
        if !answer.missing.is_empty() {
            crate::metrics::Metrics::inc(&self.metrics.partial_queries);
            tracing::warn!(missing = ?answer.missing, "cluster query answered without every node (timeout)");
        }
        answer
    }

    /// Publishes this node's state for every app, replacing what others know of it.
    fn send_snapshots(&self, hub: &Hub) {
        for app in hub.apps() {
            app.registry.snapshot_then(|channels| {
                let channels = channels
                    .into_iter()
                    .map(|c| wire::ChannelSnapshot {
                        channel: c.name,
                        subscribers: c.subscribers,
                        members: c.members,
                    })
                    .collect();
                self.send(
                    topics::CONTROL,
                    &Message::Snapshot {
                        app: app.config.id.clone(),
                        channels,
                    },
                );
            });
        }
        crate::metrics::Metrics::inc(&self.metrics.snapshots_sent);
    }

    /// Tells the others we are leaving, so they drop our state now.
    pub fn goodbye(&self) {
        self.send(topics::CONTROL, &Message::Goodbye);
    }

    /// Subscribes the topics every node needs, then consumes deliveries and keeps the
    /// heartbeat until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        hub: Arc<Hub>,
        mut deliveries: mpsc::Receiver<Delivery>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.backplane.subscribe(topics::CONTROL);
        self.backplane.subscribe(&topics::node(self.node_id));
        for app in hub.apps() {
            self.backplane.subscribe(&topics::app(&app.config.id));
        }
        self.send(topics::CONTROL, &Message::Heartbeat { hello: true });
        let beat = Duration::from_millis(self.cfg.heartbeat_interval_ms);
        let mut last_beat = Instant::now();
        let mut tick = tokio::time::interval(beat.min(Duration::from_millis(250)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                d = deliveries.recv() => match d {
                    Some(d) => self.handle(&hub, d),
                    None => break,
                },
                _ = tick.tick() => {
                    let hello = !self.peers.lock().unwrap_or_else(|e| e.into_inner()).heard_self;
                    // Hellos go out every tick, so a fresh node learns the cluster's state as
                    // soon as its adapter is connected.
                    if hello || last_beat.elapsed() >= beat {
                        last_beat = Instant::now();
                        self.send(topics::CONTROL, &Message::Heartbeat { hello });
                    }
                    self.expire(&hub);
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

impl Link for Cluster {
    fn occupied(&self, app: &str, channel: &str) {
        if self.own_topic(channel) {
            self.backplane.subscribe(&topics::channel(app, channel));
        }
        self.send(
            topics::CONTROL,
            &Message::Occupied {
                app: app.into(),
                channel: channel.into(),
            },
        );
    }

    fn vacated(&self, app: &str, channel: &str) {
        if self.own_topic(channel) {
            let topic = topics::channel(app, channel);
            self.backplane.unsubscribe(&topic);
            // When we subscribe again the first message starts afresh, not as a gap.
            self.tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget_topic(&topic);
        }
        self.send(
            topics::CONTROL,
            &Message::Vacated {
                app: app.into(),
                channel: channel.into(),
            },
        );
    }

    fn member_joined(&self, app: &str, channel: &str, user: &str, info: &str) {
        self.send(
            topics::CONTROL,
            &Message::MemberJoined {
                app: app.into(),
                channel: channel.into(),
                user: user.into(),
                info: info.into(),
            },
        );
    }

    fn member_left(&self, app: &str, channel: &str, user: &str) {
        self.send(
            topics::CONTROL,
            &Message::MemberLeft {
                app: app.into(),
                channel: channel.into(),
                user: user.into(),
            },
        );
    }

    fn count(&self, app: &str, channel: &str, count: usize) {
        self.send(
            topics::CONTROL,
            &Message::Count {
                app: app.into(),
                channel: channel.into(),
                count: count as u32,
            },
        );
    }

    fn event(
        &self,
        app: &str,
        channel: &ChannelName,
        messages: Vec<String>,
        except: Option<&str>,
        cache: Option<&str>,
    ) {
        let topic = self.event_topic(app, channel);
        self.send(
            &topic,
            &Message::Event {
                app: app.into(),
                channel: channel.as_str().into(),
                messages,
                except: except.unwrap_or("").into(),
                cache: cache.map(str::to_owned),
            },
        );
    }
}

#[cfg(test)]
mod tests;
