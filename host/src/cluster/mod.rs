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

use tokio::sync::mpsc;

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
    /// Nodes whose snapshot we need (first contact, or a gap in their control stream), with
    /// when we last asked: re-asked every heartbeat until a snapshot from them arrives.
    wanted: HashMap<u32, Instant>,
    /// Nodes that said goodbye, and when: a message of theirs still in flight must not make
    /// them a peer again (queries would wait for them until they time out).
    departed: HashMap<u32, Instant>,
    /// Snapshot chunks being assembled, per (origin, app): channels and signed-in users.
    partial: HashMap<(u32, String), (Vec<wire::ChannelSnapshot>, Vec<String>)>,
}

impl Peers {
    /// Whether this node sends the cluster's webhooks: the live node with the lowest id.
    /// One node deciding, in the one order it applies changes, is what makes each webhook go
    /// out exactly once (two nodes each deciding from a replica a few ms behind the other's
    /// would both send a join, or neither a leave).
    fn leads(&self, me: u32) -> bool {
        self.last_seen.keys().all(|n| *n > me)
    }
}

pub struct Cluster {
    pub node_id: u32,
    cfg: ClusterConfig,
    backplane: Arc<dyn Backplane>,
    counters: Mutex<Counters>,
    tracker: Mutex<Tracker>,
    peers: Mutex<Peers>,
    queries: query::Queries,
    /// Ends the run loop (after the goodbye).
    stop: tokio::sync::Notify,
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
                wanted: HashMap::new(),
                departed: HashMap::new(),
                partial: HashMap::new(),
            }),
            queries: query::Queries::default(),
            stop: tokio::sync::Notify::new(),
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
        // Closes the query even when the HTTP request is dropped mid-wait.
        struct Close<'a>(&'a query::Queries, u64);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.close(self.1);
            }
        }
        let guard = Close(&self.queries, id);
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
        drop(guard);
        if !answer.missing.is_empty() {
            crate::metrics::Metrics::inc(&self.metrics.partial_queries);
            tracing::warn!(missing = ?answer.missing, "cluster query answered without every node (timeout)");
        }
        answer
    }

    /// Publishes this node's state for every app, replacing what others know of it. An app's
    /// state goes out in chunks of about `SNAPSHOT_CHUNK` bytes (brokers and the sandbox
    /// refuse large messages), all sent under the registry lock so no announcement slips
    /// between them; receivers apply the whole at the last chunk.
    fn send_snapshots(&self, hub: &Hub) {
        const SNAPSHOT_CHUNK: usize = 256 * 1024;
        for app in hub.apps() {
            // Lock order: registry, then users, then our counters; nothing takes them the
            // other way round.
            app.registry.snapshot_then(|channels| {
                app.users.snapshot_then(|users| {
                    let mut users = Some(users);
                    let mut chunk: Vec<wire::ChannelSnapshot> = Vec::new();
                    let mut size = 0;
                    let mut first = true;
                    let mut flush =
                        |chunk: &mut Vec<wire::ChannelSnapshot>, first: &mut bool, last| {
                            self.send(
                                topics::CONTROL,
                                &Message::Snapshot {
                                    app: app.config.id.clone(),
                                    first: *first,
                                    last,
                                    channels: std::mem::take(chunk),
                                    users: users.take().unwrap_or_default(),
                                },
                            );
                            *first = false;
                        };
                    for c in channels {
                        let mut part = wire::ChannelSnapshot {
                            channel: c.name,
                            subscribers: c.subscribers,
                            members: Vec::new(),
                        };
                        size += part.channel.len() + 16;
                        for m in c.members {
                            size += m.0.len() + m.1.len() + 8;
                            part.members.push(m);
                            if size >= SNAPSHOT_CHUNK {
                                // A huge roster continues in the next chunk under the same name.
                                let rest = wire::ChannelSnapshot {
                                    channel: part.channel.clone(),
                                    subscribers: part.subscribers,
                                    members: Vec::new(),
                                };
                                chunk.push(std::mem::replace(&mut part, rest));
                                flush(&mut chunk, &mut first, false);
                                size = part.channel.len() + 16;
                            }
                        }
                        chunk.push(part);
                        if size >= SNAPSHOT_CHUNK {
                            flush(&mut chunk, &mut first, false);
                            size = 0;
                        }
                    }
                    flush(&mut chunk, &mut first, true);
                })
            });
        }
        crate::metrics::Metrics::inc(&self.metrics.snapshots_sent);
    }

    /// Tells the others we are leaving, so they drop our state now, and ends the run loop.
    /// Until then the node keeps heartbeating and answering, while its clients drain.
    pub fn goodbye(&self) {
        self.send(topics::CONTROL, &Message::Goodbye);
        self.stop.notify_one();
    }

    /// Subscribes the topics every node needs, then consumes deliveries and keeps the
    /// heartbeat until `goodbye`.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, mut deliveries: mpsc::Receiver<Delivery>) {
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
                    Some(d) => {
                        // A bug on this path must not cut the node off from the cluster
                        // (it would stop heartbeating and be declared dead).
                        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.handle(&hub, d)
                        }));
                        if handled.is_err() {
                            crate::metrics::Metrics::inc(&self.metrics.invalid);
                            tracing::error!("a cluster message made the handler panic; dropped");
                        }
                    }
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
                    self.reask_snapshots();
                }
                _ = self.stop.notified() => break,
            }
        }
    }
}

impl Link for Cluster {
    fn decides_webhooks(&self) -> bool {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leads(self.node_id)
    }

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

    fn user_online(&self, app: &str, user: &str) {
        self.send(
            topics::CONTROL,
            &Message::UserOnline {
                app: app.into(),
                user: user.into(),
            },
        );
    }

    fn user_offline(&self, app: &str, user: &str) {
        self.send(
            topics::CONTROL,
            &Message::UserOffline {
                app: app.into(),
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
