//! What one connection knows and how it answers each client message: subscriptions, signin,
//! client events. Replies go through the connection's own queue so they stay in order with
//! fan-out traffic; nothing here does I/O or awaits.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::frame;
use super::rate::TokenBucket;
use crate::channels::{App, JoinError, PresenceJoin};
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::protocol::auth::{self, AuthError};
use crate::protocol::messages::{self, Subscribe};
use crate::protocol::names::check_event_name;
use crate::protocol::{ChannelKind, ChannelName, ClientMessage, ErrorCode};
use crate::webhooks::HookEvent;

/// A user this connection signed in as.
struct SignedIn {
    id: Arc<str>,
    watchlist: Vec<Arc<str>>,
}

/// What a subscribed channel remembers about this socket.
struct Subscription {
    name: ChannelName,
    /// The presence user id this socket joined as.
    user_id: Option<Arc<str>>,
}

pub struct Session {
    pub app: Arc<App>,
    pub conn: Arc<Conn>,
    metrics: Arc<Metrics>,
    subscriptions: HashMap<Box<str>, Subscription>,
    user: Option<SignedIn>,
    rate: TokenBucket,
    /// Signed in or joined an authenticated channel (for authorized-connections mode).
    pub authorized: bool,
}

impl Session {
    pub fn new(app: Arc<App>, conn: Arc<Conn>, metrics: Arc<Metrics>) -> Self {
        let rate = TokenBucket::new(app.config.limits.client_events_per_sec);
        Self {
            app,
            conn,
            metrics,
            subscriptions: HashMap::new(),
            user: None,
            rate,
            authorized: false,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn send(&self, json: &[u8]) {
        self.conn.send(frame::text(json));
    }

    /// Sends `pusher:error`; closes too when the code says so.
    pub fn error(&self, message: &str, code: Option<ErrorCode>) {
        Metrics::inc(&self.metrics.ws_errors);
        match code {
            Some(code) if code.closes() => self.conn.close(code, message),
            _ => self.send(&messages::error(message, code.map(ErrorCode::code))),
        }
    }

    /// Handles one text message.
    pub fn on_text(&mut self, text: &str) {
        Metrics::inc(&self.metrics.ws_messages_in);
        match ClientMessage::parse(text) {
            Ok(ClientMessage::Ping) => self.send(&messages::pong()),
            Ok(ClientMessage::Pong) => {}
            Ok(ClientMessage::Subscribe(s)) => self.subscribe(s),
            Ok(ClientMessage::Unsubscribe { channel }) => self.unsubscribe(&channel),
            Ok(ClientMessage::Signin { auth, user_data }) => self.signin(&auth, &user_data),
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(&event, &channel, &data),
            Err(e) => self.error(&e.to_string(), None),
        }
    }

    fn subscription_error(&self, channel: &str, kind: &str, error: &str, status: u16) {
        Metrics::inc(&self.metrics.ws_errors);
        self.send(&messages::subscription_error(channel, kind, error, status));
    }

    fn subscribe(&mut self, s: Subscribe) {
        let limits = &self.app.config.limits;
        let channel = match ChannelName::parse(&s.channel, limits.max_channel_name_length) {
            Ok(c) => c,
            Err(e) => {
                return self.subscription_error(&s.channel, "InvalidChannel", &e.to_string(), 400)
            }
        };
        let max_subs = limits.max_subscriptions_per_connection;
        if self.subscriptions.len() >= max_subs
            && !self.subscriptions.contains_key(channel.as_str())
        {
            return self.subscription_error(
                &s.channel,
                "LimitReached",
                &format!("a connection may join at most {max_subs} channels"),
                403,
            );
        }
        let socket_id = &self.conn.socket_id;
        let mut presence = None;
        match channel.kind() {
            ChannelKind::Public => {}
            ChannelKind::ServerToUser => {
                let wanted = channel.server_to_user_id();
                if self.user.as_ref().map(|u| &*u.id) != wanted {
                    return self.subscription_error(
                        &s.channel,
                        "AuthError",
                        "server-to-user channels need a signin as that user",
                        403,
                    );
                }
            }
            ChannelKind::Private | ChannelKind::Encrypted => {
                let to_sign = auth::channel_string(socket_id, channel.as_str(), None);
                if let Err(e) = self.check_auth(s.auth.as_deref(), &to_sign) {
                    return self.subscription_error(&s.channel, "AuthError", &e.to_string(), 401);
                }
            }
            ChannelKind::Presence => {
                let Some(data) = s.channel_data.as_deref() else {
                    return self.subscription_error(
                        &s.channel,
                        "AuthError",
                        "presence channels need channel_data",
                        401,
                    );
                };
                // Signed over the exact bytes received, before any parsing (summary §5.4).
                let to_sign = auth::channel_string(socket_id, channel.as_str(), Some(data));
                if let Err(e) = self.check_auth(s.auth.as_deref(), &to_sign) {
                    return self.subscription_error(&s.channel, "AuthError", &e.to_string(), 401);
                }
                match parse_channel_data(
                    data,
                    limits.max_user_id_length,
                    limits.max_presence_user_info_bytes,
                ) {
                    Ok(p) => presence = Some(p),
                    Err(e) => {
                        return self.subscription_error(&s.channel, "InvalidChannelData", &e, 400)
                    }
                }
            }
        }
        match self.app.subscribe(&self.conn, &channel, presence.clone()) {
            Ok(()) => {
                if channel.kind().needs_auth() {
                    self.authorized = true;
                }
                // A repeated subscribe keeps the identity the socket first joined with, which
                // is the one the roster holds.
                self.subscriptions
                    .entry(channel.as_str().into())
                    .or_insert(Subscription {
                        name: channel,
                        user_id: presence.map(|p| p.user_id),
                    });
            }
            Err(JoinError::PresenceFull(_)) => {
                self.subscription_error(&s.channel, "LimitReached", "presence channel is full", 403)
            }
        }
    }

    fn check_auth(&self, given: Option<&str>, to_sign: &str) -> Result<(), AuthError> {
        auth::verify_auth(
            &self.app.config.key,
            &self.app.config.secret,
            given,
            to_sign.as_bytes(),
        )
    }

    fn unsubscribe(&mut self, channel: &str) {
        if let Some(sub) = self.subscriptions.remove(channel) {
            self.app.unsubscribe(self.conn.id, &sub.name);
        }
    }

    fn signin(&mut self, auth_str: &str, user_data: &str) {
        if !self.app.config.user_authentication {
            return self.error(
                "user authentication is disabled for this app",
                Some(ErrorCode::Unauthorized),
            );
        }
        let to_sign = auth::signin_string(&self.conn.socket_id, user_data);
        if let Err(e) = self.check_auth(Some(auth_str), &to_sign) {
            return self.error(
                &format!("signin failed: {e}"),
                Some(ErrorCode::Unauthorized),
            );
        }
        let parsed: serde_json::Value = match serde_json::from_str(user_data) {
            Ok(v) => v,
            Err(e) => {
                return self.error(
                    &format!("signin failed: user_data is not JSON: {e}"),
                    Some(ErrorCode::Unauthorized),
                )
            }
        };
        let id = match parsed.get("id").and_then(|v| v.as_str()) {
            Some(id) if !id.is_empty() => id,
            _ => {
                return self.error(
                    "signin failed: user_data needs a non-empty string id",
                    Some(ErrorCode::Unauthorized),
                )
            }
        };
        if let Some(current) = &self.user {
            if &*current.id != id {
                return self.error(
                    "signin failed: already signed in as another user",
                    Some(ErrorCode::Unauthorized),
                );
            }
            self.send(&messages::signin_success(user_data));
            return;
        }
        let max = self.app.config.limits.max_watchlist;
        let mut watchlist: Vec<Arc<str>> = parsed
            .get("watchlist")
            .and_then(|w| w.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).map(Arc::from).collect())
            .unwrap_or_default();
        let over = watchlist.len() > max;
        watchlist.truncate(max);
        let user: Arc<str> = id.into();
        self.send(&messages::signin_success(user_data));
        if over {
            self.error(
                &format!("watchlist holds more than {max} ids; only the first {max} are watched"),
                Some(ErrorCode::WatchlistOverLimit),
            );
        }
        self.app.sign_in(&self.conn, &user, &watchlist);
        self.user = Some(SignedIn {
            id: user,
            watchlist,
        });
        self.authorized = true;
    }

    fn client_event(&mut self, event: &str, channel: &str, data: &RawValue) {
        let reject = |s: &Self, msg: &str| s.error(msg, Some(ErrorCode::ClientEventRejected));
        let cfg = &self.app.config;
        if !cfg.client_events {
            return reject(self, "client events are disabled for this app");
        }
        let Some(sub) = self.subscriptions.get(channel) else {
            return reject(
                self,
                &format!("not subscribed to channel '{}'", truncate(channel)),
            );
        };
        if !sub.name.kind().allows_client_events() {
            return reject(
                self,
                "client events are only allowed on private and presence channels",
            );
        }
        if let Err(e) = check_event_name(event, cfg.limits.max_event_name_length) {
            return reject(self, &e.to_string());
        }
        if data.get().len() > cfg.limits.max_event_payload_bytes {
            return reject(
                self,
                &format!(
                    "client event data exceeds {} bytes",
                    cfg.limits.max_event_payload_bytes
                ),
            );
        }
        if !self.rate.try_take(Instant::now()) {
            return reject(self, "client event rate limit exceeded");
        }
        let user_id = sub.user_id.clone();
        let message = messages::envelope(event, Some(channel), data.get(), user_id.as_deref());
        let name = sub.name.clone();
        self.app.client_event(&name, message, &self.conn);
        Metrics::inc(&self.metrics.client_events);
        let data_string =
            serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_owned());
        self.app.emit(HookEvent::ClientEvent {
            channel: channel.into(),
            event: event.into(),
            data: data_string,
            socket_id: self.conn.socket_id.to_string(),
            user_id: user_id.map(|u| u.to_string()),
        });
    }

    /// Leaves every channel and signs out; called once when the connection ends.
    pub fn cleanup(&mut self) {
        for (_, sub) in self.subscriptions.drain() {
            self.app.unsubscribe(self.conn.id, &sub.name);
        }
        if let Some(user) = self.user.take() {
            self.app.sign_out(self.conn.id, &user.id, &user.watchlist);
        }
        self.app.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads `user_id` (string or number) and `user_info` from presence `channel_data`.
fn parse_channel_data(data: &str, max_id: usize, max_info: usize) -> Result<PresenceJoin, String> {
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|e| format!("channel_data is not JSON: {e}"))?;
    let user_id = match v.get("user_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err("channel_data needs a user_id (string or number)".into()),
    };
    if user_id.chars().count() > max_id {
        return Err(format!("user_id is longer than {max_id} characters"));
    }
    let info = v
        .get("user_info")
        .map_or_else(|| "null".to_owned(), |i| i.to_string());
    if info.len() > max_info {
        return Err(format!("user_info is larger than {max_info} bytes"));
    }
    Ok(PresenceJoin {
        user_id: user_id.into(),
        user_info: info.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_accepts_numeric_ids_and_bounds_sizes() {
        let p =
            parse_channel_data(r#"{"user_id":10,"user_info":{"name":"x"}}"#, 128, 1024).unwrap();
        assert_eq!(&*p.user_id, "10");
        assert_eq!(&*p.user_info, r#"{"name":"x"}"#);
        assert!(parse_channel_data(r#"{"user_info":{}}"#, 128, 1024).is_err());
        assert!(parse_channel_data(r#"{"user_id":"aaaa"}"#, 3, 1024).is_err());
        let big = format!(r#"{{"user_id":"a","user_info":"{}"}}"#, "x".repeat(2000));
        assert!(parse_channel_data(&big, 128, 1024).is_err());
    }
}
