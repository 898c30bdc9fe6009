//! The receiving half of the cluster: decodes what other nodes sent, drops our own echoes
//! and duplicates, applies the rest to the local apps, and tracks who is alive.

use std::time::{Duration, Instant};

use super::seq::Verdict;
use super::wire::{Header, Message};
use super::{local_answer, topics, Cluster};
use crate::backplane::Delivery;
use crate::channels::Hub;
use crate::metrics::Metrics;

impl Cluster {
    pub(super) fn handle(&self, hub: &Hub, d: Delivery) {
        let (h, msg) = match Message::decode(&d.payload) {
            Ok(m) => m,
            Err(e) => {
                Metrics::inc(&self.metrics.invalid);
                tracing::debug!(topic = %d.topic, error = %e, "undecodable cluster message dropped");
                return;
            }
        };
        if h.origin == self.node_id {
            // Our own message back from the broker: proof that the backplane carries ours.
            if matches!(msg, Message::Heartbeat { .. }) {
                let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let silent = now - peers.own_echo;
                if silent > Duration::from_millis(self.cfg.node_timeout_ms / 2) {
                    // We were cut off (a broker outage): everyone else was silent for the same
                    // reason, so each gets a fresh timeout to be heard again.
                    tracing::info!(
                        silent_ms = silent.as_millis() as u64,
                        "backplane carries our messages again"
                    );
                    for t in peers.last_seen.values_mut() {
                        *t = now;
                    }
                }
                peers.own_echo = now;
                peers.heard_self = true;
            }
            return;
        }
        let verdict = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&d.topic, h);
        match verdict {
            Verdict::Duplicate => {
                Metrics::inc(&self.metrics.duplicates);
                return;
            }
            Verdict::Gap { missed } => {
                Metrics::add(&self.metrics.gaps, missed);
                tracing::debug!(origin = h.origin, topic = %d.topic, missed, "cluster messages lost");
                if d.topic == topics::CONTROL {
                    // Presence or occupancy changes may be among the lost: resynchronise.
                    self.ask_snapshot(h.origin);
                }
            }
            Verdict::Fresh => {}
        }
        Metrics::inc(&self.metrics.received);
        self.on_contact(hub, h, &msg);
        self.apply(hub, h, msg);
    }

    /// Records that `h.origin` is alive; on first contact, exchanges state with it.
    fn on_contact(&self, hub: &Hub, h: Header, msg: &Message) {
        let fresh = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = peers.last_seen.insert(h.origin, Instant::now()).is_none();
            self.metrics.peers.store(
                peers.last_seen.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            fresh
        };
        if matches!(msg, Message::Heartbeat { hello: true }) {
            // A node that just started knows nothing of ours.
            self.send_snapshots(hub);
        }
        if fresh && !matches!(msg, Message::Goodbye) {
            tracing::info!(node = h.origin, "cluster node joined");
            if !matches!(
                msg,
                Message::Snapshot { .. } | Message::Heartbeat { hello: true }
            ) {
                // We started after it, or lost touch: learn what it holds.
                self.ask_snapshot(h.origin);
            }
        }
    }

    fn ask_snapshot(&self, target: u32) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let min = Duration::from_millis(self.cfg.heartbeat_interval_ms / 2);
            if peers.asked.get(&target).is_some_and(|t| now - *t < min) {
                return;
            }
            peers.asked.insert(target, now);
        }
        self.send(topics::CONTROL, &Message::SnapshotRequest { target });
    }

    fn apply(&self, hub: &Hub, h: Header, msg: Message) {
        let node = h.origin;
        let app_of = |id: &str| {
            let app = hub.by_id(id);
            if app.is_none() {
                Metrics::inc(&self.metrics.invalid);
                tracing::debug!(
                    app = id,
                    node,
                    "cluster message for an app this node does not have"
                );
            }
            app
        };
        let channel_of = |app: &crate::channels::App, name: &str| {
            let c = app.channel_name(name);
            if c.is_none() {
                Metrics::inc(&self.metrics.invalid);
                tracing::debug!(
                    channel = name,
                    node,
                    "cluster message with an invalid channel"
                );
            }
            c
        };
        match msg {
            Message::Event {
                app,
                channel,
                messages,
                except,
                cache,
            } => {
                let Some(app) = app_of(&app) else { return };
                let Some(channel) = channel_of(app, &channel) else {
                    return;
                };
                let except = (!except.is_empty()).then_some(except.as_str());
                app.deliver(&channel, &messages, except, cache.as_deref());
            }
            Message::Heartbeat { .. } => {}
            Message::Goodbye => {
                tracing::info!(node, "cluster node left");
                self.drop_node(hub, node);
            }
            Message::MemberJoined {
                app,
                channel,
                user,
                info,
            } => {
                let Some(app) = app_of(&app) else { return };
                let Some(channel) = channel_of(app, &channel) else {
                    return;
                };
                app.remote_member_joined(node, &channel, &user, &info);
            }
            Message::MemberLeft { app, channel, user } => {
                let Some(app) = app_of(&app) else { return };
                app.remote_member_left(node, &channel, &user);
            }
            Message::Occupied { app, channel } => {
                let Some(app) = app_of(&app) else { return };
                let Some(channel) = channel_of(app, &channel) else {
                    return;
                };
                app.registry.remote_occupied(&channel, node);
            }
            Message::Vacated { app, channel } => {
                let Some(app) = app_of(&app) else { return };
                app.registry.remote_vacated(&channel, node);
                if let Some(channel) = app.channel_name(&channel) {
                    // Vacated implies a count of zero there; our subscribers hear the total.
                    app.remote_count(node, &channel, 0);
                }
            }
            Message::Snapshot { app, channels } => {
                let Some(app) = app_of(&app) else { return };
                let held: Vec<_> = channels
                    .into_iter()
                    .filter_map(|c| {
                        Some(crate::channels::RemoteChannel {
                            channel: channel_of(app, &c.channel)?,
                            subscribers: c.subscribers,
                            members: c.members,
                        })
                    })
                    .collect();
                app.replace_node(node, &held, false);
            }
            Message::Count {
                app,
                channel,
                count,
            } => {
                let Some(app) = app_of(&app) else { return };
                let Some(channel) = channel_of(app, &channel) else {
                    return;
                };
                app.remote_count(node, &channel, count);
            }
            Message::SnapshotRequest { target } => {
                if target == self.node_id {
                    self.send_snapshots(hub);
                }
            }
            Message::Terminate { app, user } => {
                let Some(app) = app_of(&app) else { return };
                app.terminate_user(&user);
            }
            Message::Query { id, app, kind } => {
                let channels = match hub.by_id(&app) {
                    Some(app) => local_answer(app, &kind).into_iter().collect(),
                    None => Vec::new(),
                };
                self.send(&topics::node(node), &Message::Reply { id, channels });
            }
            Message::Reply { id, channels } => {
                self.queries.reply(id, node, channels);
            }
        }
    }

    /// Declares dead the nodes not heard from for the timeout, measured against our own
    /// heartbeat's echo rather than the clock: while we are cut off from the backplane our
    /// echo stops too, and nobody is declared dead for our outage.
    pub(super) fn expire(&self, hub: &Hub) {
        let timeout = Duration::from_millis(self.cfg.node_timeout_ms);
        let dead: Vec<u32> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let echo = peers.own_echo;
            peers
                .last_seen
                .iter()
                .filter(|(_, t)| echo.saturating_duration_since(**t) > timeout)
                .map(|(n, _)| *n)
                .collect()
        };
        for node in dead {
            Metrics::inc(&self.metrics.node_deaths);
            tracing::warn!(
                node,
                "cluster node silent past the timeout: dropping its state"
            );
            self.drop_node(hub, node);
        }
    }

    /// Forgets `node` and everything it held. The live node with the lowest id sends the
    /// webhooks this causes, so they go out once for the cluster.
    fn drop_node(&self, hub: &Hub, node: u32) {
        let leader = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.last_seen.remove(&node);
            peers.asked.remove(&node);
            self.metrics.peers.store(
                peers.last_seen.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            peers.last_seen.keys().all(|n| *n > self.node_id)
        };
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_origin(node);
        self.queries.forget_node(node);
        for app in hub.apps() {
            app.replace_node(node, &[], leader);
        }
    }
}
