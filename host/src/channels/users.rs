//! Signed-in users on this node: which sockets belong to which user (for terminate and
//! server-to-user), and who watches whom (watchlist online/offline events).

use std::collections::{HashMap, HashSet};
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
}

/// A std `Mutex`: signin and disconnect are rare next to publishes and nothing awaits inside.
#[derive(Debug, Default)]
pub struct Users {
    state: Mutex<State>,
}

impl Users {
    /// Records `conn` as `user`. Tells the user's watchers it came online when this is its first
    /// socket, and tells `conn` which of its own watchlist are online now.
    pub fn sign_in(&self, conn: &Arc<Conn>, user: &Arc<str>, watchlist: &[Arc<str>]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mine = st.sockets.entry(user.clone()).or_default();
        let first = mine.is_empty();
        mine.insert(conn.id, conn.clone());
        if first {
            if let Some(watchers) = st.watchers.get(user) {
                let f = frame::text(&messages::watchlist_events(&[user], &[]));
                for w in watchers.values() {
                    w.send(f.clone());
                }
            }
        }
        let mut online = Vec::new();
        for watched in watchlist {
            st.watchers
                .entry(watched.clone())
                .or_default()
                .insert(conn.id, conn.clone());
            if st.sockets.contains_key(watched) {
                online.push(&**watched);
            }
        }
        if !online.is_empty() {
            conn.send(frame::text(&messages::watchlist_events(&online, &[])));
        }
    }

    /// Forgets `conn`; tells watchers the user went offline when its last socket left.
    pub fn sign_out(&self, conn_id: u64, user: &Arc<str>, watchlist: &[Arc<str>]) {
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
            if let Some(watchers) = st.watchers.get(user) {
                let f = frame::text(&messages::watchlist_events(&[], &[user]));
                for w in watchers.values() {
                    w.send(f.clone());
                }
            }
        }
    }

    /// The sockets signed in as `user` on this node.
    pub fn sockets_of(&self, user: &str) -> Vec<Arc<Conn>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.sockets
            .get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any socket is signed in as `user`.
    pub fn is_online(&self, user: &str) -> bool {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.sockets.contains_key(user)
    }

    pub fn online_ids(&self) -> HashSet<String> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.sockets.keys().map(|u| u.to_string()).collect()
    }
}
