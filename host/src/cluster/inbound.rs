//! The receiving half of the cluster: decodes what other nodes sent, drops our own echoes
//! and duplicates, applies the rest to the local apps, and tracks who is alive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::seq::Verdict;
use super::wire::{ChannelSnapshot, Header, Message};
use super::{local_answer, topics, Cluster};
use crate::backplane::Delivery;
use crate::channels::{Hub, RemoteChannel};
use crate::metrics::Metrics;
use crate::protocol::ChannelName;

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
            self.own_echo(hub);
            return;
        }
        if let Message::Event { app, channel, .. } = &msg {
            if topics::is_channel(&d.topic)
                && hub
                    .by_id(app)
                    .is_some_and(|a| a.registry.stats(channel).is_none())
            {
                // In flight when we unsubscribed its channel: nobody here wants it, and
                // tracking it would re-create state that is only freed when the origin leaves.
                return;
            }
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
        if self.on_contact(hub, h, &msg) {
            self.apply(hub, h, msg);
        }
    }

    /// Any message of ours back from the broker proves the backplane carries ours.
    fn own_echo(&self, hub: &Hub) {
        let first = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let silent = now - peers.own_echo;
            if silent > Duration::from_millis(self.cfg.node_timeout_ms / 2) && peers.heard_self {
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
            !std::mem::replace(&mut peers.heard_self, true)
        };
        if first {
            // Announcements made before the adapter reached the broker were lost (clients may
            // connect before that): a snapshot tells everyone what we hold.
            self.send_snapshots(hub);
        }
    }

    /// Records that `h.origin` is alive; on first contact, exchanges state with it. Returns
    /// whether the message should be applied.
    fn on_contact(&self, hub: &Hub, h: Header, msg: &Message) -> bool {
        let fresh = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(msg, Message::Goodbye) {
                peers.departed.insert(h.origin, Instant::now());
                return true;
            }
            if peers.departed.contains_key(&h.origin) && !matches!(msg, Message::Heartbeat { .. }) {
                // A straggler from a node that left: not a peer again, and nothing of its
                // state is taken back (it would never expire); events still reach clients.
                return matches!(msg, Message::Event { .. });
            }
            peers.departed.remove(&h.origin);
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
        if fresh {
            tracing::info!(node = h.origin, "cluster node joined");
            // We started after it, lost touch, or it holds clients from before its adapter
            // connected: learn what it holds.
            self.ask_snapshot(h.origin);
        }
        true
    }

    /// Marks `target`'s snapshot as wanted and asks for it, unless asked within the last
    /// half heartbeat. `reask_snapshots` keeps asking until one arrives.
    fn ask_snapshot(&self, target: u32) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let min = Duration::from_millis(self.cfg.heartbeat_interval_ms / 2);
            if peers.wanted.get(&target).is_some_and(|t| now - *t < min) {
                return;
            }
            peers.wanted.insert(target, now);
        }
        self.send(topics::CONTROL, &Message::SnapshotRequest { target });
    }

    /// Asks again for snapshots still missing after a heartbeat interval (the request or a
    /// chunk of the answer may have been lost).
    pub(super) fn reask_snapshots(&self) {
        let due: Vec<u32> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let every = Duration::from_millis(self.cfg.heartbeat_interval_ms);
            let mut due = Vec::new();
            for (node, t) in peers.wanted.iter_mut() {
                if now - *t >= every {
                    *t = now;
                    due.push(*node);
                }
            }
            due
        };
        for target in due {
            self.send(topics::CONTROL, &Message::SnapshotRequest { target });
        }
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
                app.remote_member_joined(node, &channel, &user, &valid_json(info));
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
                app.remote_occupied(node, &channel);
            }
            Message::Vacated { app, channel } => {
                let Some(app) = app_of(&app) else { return };
                let Some(channel) = channel_of(app, &channel) else {
                    return;
                };
                app.remote_vacated(node, &channel);
            }
            Message::Snapshot {
                app,
                first,
                last,
                channels,
                users,
            } => {
                let Some(app) = app_of(&app) else { return };
                let whole = {
                    let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                    let key = (node, app.config.id.clone());
                    let parts = peers.partial.entry(key.clone()).or_default();
                    if first {
                        *parts = Default::default();
                    }
                    parts.0.extend(channels);
                    parts.1.extend(users);
                    if !last {
                        return;
                    }
                    peers.wanted.remove(&node);
                    peers.partial.remove(&key).unwrap_or_default()
                };
                let (chunks, users) = whole;
                let held = merge_chunks(chunks, |name| channel_of(app, name));
                app.replace_node(node, &held, &users);
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
            Message::UserOnline { app, user } => {
                let Some(app) = app_of(&app) else { return };
                app.users.remote_online(node, &user);
            }
            Message::UserOffline { app, user } => {
                let Some(app) = app_of(&app) else { return };
                app.users.remote_offline(node, &user);
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

    /// Declares dead the nodes not heard from for the timeout. Silence is measured against
    /// our own echo rather than the clock when that echo is late: while we are cut off from
    /// the backplane nobody is declared dead for our outage.
    pub(super) fn expire(&self, hub: &Hub) {
        let timeout = Duration::from_millis(self.cfg.node_timeout_ms);
        let beat = Duration::from_millis(self.cfg.heartbeat_interval_ms);
        let dead: Vec<u32> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let reference = if now - peers.own_echo <= 2 * beat {
                now
            } else {
                peers.own_echo
            };
            peers.departed.retain(|_, t| now - *t < timeout);
            let dead: Vec<u32> = peers
                .last_seen
                .iter()
                .filter(|(_, t)| reference.saturating_duration_since(**t) > timeout)
                .map(|(n, _)| *n)
                .collect();
            // All of them leave the live set before anyone's state is dropped, so the node
            // that sends the webhooks is chosen among the survivors.
            for n in &dead {
                peers.last_seen.remove(n);
            }
            dead
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

    /// Forgets `node` and everything it held; the elected node sends the webhooks this
    /// causes, since the dead one cannot.
    fn drop_node(&self, hub: &Hub, node: u32) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.last_seen.remove(&node);
            peers.wanted.remove(&node);
            peers.partial.retain(|(n, _), _| *n != node);
            self.metrics.peers.store(
                peers.last_seen.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_origin(node);
        self.queries.forget_node(node);
        for app in hub.apps() {
            app.replace_node(node, &[], &[]);
        }
    }
}

/// A snapshot's channels, with the parts of a channel that spans chunks merged into one.
fn merge_chunks(
    chunks: Vec<ChannelSnapshot>,
    channel_of: impl Fn(&str) -> Option<ChannelName>,
) -> Vec<RemoteChannel> {
    let mut merged: Vec<RemoteChannel> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for c in chunks {
        let Some(name) = channel_of(&c.channel) else {
            continue;
        };
        let members = c.members.into_iter().map(|(u, i)| (u, valid_json(i)));
        match index.get(&c.channel) {
            Some(&i) => merged[i].members.extend(members),
            None => {
                index.insert(c.channel, merged.len());
                merged.push(RemoteChannel {
                    channel: name,
                    subscribers: c.subscribers,
                    members: members.collect(),
                });
            }
        }
    }
    merged
}

/// `info` from another node as JSON text, or `null` when it is not JSON: it goes verbatim
/// into frames our clients parse.
fn valid_json(info: String) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(&info).is_ok() {
        info
    } else {
        "null".into()
    }
}
