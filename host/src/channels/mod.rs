//! Apps and their channels on this node: subscriptions, presence, cache, signed-in users,
//! and the local fan-out. Other nodes exist only behind the `Link` seam: local changes are
//! announced through it, and the cluster layer applies remote ones through `App`'s
//! `remote_*` methods.

mod cache;
mod counts;
mod registry;
mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use cache::{Cache, CachedEvent};
pub use registry::{
    ChannelStats, JoinError, LocalChannel, PresenceJoin, Registry, RemoteChannel, Transition,
};
pub use users::Users;

use crate::config::AppConfig;
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::protocol::{messages, ChannelKind, ChannelName};
use crate::webhooks::{HookEvent, Webhooks};
use crate::ws::frame;

/// What this node tells the rest of the cluster. Presence and occupancy calls are made under
/// the registry lock, so they arrive in the order the changes happened; implementations must
/// be quick and must not block.
pub trait Link: Send + Sync {
    /// Whether this node sends the webhooks that describe the cluster (occupied, vacated,
    /// member added and removed). Exactly one node does; alone, that is this one.
    fn decides_webhooks(&self) -> bool {
        true
    }
    fn occupied(&self, _app: &str, _channel: &str) {}
    fn vacated(&self, _app: &str, _channel: &str) {}
    fn member_joined(&self, _app: &str, _channel: &str, _user: &str, _info: &str) {}
    fn member_left(&self, _app: &str, _channel: &str, _user: &str) {}
    /// A user's first socket on this node signed in.
    fn user_online(&self, _app: &str, _user: &str) {}
    /// A user's last socket on this node signed out.
    fn user_offline(&self, _app: &str, _user: &str) {}
    /// This node's subscriber count of `channel` changed (apps that count subscriptions).
    fn count(&self, _app: &str, _channel: &str, _count: usize) {}
    /// Complete Pusher messages (JSON text) published on `channel`; `except` is the socket id
    /// to skip; `cache` the last event's data on cache channels.
    fn event(
        &self,
        _app: &str,
        _channel: &ChannelName,
        _messages: Vec<String>,
        _except: Option<&str>,
        _cache: Option<&str>,
    ) {
    }
}

/// Single node: nobody to tell.
pub struct NoLink;
impl Link for NoLink {}

/// One configured app and everything this node holds for it.
pub struct App {
    pub config: Arc<AppConfig>,
    /// This node's id, the first half of its socket ids.
    pub node_id: u32,
    link: Arc<dyn Link>,
    pub registry: Registry,
    pub users: Users,
    pub cache: Cache,
    /// Open connections, for the per-app quota.
    pub connections: AtomicUsize,
    counts: counts::CountThrottle,
    metrics: Arc<Metrics>,
    hooks: Webhooks,
}

impl App {
    pub fn new(
        config: AppConfig,
        node_id: u32,
        link: Arc<dyn Link>,
        metrics: Arc<Metrics>,
        hooks: Webhooks,
    ) -> Self {
        let ttl = Duration::from_secs(config.cache_ttl_secs);
        Self {
            config: Arc::new(config),
            node_id,
            link,
            registry: Registry::default(),
            users: Users::default(),
            cache: Cache::new(ttl),
            connections: AtomicUsize::new(0),
            counts: counts::CountThrottle::default(),
            metrics,
            hooks,
        }
    }

    pub fn emit(&self, event: HookEvent) {
        self.hooks.emit(&self.config, event);
    }

    /// Publishes a server event (HTTP API) to one channel: encodes it once, caches it on cache
    /// channels, queues it to every local subscriber but socket `except`, and hands it to the
    /// cluster.
    pub fn publish(
        &self,
        channel: &ChannelName,
        event: &str,
        data: &str,
        except: Option<&str>,
    ) -> usize {
        self.publish_many(channel, &[(event, data)], except)
    }

    /// Publishes several events to one channel as one shared buffer of back-to-back frames,
    /// so each subscriber gets them in a single write. Returns local deliveries.
    pub fn publish_many(
        &self,
        channel: &ChannelName,
        events: &[(&str, &str)],
        except: Option<&str>,
    ) -> usize {
        let Some(&(_, last_data)) = events.last() else {
            return 0;
        };
        let name = channel.as_str();
        let messages: Vec<String> = events
            .iter()
            .map(|(event, data)| {
                String::from_utf8(messages::string_event(event, Some(name), data))
                    .expect("messages are built from str")
            })
            .collect();
        let cache = channel.is_cache().then_some(last_data);
        let n = self.deliver(channel, &messages, except, cache);
        self.link
            .event(&self.config.id, channel, messages, except, cache);
        n
    }

    /// Delivers complete messages to local subscribers (and the cache); used for this node's
    /// publishes and for those other nodes forward.
    pub fn deliver(
        &self,
        channel: &ChannelName,
        messages: &[String],
        except: Option<&str>,
        cache: Option<&str>,
    ) -> usize {
        let Some(last_msg) = messages.last() else {
            return 0;
        };
        let name = channel.as_str();
        let last = frame::text(last_msg.as_bytes());
        let combined = if messages.len() == 1 {
            last.clone()
        } else {
            let mut buf = Vec::new();
            for m in &messages[..messages.len() - 1] {
                buf.extend_from_slice(&frame::text(m.as_bytes()));
            }
            buf.extend_from_slice(&last);
            Bytes::from(buf)
        };
        let except = except.and_then(|s| local_conn_id(self.node_id, s));
        let sockets = self.registry.publish_then(name, &combined, except, || {
            // Only the last event is cached.
            if let Some(data) = cache {
                self.cache.put(name, last.clone(), data);
            }
        });
        Metrics::add(
            &self.metrics.ws_messages_out,
            (sockets * messages.len()) as u64,
        );
        Metrics::add(
            &self.metrics.ws_bytes_out,
            (sockets * combined.len()) as u64,
        );
        sockets * messages.len()
    }

    /// A client event from a local socket: to the other local subscribers, then the cluster.
    pub fn client_event(&self, channel: &ChannelName, message: Vec<u8>, sender: &Conn) -> usize {
        let f = frame::text(&message);
        let n = self.registry.publish(channel.as_str(), &f, Some(sender.id));
        self.count_out(n, f.len());
        let text = String::from_utf8(message).expect("messages are built from str");
        self.link.event(
            &self.config.id,
            channel,
            vec![text],
            Some(&sender.socket_id),
            None,
        );
        n
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
            |j| {
                if j.occupied {
                    self.link.occupied(&self.config.id, name);
                }
                if let (true, Some(p)) = (j.local_member_added, &presence) {
                    self.link
                        .member_joined(&self.config.id, name, &p.user_id, &p.user_info);
                }
                if self.counts_subscriptions(channel) {
                    self.link.count(&self.config.id, name, j.local_count);
                }
            },
        )?;
        if joined.already {
            return Ok(());
        }
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        // Webhooks describe the cluster: only the change that made the channel occupied (or
        // the user present) anywhere fires one, and only on the node that decides them.
        let hooks = self.link.decides_webhooks();
        if joined.cluster_occupied && hooks {
            self.emit(HookEvent::ChannelOccupied {
                channel: name.into(),
            });
        }
        if joined.member_added && hooks {
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
        let left = self.registry.unsubscribe(
            name,
            conn_id,
            |user| frame::text(&messages::member_removed(name, user)),
            |l| {
                if let Some(user) = &l.local_member_removed {
                    self.link.member_left(&self.config.id, name, user);
                }
                if l.vacated {
                    // Implies a count of zero on this node.
                    self.link.vacated(&self.config.id, name);
                } else if self.counts_subscriptions(channel) {
                    self.link.count(&self.config.id, name, l.local_count);
                }
            },
        );
        if left.absent {
            return;
        }
        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
        let hooks = self.link.decides_webhooks();
        if let (Some(user), true) = (left.member_removed, hooks) {
            self.emit(HookEvent::MemberRemoved {
                channel: name.into(),
                user_id: user.to_string(),
            });
        }
        if left.cluster_vacated && hooks {
            self.emit(HookEvent::ChannelVacated {
                channel: name.into(),
            });
        }
        if !left.vacated {
            self.count_changed(channel, left.subscription_count);
        }
    }

    fn counts_subscriptions(&self, channel: &ChannelName) -> bool {
        self.config.subscription_count && channel.kind() != ChannelKind::Presence
    }

    /// Broadcasts `pusher_internal:subscription_count` (the cluster-wide count) on
    /// non-presence channels when enabled.
    fn count_changed(&self, channel: &ChannelName, count: usize) {
        if !self.counts_subscriptions(channel) {
            return;
        }
        self.send_count(channel.as_str(), count);
        self.emit(HookEvent::SubscriptionCount {
            channel: channel.as_str().into(),
            count,
        });
    }

    /// Sends the count to local subscribers unless the throttle holds it back.
    fn send_count(&self, channel: &str, count: usize) {
        if self.counts.admit(channel, count, std::time::Instant::now()) {
            let f = frame::text(&messages::subscription_count(channel, count));
            let n = self.registry.publish(channel, &f, None);
            self.count_out(n, f.len());
        }
    }

    /// Sends the current count on channels whose updates were held back by the throttle and
    /// whose interval has passed. Called about once a second.
    pub fn flush_counts(&self) {
        for channel in self.counts.due(std::time::Instant::now()) {
            if let Some(count) = self.registry.subscription_count(&channel) {
                let f = frame::text(&messages::subscription_count(&channel, count));
                let n = self.registry.publish(&channel, &f, None);
                self.count_out(n, f.len());
            }
        }
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

    /// Signs `conn` in as `user` (watchlist events across the cluster).
    pub fn sign_in(&self, conn: &Arc<Conn>, user: &Arc<str>, watchlist: &[Arc<str>]) {
        self.users.sign_in(conn, user, watchlist, || {
            self.link.user_online(&self.config.id, user)
        });
    }

    pub fn sign_out(&self, conn_id: u64, user: &Arc<str>, watchlist: &[Arc<str>]) {
        self.users.sign_out(conn_id, user, watchlist, || {
            self.link.user_offline(&self.config.id, user)
        });
    }

    /// Parses a channel name another node sent; `None` (logged by the caller) when invalid.
    pub fn channel_name(&self, name: &str) -> Option<ChannelName> {
        ChannelName::parse(name, self.config.limits.max_channel_name_length.max(200)).ok()
    }

    pub fn remote_member_joined(&self, node: u32, channel: &ChannelName, user: &str, info: &str) {
        let name = channel.as_str();
        let added = self
            .registry
            .remote_join(channel, node, user, info, &|u, i| {
                frame::text(&messages::member_added(name, u, i))
            });
        if added && self.link.decides_webhooks() {
            self.emit(HookEvent::MemberAdded {
                channel: name.into(),
                user_id: user.into(),
            });
        }
    }

    pub fn remote_occupied(&self, node: u32, channel: &ChannelName) {
        if self.registry.remote_occupied(channel, node) && self.link.decides_webhooks() {
            self.emit(HookEvent::ChannelOccupied {
                channel: channel.as_str().into(),
            });
        }
    }

    pub fn remote_vacated(&self, node: u32, channel: &ChannelName) {
        let name = channel.as_str();
        if self.registry.remote_vacated(name, node) && self.link.decides_webhooks() {
            self.emit(HookEvent::ChannelVacated {
                channel: name.into(),
            });
        }
        // Vacated means a count of zero there; our subscribers hear the new total.
        self.remote_count(node, channel, 0);
    }

    /// Another node's subscriber count changed: local subscribers hear the new total.
    pub fn remote_count(&self, node: u32, channel: &ChannelName, count: u32) {
        if !self.counts_subscriptions(channel) {
            return;
        }
        let name = channel.as_str();
        if let Some(total) = self.registry.remote_count(name, node, count) {
            self.send_count(name, total);
        }
    }

    pub fn remote_member_left(&self, node: u32, channel: &str, user: &str) {
        let gone = self.registry.remote_leave(channel, node, user, &|u| {
            frame::text(&messages::member_removed(channel, u))
        });
        if gone && self.link.decides_webhooks() {
            self.emit(HookEvent::MemberRemoved {
                channel: channel.into(),
                user_id: user.into(),
            });
        }
    }

    /// Replaces what is known of `node` (its snapshot, or nothing when it died), sending
    /// member frames and, on the deciding node, webhooks for what changed cluster-wide.
    pub fn replace_node(&self, node: u32, held: &[RemoteChannel], users: &[String]) {
        self.users.replace_node(node, users);
        let changes = self.registry.replace_node(
            node,
            held,
            &|c, u, i| frame::text(&messages::member_added(c, u, i)),
            &|c, u| frame::text(&messages::member_removed(c, u)),
        );
        let hooks = self.link.decides_webhooks();
        for t in changes {
            if let Transition::Count(channel) = &t {
                // Subscribers here hear the new total (a node died or resynchronised).
                if let (Some(name), Some(count)) = (
                    self.channel_name(channel),
                    self.registry.subscription_count(channel),
                ) {
                    if self.counts_subscriptions(&name) {
                        self.send_count(channel, count);
                    }
                }
                continue;
            }
            if !hooks {
                continue;
            }
            self.emit(match t {
                Transition::Occupied(channel) => HookEvent::ChannelOccupied { channel },
                Transition::Vacated(channel) => HookEvent::ChannelVacated { channel },
                Transition::MemberAdded { channel, user } => HookEvent::MemberAdded {
                    channel,
                    user_id: user,
                },
                Transition::MemberRemoved { channel, user } => HookEvent::MemberRemoved {
                    channel,
                    user_id: user,
                },
                Transition::Count(_) => continue,
            });
        }
    }
}

/// Maps a client-visible socket id (`node.conn`) to a connection id when it is `node`'s.
pub fn local_conn_id(node: u32, socket_id: &str) -> Option<u64> {
    let (n, conn) = socket_id.split_once('.')?;
    (n.parse::<u32>().ok()? == node).then_some(())?;
    conn.parse().ok()
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
    pub fn new(
        apps: &[AppConfig],
        node_id: u32,
        link: Arc<dyn Link>,
        metrics: Arc<Metrics>,
        hooks: Webhooks,
    ) -> Self {
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        for cfg in apps {
            let app = Arc::new(App::new(
                cfg.clone(),
                node_id,
                link.clone(),
                metrics.clone(),
                hooks.clone(),
            ));
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

    pub fn apps(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }
}
