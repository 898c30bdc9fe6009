//! Signed-in users: which sockets on this node belong to which user (for terminate and
//! server-to-user), which other nodes have the user signed in, and who watches whom
//! (watchlist online/offline events, sent when a user comes online or goes offline anywhere
//! in the cluster).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::conn::Conn;
use crate::protocol::messages;
use crate::ws::frame;

#[derive(Debug, Default)]
struct State {
    /// user id → that user's signed-in sockets.
    sockets: HashMap<Arc<str>, HashMap<u64, Arc<Conn>>>,
    /// watched user id → sockets watching that user.
    watchers: HashMap<Arc<str>, HashMap<u64, Arc<Conn>>>,
    /// user id → other nodes where the user is signed in.
    remote: HashMap<Arc<str>, Vec<u32>>,
}

impl State {
    fn online(&self, user: &str) -> bool {
        self.sockets.contains_key(user) || self.remote.contains_key(user)
    }

    fn tell_watchers(&self, user: &str, online: bool) {
        if let Some(watchers) = self.watchers.get(user) {
            let f = if online {
                frame::text(&messages::watchlist_events(&[user], &[]))
            } else {
                frame::text(&messages::watchlist_events(&[], &[user]))
            };
            for w in watchers.values() {
                w.send(f.clone());
            }
        }
    }

    fn add_remote(&mut self, node: u32, user: &str) {
        let was = self.online(user);
        let nodes = self.remote.entry(user.into()).or_default();
        if !nodes.contains(&node) {
            nodes.push(node);
        }
        if !was {
            self.tell_watchers(user, true);
        }
    }

    fn remove_remote(&mut self, node: u32, user: &str) {
        let Some(nodes) = self.remote.get_mut(user) else {
            return;
        };
        nodes.retain(|n| *n != node);
        if nodes.is_empty() {
            self.remote.remove(user);
            if !self.online(user) {
                self.tell_watchers(user, false);
            }
        }
    }
}

/// A std `Mutex`: signin and disconnect are rare next to publishes and nothing awaits inside.
#[derive(Debug, Default)]
pub struct Users {
    state: Mutex<State>,
}

impl Users {
    /// Records `conn` as `user`. Tells the user's watchers it came online when it was offline
    /// everywhere, calls `announce` (under the lock, so announcements stay in order) when this
    /// is its first socket on this node, and tells `conn` which of its own watchlist are
    /// online now.
    pub fn sign_in(
        &self,
        conn: &Arc<Conn>,
        user: &Arc<str>,
        watchlist: &[Arc<str>],
        announce: impl FnOnce(),
    ) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_online = st.online(user);
        let mine = st.sockets.entry(user.clone()).or_default();
        let first = mine.is_empty();
        mine.insert(conn.id, conn.clone());
        if first {
            announce();
        }
        if !was_online {
            st.tell_watchers(user, true);
        }
        let mut online = Vec::new();
        for watched in watchlist {
            st.watchers
                .entry(watched.clone())
                .or_default()
                .insert(conn.id, conn.clone());
            if st.online(watched) {
                online.push(&**watched);
            }
        }
        if !online.is_empty() {
            conn.send(frame::text(&messages::watchlist_events(&online, &[])));
        }
    }

    /// Forgets `conn`; calls `announce` when the user's last socket on this node left, and
    /// tells watchers the user went offline when no node has it signed in anymore.
    pub fn sign_out(
        &self,
        conn_id: u64,
        user: &Arc<str>,
        watchlist: &[Arc<str>],
        announce: impl FnOnce(),
    ) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for watched in watchlist {
            if let Some(w) = st.watchers.get_mut(watched) {
                w.remove(&conn_id);
                if w.is_empty() {
                    st.watchers.remove(watched);
                }
            }
        }
        let Some(mine) = st.sockets.get_mut(user) else {
            return;
        };
        mine.remove(&conn_id);
        if mine.is_empty() {
            st.sockets.remove(user);
            announce();
            if !st.online(user) {
                st.tell_watchers(user, false);
            }
        }
    }

    /// `user` signed in on another node (its first socket there).
    pub fn remote_online(&self, node: u32, user: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.add_remote(node, user);
    }

    /// `user`'s last socket on another node signed out.
    pub fn remote_offline(&self, node: u32, user: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.remove_remote(node, user);
    }

    /// Replaces the users known signed in on `node` (its snapshot; empty when it died).
    pub fn replace_node(&self, node: u32, users: &[String]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<Arc<str>> = st
            .remote
            .iter()
            .filter(|(u, nodes)| nodes.contains(&node) && !users.iter().any(|x| x == &***u))
            .map(|(u, _)| u.clone())
            .collect();
        for u in stale {
            st.remove_remote(node, &u);
        }
        for u in users {
            st.add_remote(node, u);
        }
    }

    /// Calls `send` with the users signed in on this node, under the lock.
    pub fn snapshot_then(&self, send: impl FnOnce(Vec<String>)) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        send(st.sockets.keys().map(|u| u.to_string()).collect());
    }

    /// The sockets signed in as `user` on this node.
    pub fn sockets_of(&self, user: &str) -> Vec<Arc<Conn>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.sockets
            .get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
