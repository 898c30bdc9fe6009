//! One app's channels on this node: who is subscribed, presence rosters, and fan-out.
//!
//! A std `RwLock` guards the map: nothing awaits while it is held, and publishing (the hot
//! path) takes only the read side. Frames are queued to subscribers while the lock is held,
//! which is what orders a subscriber's `subscription_succeeded` before any later event.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::conn::{Conn, Sent};
use crate::protocol::ChannelName;

/// A presence member as the roster keeps it: one entry per user, counting their sockets.
#[derive(Debug, Clone)]
struct Member {
    /// `user_info` as raw JSON text (`null` when absent).
    info: Arc<str>,
    /// Sockets of this user in the channel on this node.
    sockets: u32,
    /// Other nodes where this user has sockets in the channel. The member leaves when no
    /// socket is left here and no other node holds it.
    remote: Vec<u32>,
}

impl Member {
    fn held(&self) -> bool {
        self.sockets > 0 || !self.remote.is_empty()
    }
}

#[derive(Debug)]
struct Channel {
    name: ChannelName,
    subscribers: HashMap<u64, Subscriber>,
    /// Only presence channels have members; the roster is cluster-wide.
    members: HashMap<Arc<str>, Member>,
    /// Other nodes with subscribers to this channel. An entry lives while it has local
    /// subscribers, members or remote subscribers.
    remote: Vec<u32>,
    /// Subscriber counts other nodes reported (only apps with subscription counting).
    remote_counts: Vec<(u32, u32)>,
}

impl Channel {
    fn new(name: ChannelName) -> Self {
        Self {
            name,
            subscribers: HashMap::new(),
            members: HashMap::new(),
            remote: Vec::new(),
            remote_counts: Vec::new(),
        }
    }

    /// Subscribers here plus those other nodes reported.
    fn cluster_count(&self) -> usize {
        self.subscribers.len()
            + self
                .remote_counts
                .iter()
                .map(|(_, n)| *n as usize)
                .sum::<usize>()
    }

    /// Records `node`'s count; returns whether it changed.
    fn set_remote_count(&mut self, node: u32, n: u32) -> bool {
        let before = self
            .remote_counts
            .iter()
            .find(|(x, _)| *x == node)
            .map_or(0, |(_, c)| *c);
        self.remote_counts.retain(|(x, _)| *x != node);
        if n > 0 {
            self.remote_counts.push((node, n));
        }
        before != n
    }

    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.members.is_empty() && self.remote.is_empty()
    }

    /// Adds `node` as a holder of `user`; broadcasts `added` to local subscribers when the
    /// user was absent from the cluster. Returns whether it was.
    fn add_holder(
        &mut self,
        node: u32,
        user: &str,
        info: &str,
        added: &dyn Fn(&str, &str) -> Bytes,
    ) -> bool {
        if let Some(m) = self.members.get_mut(user) {
            if !m.remote.contains(&node) {
                m.remote.push(node);
            }
            return false;
        }
        self.members.insert(
            user.into(),
            Member {
                info: info.into(),
                sockets: 0,
                remote: vec![node],
            },
        );
        broadcast(self, &added(user, info), None);
        true
    }

    /// Drops `node` as a holder of `user`; broadcasts `removed` when nobody holds it anymore.
    fn remove_holder(&mut self, node: u32, user: &str, removed: &dyn Fn(&str) -> Bytes) -> bool {
        let Some(m) = self.members.get_mut(user) else {
            return false;
        };
        m.remote.retain(|n| *n != node);
        if m.held() {
            return false;
        }
        self.members.remove(user);
        broadcast(self, &removed(user), None);
        true
    }
}

/// A change of the cluster-wide picture caused by another node, for the webhooks that the
/// elected node sends on the cluster's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Occupied(String),
    Vacated(String),
    MemberAdded {
        channel: String,
        user: String,
    },
    MemberRemoved {
        channel: String,
        user: String,
    },
    /// The cluster-wide subscriber count of a channel with local subscribers changed.
    Count(String),
}

/// One channel as another node holds it, from that node's snapshot.
#[derive(Debug, Clone)]
pub struct RemoteChannel {
    pub channel: ChannelName,
    pub subscribers: u32,
    /// `(user_id, user_info)` of presence users with a socket there.
    pub members: Vec<(String, String)>,
}

/// One channel as this node holds it, for a snapshot sent to other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChannel {
    pub name: String,
    /// Sockets subscribed on this node.
    pub subscribers: u32,
    /// `(user_id, user_info)` of presence users with a socket on this node.
    pub members: Vec<(String, String)>,
}

#[derive(Debug)]
struct Subscriber {
    conn: Arc<Conn>,
    /// The presence user this socket joined as.
    user_id: Option<Arc<str>>,
}

/// A presence identity offered with a subscribe.
#[derive(Debug, Clone)]
pub struct PresenceJoin {
    pub user_id: Arc<str>,
    pub user_info: Arc<str>,
}

/// What a subscribe changed, for webhooks, counts and other nodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Joined {
    /// The channel had no subscriber on this node before.
    pub occupied: bool,
    /// ... nor on any other node.
    pub cluster_occupied: bool,
    /// A presence user joined who had no other socket in the channel on this node.
    pub local_member_added: bool,
    /// ... nor on any other node: `member_added` went out.
    pub member_added: bool,
    /// The socket was already subscribed; nothing changed.
    pub already: bool,
    /// Subscribers on this node.
    pub local_count: usize,
    /// Subscribers across the cluster, as far as other nodes reported them.
    pub subscription_count: usize,
}

/// What an unsubscribe changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Left {
    /// No subscriber is left on this node.
    pub vacated: bool,
    /// ... nor on any other node.
    pub cluster_vacated: bool,
    /// The presence user whose last socket on this node left.
    pub local_member_removed: Option<Arc<str>>,
    /// The presence user who left the cluster: `member_removed` went out.
    pub member_removed: Option<Arc<str>>,
    pub local_count: usize,
    pub subscription_count: usize,
    /// The socket was not subscribed.
    pub absent: bool,
}

/// Refusals decided under the lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("presence channel is full ({0} members)")]
    PresenceFull(usize),
}

/// Counts for the HTTP API's channel queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub subscription_count: usize,
    /// Distinct presence users; zero for other kinds.
    pub user_count: usize,
}

#[derive(Debug, Default)]
pub struct Registry {
    channels: RwLock<HashMap<Box<str>, Channel>>,
}

impl Registry {
    /// Adds `conn` to `channel` and, with the lock still held, queues `on_joined(...)`'s frames
    /// to it (subscription_succeeded), then broadcasts member_added to the others, then calls
    /// `announce` (which tells other nodes, in the order changes happened here).
    ///
    /// `reply` is called with the roster snapshot (presence) so the reply frame reflects the
    /// membership at the instant of joining.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        channel: &ChannelName,
        conn: &Arc<Conn>,
        presence: Option<PresenceJoin>,
        max_members: usize,
        reply: impl FnOnce(Option<PresenceSnapshot<'_>>) -> Bytes,
        member_added: impl FnOnce(&PresenceJoin) -> Bytes,
        announce: impl FnOnce(&Joined),
    ) -> Result<Joined, JoinError> {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(channel.as_str().into())
            .or_insert_with(|| Channel::new(channel.clone()));
        if entry.subscribers.contains_key(&conn.id) {
            let snapshot = presence.as_ref().map(|_| PresenceSnapshot(&entry.members));
            conn.send(reply(snapshot));
            return Ok(Joined {
                already: true,
                local_count: entry.subscribers.len(),
                subscription_count: entry.cluster_count(),
                ..Joined::default()
            });
        }
        if let Some(p) = &presence {
            if !entry.members.contains_key(&p.user_id) && entry.members.len() >= max_members {
                if entry.is_empty() {
                    map.remove(channel.as_str());
                }
                return Err(JoinError::PresenceFull(max_members));
            }
        }
        let occupied = entry.subscribers.is_empty();
        let mut joined = Joined {
            occupied,
            cluster_occupied: occupied && entry.remote.is_empty(),
            ..Joined::default()
        };
        if let Some(p) = &presence {
            let m = entry
                .members
                .entry(p.user_id.clone())
                .or_insert_with(|| Member {
                    info: p.user_info.clone(),
                    sockets: 0,
                    remote: Vec::new(),
                });
            joined.member_added = !m.held();
            joined.local_member_added = m.sockets == 0;
            m.sockets += 1;
        }
        entry.subscribers.insert(
            conn.id,
            Subscriber {
                conn: conn.clone(),
                user_id: presence.as_ref().map(|p| p.user_id.clone()),
            },
        );
        let snapshot = presence.as_ref().map(|_| PresenceSnapshot(&entry.members));
        conn.send(reply(snapshot));
        if joined.member_added {
            let frame = member_added(presence.as_ref().expect("added implies presence"));
            broadcast(entry, &frame, Some(conn.id));
        }
        joined.local_count = entry.subscribers.len();
        joined.subscription_count = entry.cluster_count();
        announce(&joined);
        Ok(joined)
    }

    /// Removes `conn_id` from `channel`; broadcasts `member_removed(user)` when that user's
    /// last socket in the cluster left, then calls `announce` under the lock. Idempotent.
    pub fn unsubscribe(
        &self,
        channel: &str,
        conn_id: u64,
        member_removed: impl FnOnce(&str) -> Bytes,
        announce: impl FnOnce(&Left),
    ) -> Left {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = map.get_mut(channel) else {
            return Left {
                absent: true,
                ..Left::default()
            };
        };
        let Some(sub) = entry.subscribers.remove(&conn_id) else {
            return Left {
                absent: true,
                local_count: entry.subscribers.len(),
                subscription_count: entry.cluster_count(),
                ..Left::default()
            };
        };
        let mut left = Left::default();
        if let Some(user) = sub.user_id {
            if let Some(m) = entry.members.get_mut(&user) {
                m.sockets -= 1;
                if m.sockets == 0 {
                    left.local_member_removed = Some(user.clone());
                    if !m.held() {
                        entry.members.remove(&user);
                        broadcast(entry, &member_removed(&user), None);
                        left.member_removed = Some(user);
                    }
                }
            }
        }
        left.local_count = entry.subscribers.len();
        left.subscription_count = entry.cluster_count();
        left.vacated = left.local_count == 0;
        left.cluster_vacated = left.vacated && entry.remote.is_empty();
        announce(&left);
        if entry.is_empty() {
            map.remove(channel);
        }
        left
    }

    /// Queues `frame` to every subscriber of `channel` except `except`. Returns deliveries.
    pub fn publish(&self, channel: &str, frame: &Bytes, except: Option<u64>) -> usize {
        self.publish_then(channel, frame, except, || {})
    }

    /// Like `publish`, running `locked` first while subscribers cannot join: a cache write
    /// done there is seen by exactly the subscribers that miss the broadcast.
    pub fn publish_then(
        &self,
        channel: &str,
        frame: &Bytes,
        except: Option<u64>,
        locked: impl FnOnce(),
    ) -> usize {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        locked();
        match map.get(channel) {
            Some(entry) => broadcast(entry, frame, except),
            None => 0,
        }
    }

    /// Whether `conn_id` is subscribed to `channel` (client events need it).
    pub fn is_subscribed(&self, channel: &str, conn_id: u64) -> bool {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .is_some_and(|c| c.subscribers.contains_key(&conn_id))
    }

    /// Counts on this node; `None` when no local socket is subscribed. `user_count` is the
    /// cluster-wide roster size, which every node holds.
    pub fn stats(&self, channel: &str) -> Option<ChannelStats> {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .filter(|c| !c.subscribers.is_empty())
            .map(stats_of)
    }

    /// Whether any node (this one included) has a subscriber, as far as the replica knows.
    pub fn occupied_anywhere(&self, channel: &str) -> bool {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .is_some_and(|c| !c.subscribers.is_empty() || !c.remote.is_empty())
    }

    /// Subscribers across the cluster, when this node has any to tell.
    pub fn subscription_count(&self, channel: &str) -> Option<usize> {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .filter(|c| !c.subscribers.is_empty())
            .map(Channel::cluster_count)
    }

    /// Distinct presence users in `channel` across the cluster.
    pub fn user_count(&self, channel: &str) -> usize {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel).map_or(0, |c| c.members.len())
    }

    /// Channels with local subscribers whose names start with `prefix`, with their counts.
    pub fn list(&self, prefix: &str) -> Vec<(String, ChannelStats)> {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|c| !c.subscribers.is_empty() && c.name.as_str().starts_with(prefix))
            .map(|c| (c.name.as_str().to_owned(), stats_of(c)))
            .collect()
    }

    /// Distinct presence user ids in `channel`, across the cluster.
    pub fn members(&self, channel: &str) -> Vec<String> {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .map(|c| c.members.keys().map(|u| u.to_string()).collect())
            .unwrap_or_default()
    }

    /// Calls `send` with what this node holds (channels with local subscribers and their local
    /// members) while no local change can happen, so the snapshot is ordered with the
    /// announcements around it.
    pub fn snapshot_then(&self, send: impl FnOnce(Vec<LocalChannel>)) {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let channels = map
            .values()
            .filter(|c| !c.subscribers.is_empty())
            .map(|c| LocalChannel {
                name: c.name.as_str().to_owned(),
                subscribers: c.subscribers.len() as u32,
                members: c
                    .members
                    .iter()
                    .filter(|(_, m)| m.sockets > 0)
                    .map(|(u, m)| (u.to_string(), m.info.to_string()))
                    .collect(),
            })
            .collect();
        send(channels);
    }

    /// Another node's first subscriber joined `channel`. Returns whether the channel was
    /// empty across the cluster.
    pub fn remote_occupied(&self, channel: &ChannelName, node: u32) -> bool {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(channel.as_str().into())
            .or_insert_with(|| Channel::new(channel.clone()));
        if entry.remote.contains(&node) {
            return false;
        }
        let was_empty = entry.subscribers.is_empty() && entry.remote.is_empty();
        entry.remote.push(node);
        was_empty
    }

    /// Another node's last subscriber left `channel`. Returns whether the channel is now empty
    /// across the cluster.
    pub fn remote_vacated(&self, channel: &str, node: u32) -> bool {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = map.get_mut(channel) else {
            return false;
        };
        let _ = entry.set_remote_count(node, 0);
        if !entry.remote.contains(&node) {
            return false;
        }
        entry.remote.retain(|n| *n != node);
        let vacated = entry.subscribers.is_empty() && entry.remote.is_empty();
        if entry.is_empty() {
            map.remove(channel);
        }
        vacated
    }

    /// Another node's subscriber count for `channel` changed. Returns the cluster-wide count
    /// when this node has subscribers to tell.
    pub fn remote_count(&self, channel: &str, node: u32, n: u32) -> Option<usize> {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.get_mut(channel)?;
        let _ = entry.set_remote_count(node, n);
        (!entry.subscribers.is_empty()).then(|| entry.cluster_count())
    }

    /// A user's first socket on another node joined; returns whether it is new to the cluster
    /// (and `member_added` went to local subscribers).
    pub fn remote_join(
        &self,
        channel: &ChannelName,
        node: u32,
        user: &str,
        info: &str,
        added: &dyn Fn(&str, &str) -> Bytes,
    ) -> bool {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        map.entry(channel.as_str().into())
            .or_insert_with(|| Channel::new(channel.clone()))
            .add_holder(node, user, info, added)
    }

    /// A user's last socket on another node left; returns whether it left the cluster.
    pub fn remote_leave(
        &self,
        channel: &str,
        node: u32,
        user: &str,
        removed: &dyn Fn(&str) -> Bytes,
    ) -> bool {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = map.get_mut(channel) else {
            return false;
        };
        let gone = entry.remove_holder(node, user, removed);
        if entry.is_empty() {
            map.remove(channel);
        }
        gone
    }

    /// Replaces everything known of `node` with `held` (its snapshot; empty when it died),
    /// sending member frames for the users that join or leave the cluster as a result.
    pub fn replace_node(
        &self,
        node: u32,
        held: &[RemoteChannel],
        added: &dyn Fn(&str, &str, &str) -> Bytes,
        removed: &dyn Fn(&str, &str) -> Bytes,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let wanted: std::collections::HashMap<&str, &Vec<(String, String)>> = held
            .iter()
            .map(|r| (r.channel.as_str(), &r.members))
            .collect();
        // What the node no longer holds.
        for entry in map.values_mut() {
            let name = entry.name.as_str().to_owned();
            let keep = wanted.get(name.as_str());
            let stale: Vec<Arc<str>> = entry
                .members
                .iter()
                .filter(|(u, m)| {
                    m.remote.contains(&node)
                        && !keep.is_some_and(|k| k.iter().any(|(ku, _)| ku == &***u))
                })
                .map(|(u, _)| u.clone())
                .collect();
            for user in stale {
                if entry.remove_holder(node, &user, &|u| removed(&name, u)) {
                    out.push(Transition::MemberRemoved {
                        channel: name.clone(),
                        user: user.to_string(),
                    });
                }
            }
            if keep.is_none() && entry.set_remote_count(node, 0) && !entry.subscribers.is_empty() {
                out.push(Transition::Count(name.clone()));
            }
            if keep.is_none() && entry.remote.contains(&node) {
                entry.remote.retain(|n| *n != node);
                if entry.subscribers.is_empty() && entry.remote.is_empty() {
                    out.push(Transition::Vacated(name));
                }
            }
        }
        map.retain(|_, c| !c.is_empty());
        // What it holds now.
        for RemoteChannel {
            channel,
            subscribers: count,
            members,
        } in held
        {
            let name = channel.as_str();
            let entry = map
                .entry(name.into())
                .or_insert_with(|| Channel::new(channel.clone()));
            if entry.set_remote_count(node, *count) && !entry.subscribers.is_empty() {
                out.push(Transition::Count(name.to_owned()));
            }
            if !entry.remote.contains(&node) {
                if entry.subscribers.is_empty() && entry.remote.is_empty() {
                    out.push(Transition::Occupied(name.to_owned()));
                }
                entry.remote.push(node);
            }
            for (user, info) in members {
                if entry.add_holder(node, user, info, &|u, i| added(name, u, i)) {
                    out.push(Transition::MemberAdded {
                        channel: name.to_owned(),
                        user: user.clone(),
                    });
                }
            }
        }
        out
    }
}

fn stats_of(c: &Channel) -> ChannelStats {
    ChannelStats {
        subscription_count: c.subscribers.len(),
        user_count: c.members.len(),
    }
}

/// The fan-out loop: one refcount bump and one queue push per subscriber, nothing else.
fn broadcast(channel: &Channel, frame: &Bytes, except: Option<u64>) -> usize {
    let mut delivered = 0;
    for (id, sub) in &channel.subscribers {
        if Some(*id) == except {
            continue;
        }
        if sub.conn.send_ref(frame) == Sent::Queued {
            delivered += 1;
        }
    }
    delivered
}

/// A borrowed view of a presence roster, for building `subscription_succeeded`.
pub struct PresenceSnapshot<'a>(&'a HashMap<Arc<str>, Member>);

impl PresenceSnapshot<'_> {
    /// `{"presence":{"ids":[..],"hash":{..},"count":n}}` as JSON text.
    pub fn to_json(&self) -> String {
        let mut ids = Vec::with_capacity(self.0.len());
        let mut hash = serde_json::Map::with_capacity(self.0.len());
        for (user, m) in self.0 {
            ids.push(serde_json::Value::String(user.to_string()));
            let info = serde_json::from_str(&m.info).unwrap_or(serde_json::Value::Null);
            hash.insert(user.to_string(), info);
        }
        serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": self.0.len()}})
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection and a handle to read what was queued to it.
    fn conn() -> (Arc<Conn>, Arc<Conn>) {
        let c = Arc::new(Conn::new(1, 16));
        (c.clone(), c)
    }

    fn join(user: &str) -> Option<PresenceJoin> {
        Some(PresenceJoin {
            user_id: user.into(),
            user_info: "null".into(),
        })
    }

    fn drain(c: &mut Arc<Conn>) -> Vec<String> {
        c.take_frames()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn presence_counts_users_not_sockets() {
        let reg = Registry::default();
        let ch = ChannelName::parse("presence-room", 200).unwrap();
        let (a1, mut ra1) = conn();
        let (a2, _ra2) = conn();
        let (b, mut rb) = conn();
        let sub = |c: &Arc<Conn>, u: &str| {
            reg.subscribe(
                &ch,
                c,
                join(u),
                100,
                |_| Bytes::from_static(b"ok"),
                |p| Bytes::from(format!("added {}", p.user_id)),
                |_| {},
            )
            .unwrap()
        };
        assert!(sub(&a1, "a").member_added);
        assert!(sub(&b, "b").member_added);
        assert!(
            !sub(&a2, "a").member_added,
            "second socket of a user adds nobody"
        );
        assert_eq!(reg.stats("presence-room").unwrap().user_count, 2);
        assert_eq!(drain(&mut ra1), vec!["ok", "added b"]);
        assert_eq!(drain(&mut rb), vec!["ok"], "b does not hear its own join");

        let gone = |id: u64| {
            reg.unsubscribe(
                "presence-room",
                id,
                |u| Bytes::from(format!("removed {u}")),
                |_| {},
            )
        };
        assert_eq!(gone(a1.id).member_removed, None, "a still has a socket");
        assert_eq!(gone(a2.id).member_removed.as_deref(), Some("a"));
        assert_eq!(drain(&mut rb), vec!["removed a"]);
        let left = gone(b.id);
        assert!(left.vacated);
        assert!(reg.stats("presence-room").is_none());
        assert!(gone(b.id).absent, "unsubscribe is idempotent");
    }

    #[test]
    fn member_limit_refuses_new_users_only() {
        let reg = Registry::default();
        let ch = ChannelName::parse("presence-x", 200).unwrap();
        let (a, _r) = conn();
        let (a2, _r2) = conn();
        let (b, _rb) = conn();
        let ok = |_: Option<PresenceSnapshot<'_>>| Bytes::new();
        let added = |_: &PresenceJoin| Bytes::new();
        reg.subscribe(&ch, &a, join("a"), 1, ok, added, |_| {})
            .unwrap();
        reg.subscribe(&ch, &a2, join("a"), 1, ok, added, |_| {})
            .unwrap();
        assert_eq!(
            reg.subscribe(&ch, &b, join("b"), 1, ok, added, |_| {}),
            Err(JoinError::PresenceFull(1))
        );
    }

    #[test]
    fn publish_skips_the_excluded_socket() {
        let reg = Registry::default();
        let ch = ChannelName::parse("news", 200).unwrap();
        let (a, mut ra) = conn();
        let (b, mut rb) = conn();
        for c in [&a, &b] {
            reg.subscribe(
                &ch,
                c,
                None,
                100,
                |_| Bytes::from_static(b"ok"),
                |_| Bytes::new(),
                |_| {},
            )
            .unwrap();
        }
        assert_eq!(
            reg.publish("news", &Bytes::from_static(b"ev"), Some(a.id)),
            1
        );
        assert_eq!(drain(&mut ra), vec!["ok"]);
        assert_eq!(drain(&mut rb), vec!["ok", "ev"]);
        assert_eq!(reg.publish("nobody", &Bytes::from_static(b"ev"), None), 0);
    }
}
