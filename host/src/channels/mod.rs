//! Apps and their channels on this node: subscriptions, presence, cache, signed-in users,
//! and the local fan-out. Knows nothing of other nodes.

mod cache;
mod registry;
mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use cache::{Cache, CachedEvent};
pub use registry::{ChannelStats, JoinError, PresenceJoin, Registry};
pub use users::Users;

use crate::config::AppConfig;
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::protocol::{messages, ChannelKind, ChannelName};
use crate::webhooks::{HookEvent, Webhooks};
use crate::ws::frame;

/// One configured app and everything this node holds for it.
pub struct App {
    pub config: Arc<AppConfig>,
    pub registry: Registry,
    pub users: Users,
    pub cache: Cache,
    /// Open connections, for the per-app quota.
    pub connections: AtomicUsize,
    metrics: Arc<Metrics>,
    hooks: Webhooks,
}

impl App {
    pub fn new(config: AppConfig, metrics: Arc<Metrics>, hooks: Webhooks) -> Self {
        let ttl = Duration::from_secs(config.cache_ttl_secs);
        Self {
            config: Arc::new(config),
            registry: Registry::default(),
            users: Users::default(),
            cache: Cache::new(ttl),
            connections: AtomicUsize::new(0),
            metrics,
            hooks,
        }
    }

    pub fn emit(&self, event: HookEvent) {
        self.hooks.emit(&self.config, event);
    }

    /// Publishes a server event (HTTP API) to one channel: encodes it once, caches it on cache
    /// channels, and queues it to every local subscriber but `except`.
    pub fn publish(
        &self,
        channel: &ChannelName,
        event: &str,
        data: &str,
        except: Option<u64>,
    ) -> usize {
        self.publish_many(channel, &[(event, data)], except)
    }

    /// Publishes several events to one channel as one shared buffer of back-to-back frames,
    /// so each subscriber gets them in a single write. Returns deliveries (events × sockets).
    pub fn publish_many(
        &self,
        channel: &ChannelName,
        events: &[(&str, &str)],
        except: Option<u64>,
    ) -> usize {
        let Some(&(last_event, last_data)) = events.last() else {
            return 0;
        };
        let name = channel.as_str();
        let last = frame::text(&messages::string_event(last_event, Some(name), last_data));
        let combined = if events.len() == 1 {
            last.clone()
        } else {
            let mut buf = Vec::new();
            for (event, data) in &events[..events.len() - 1] {
                buf.extend_from_slice(&frame::text(&messages::string_event(
                    event,
                    Some(name),
                    data,
                )));
            }
            buf.extend_from_slice(&last);
            Bytes::from(buf)
        };
        let sockets = self.registry.publish_then(name, &combined, except, || {
            // Only the last event is cached.
            if channel.is_cache() {
                self.cache.put(name, last.clone(), last_data);
            }
        });
        Metrics::add(
            &self.metrics.ws_messages_out,
            (sockets * events.len()) as u64,
        );
        Metrics::add(
            &self.metrics.ws_bytes_out,
            (sockets * combined.len()) as u64,
        );
        sockets * events.len()
    }

    /// Counts `n` deliveries of a `len`-byte frame.
    pub fn count_out(&self, n: usize, len: usize) {
        Metrics::add(&self.metrics.ws_messages_out, n as u64);
        Metrics::add(&self.metrics.ws_bytes_out, (n * len) as u64);
    }

    /// Subscribes `conn` (permissions already checked) and sends it `subscription_succeeded`,
    /// then the cached event or `pusher:cache_miss` on cache channels.
    pub fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &ChannelName,
        presence: Option<PresenceJoin>,
    ) -> Result<(), JoinError> {
        let mut cache_missed = false;
        let name = channel.as_str();
        let joined = self.registry.subscribe(
            channel,
            conn,
            presence.clone(),
            self.config.limits.max_presence_members,
            |snapshot| {
                let data = snapshot.map_or_else(|| "{}".to_owned(), |s| s.to_json());
                let mut out = frame::text(&messages::subscription_succeeded(name, &data)).to_vec();
                if channel.is_cache() {
                    // Same buffer, so no publish can slip between the two frames.
                    match self.cache.get(name) {
                        Some((cached, _)) => out.extend_from_slice(&cached.frame),
                        None => {
                            cache_missed = true;
                            out.extend_from_slice(&frame::text(&messages::cache_miss(name)));
                        }
                    }
                }
                Bytes::from(out)
            },
            |p| frame::text(&messages::member_added(name, &p.user_id, &p.user_info)),
        )?;
        if joined.already {
            return Ok(());
        }
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        if joined.occupied {
            self.emit(HookEvent::ChannelOccupied {
                channel: name.into(),
            });
        }
        if joined.member_added {
            let user_id = presence.map(|p| p.user_id.to_string()).unwrap_or_default();
            self.emit(HookEvent::MemberAdded {
                channel: name.into(),
                user_id,
            });
        }
        if cache_missed {
            self.emit(HookEvent::CacheMiss {
                channel: name.into(),
            });
        }
        self.count_changed(channel, joined.subscription_count);
        Ok(())
    }

    /// Unsubscribes `conn_id`; idempotent.
    pub fn unsubscribe(&self, conn_id: u64, channel: &ChannelName) {
        let name = channel.as_str();
        let left = self.registry.unsubscribe(name, conn_id, |user| {
            frame::text(&messages::member_removed(name, user))
        });
        if left.absent {
            return;
        }
        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if let Some(user) = left.member_removed {
            self.emit(HookEvent::MemberRemoved {
                channel: name.into(),
                user_id: user.to_string(),
            });
        }
        if left.vacated {
            self.emit(HookEvent::ChannelVacated {
                channel: name.into(),
            });
        } else {
            self.count_changed(channel, left.subscription_count);
        }
    }

    /// Broadcasts `pusher_internal:subscription_count` on non-presence channels when enabled.
    fn count_changed(&self, channel: &ChannelName, count: usize) {
        if !self.config.subscription_count || channel.kind() == ChannelKind::Presence {
            return;
        }
        let f = frame::text(&messages::subscription_count(channel.as_str(), count));
        self.registry.publish(channel.as_str(), &f, None);
        self.emit(HookEvent::SubscriptionCount {
            channel: channel.as_str().into(),
            count,
        });
    }

    /// Closes every connection signed in as `user` on this node with 4009.
    pub fn terminate_user(&self, user: &str) -> usize {
        let conns = self.users.sockets_of(user);
        for c in &conns {
            c.close(
                crate::protocol::ErrorCode::Unauthorized,
                "connection terminated by the server",
            );
        }
        conns.len()
    }
}

/// All apps, looked up by id (HTTP API) or key (WebSocket path), and every open connection.
pub struct Hub {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
    /// Every open connection, for shutdown. Touched only on connect and disconnect.
    conns: std::sync::Mutex<HashMap<u64, Arc<Conn>>>,
    /// This node's id, the first half of every socket id.
    pub node_id: u32,
    pub metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(apps: &[AppConfig], node_id: u32, metrics: Arc<Metrics>, hooks: Webhooks) -> Self {
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        for cfg in apps {
            let app = Arc::new(App::new(cfg.clone(), metrics.clone(), hooks.clone()));
            by_id.insert(cfg.id.clone(), app.clone());
            by_key.insert(cfg.key.clone(), app);
        }
        Self {
            by_id,
            by_key,
            conns: std::sync::Mutex::new(HashMap::new()),
            node_id,
            metrics,
        }
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    pub fn register(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.insert(conn.id, conn.clone());
    }

    pub fn unregister(&self, conn_id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.remove(&conn_id);
    }

    /// Asks every open connection to close with `code`.
    pub fn close_all(&self, code: crate::protocol::ErrorCode, reason: &str) {
        let conns: Vec<Arc<Conn>> = {
            let map = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        for c in conns {
            c.close(code, reason);
        }
    }

    /// Maps a client-visible socket id to this node's connection id, if it is ours.
    pub fn local_conn_id(&self, socket_id: &str) -> Option<u64> {
        let (node, conn) = socket_id.split_once('.')?;
        (node.parse::<u32>().ok()? == self.node_id).then_some(())?;
        conn.parse().ok()
    }
}
