//! Server configuration: TOML types with documented defaults, environment overrides, and
//! validation. A file that does not parse or validate stops start-up; nothing falls back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration was refused. Every message names the file (or the environment).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value in {origin} for `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub adapter: AdapterConfig,
    pub cluster: ClusterConfig,
    pub webhooks: WebhookSettings,
    pub apps: Vec<AppConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            log: LogConfig::default(),
            adapter: AdapterConfig::default(),
            cluster: ClusterConfig::default(),
            webhooks: WebhookSettings::default(),
            apps: vec![AppConfig::default()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind. Default `127.0.0.1`.
    pub host: String,
    /// Port for WebSocket and HTTP API alike. Default 6001; 0 picks a free port.
    pub port: u16,
    /// Cap on open WebSocket connections across all apps; new ones get 4100. Default 100000.
    pub max_connections: usize,
    /// Seconds of silence after which clients should ping (sent in connection_established). Default 120.
    pub activity_timeout_secs: u64,
    /// Seconds the server waits for a pong after its own ping before closing with 4201. Default 30.
    pub pong_timeout_secs: u64,
    /// Largest WebSocket message accepted from a client, in bytes; larger closes with 1009. Default 65536.
    pub max_message_bytes: usize,
    /// Frames queued per connection before it counts as a slow consumer and is closed. Default 1024.
    pub outbound_queue: usize,
    /// Largest HTTP API request body, in bytes; larger gets 413. Default 1048576.
    pub max_request_bytes: usize,
    /// Seconds a shutdown waits for connections to close and webhooks to flush. Default 10.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6001,
            max_connections: 100_000,
            activity_timeout_secs: 120,
            pong_timeout_secs: 30,
            max_message_bytes: 64 * 1024,
            outbound_queue: 1024,
            max_request_bytes: 1024 * 1024,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `switchyard=debug`. Default `info`.
    pub level: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    /// Which adapter carries traffic between nodes: `local` (single node, no broker, the
    /// default) or the name of a WebAssembly component, loaded from `plugins_dir/<name>.wasm`.
    pub driver: String,
    /// Folder holding adapter components. Default `plugins`.
    pub plugins_dir: PathBuf,
    /// Where compiled components are cached. Default `<plugins_dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
    /// Broker endpoints the adapter may connect to, as `host:port`. Nothing else is reachable.
    pub allow: Vec<String>,
    /// PEM certificates of CAs to trust for the adapter's TLS connections, besides the
    /// Mozilla roots built in (for brokers behind a private CA). Optional.
    pub tls_ca_file: Option<PathBuf>,
    /// The adapter's own settings, handed to its `init` as JSON.
    pub config: serde_json::Value,
    pub limits: SandboxLimits,
    pub restart: RestartPolicy,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            driver: "local".into(),
            plugins_dir: PathBuf::from("plugins"),
            cache_dir: None,
            allow: Vec::new(),
            tls_ca_file: None,
            config: serde_json::Value::Object(Default::default()),
            limits: SandboxLimits::default(),
            restart: RestartPolicy::default(),
        }
    }
}

/// The sandbox around each adapter instance.
/// How nodes cooperate once an adapter joins them. Ignored with the `local` adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `broadcast` (one topic per app: every node receives every event, the default) or
    /// `interest` (one topic per channel, subscribed only while this node has subscribers).
    pub routing: Routing,
    /// Milliseconds between this node's heartbeats. Default 1000.
    pub heartbeat_interval_ms: u64,
    /// A node silent this long counts as dead: its presence members are removed. Default 3000.
    pub node_timeout_ms: u64,
    /// How long a cross-node query (channel lists and counts) waits for every node before it
    /// answers with what it has. Default 1000.
    pub query_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            routing: Routing::Broadcast,
            heartbeat_interval_ms: 1000,
            node_timeout_ms: 3000,
            query_timeout_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    Broadcast,
    Interest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Linear memory per instance, in bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// CPU time one guest call may take before it is interrupted, in milliseconds. Default 200.
    pub call_deadline_ms: u64,
    /// Open broker connections per instance. Default 16.
    pub max_sockets: usize,
    /// Live timers per instance. Default 256.
    pub max_timers: usize,
    /// Bytes the guest may hand the host in one call (a delivered payload, a send). Publish
    /// batches handed to the guest stay under it too, unless one message alone is larger.
    /// Default 1 MiB.
    pub max_call_bytes: usize,
    /// Unsent bytes queued on one broker connection before `send` refuses. Default 16 MiB.
    pub max_pending_output_bytes: usize,
    /// Publishes waiting for the instance (more are dropped and counted), and I/O events
    /// queued for it: each bounded by this. Default 8192.
    pub queue: usize,
    /// Publishes sent to the guest in one `publish-batch` call at most. Default 256.
    pub max_batch: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_deadline_ms: 200,
            max_sockets: 16,
            max_timers: 256,
            max_call_bytes: 1 << 20,
            max_pending_output_bytes: 16 << 20,
            queue: 8192,
            max_batch: 256,
        }
    }
}

/// How a failing adapter is restarted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Failures within `window_secs` after which the adapter is marked failed. Default 5.
    pub max_failures: usize,
    pub window_secs: u64,
    /// First restart delay in milliseconds, doubling up to `backoff_max_ms`. Default 100.
    pub backoff_initial_ms: u64,
    /// Default 5000.
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_secs: 60,
            backoff_initial_ms: 100,
            backoff_max_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Events collected into one request at most. Default 50.
    pub batch_max: usize,
    /// How long the sender waits to fill a batch, in milliseconds. Default 50.
    pub batch_window_ms: u64,
    /// Delay before channel_vacated / member_removed are sent; a re-join inside it cancels both. Default 3000.
    pub leave_delay_ms: u64,
    /// Give up retrying a failed delivery after this many seconds. Default 300.
    pub retry_for_secs: u64,
    /// Per-request timeout in milliseconds. Default 5000.
    pub timeout_ms: u64,
    /// Webhook events waiting to be sent before new ones are dropped (and counted). Default 10000.
    pub queue: usize,
    /// Batches being delivered or retried at once; beyond it new batches are dropped (and
    /// counted). Default 1000.
    pub max_in_flight: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            batch_max: 50,
            batch_window_ms: 50,
            leave_delay_ms: 3000,
            retry_for_secs: 300,
            timeout_ms: 5000,
            queue: 10_000,
            max_in_flight: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403). Default true.
    pub enabled: bool,
    /// Whether clients may send `client-` events. Default true.
    pub client_events: bool,
    /// Whether `pusher:signin` is accepted. Default true.
    pub user_authentication: bool,
    /// Close connections that neither sign in nor join a private channel within this many
    /// seconds (4009). 0 turns it off. Default 0.
    pub authorized_connections_timeout_secs: u64,
    /// Broadcast `pusher_internal:subscription_count` on non-presence channels. Default false.
    pub subscription_count: bool,
    /// Seconds a cache channel keeps its last event. Default 1800.
    pub cache_ttl_secs: u64,
    /// Maximum open connections for this app (4004 beyond). 0 means no per-app cap. Default 0.
    pub max_connections: usize,
    pub limits: Limits,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            id: "app-id".into(),
            key: "app-key".into(),
            secret: "app-secret".into(),
            enabled: true,
            client_events: true,
            user_authentication: true,
            authorized_connections_timeout_secs: 0,
            subscription_count: false,
            cache_ttl_secs: 1800,
            max_connections: 0,
            limits: Limits::default(),
            webhooks: Vec::new(),
        }
    }
}

/// Per-app limits; defaults are Pusher's (summary §14).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of `data` in one event (HTTP API and client events). Default 10240.
    pub max_event_payload_bytes: usize,
    /// Channels named in one publish. Default 100.
    pub max_channels_per_event: usize,
    /// Events in one batch_events call. Default 10.
    pub max_batch_events: usize,
    /// Client events per second per connection. Default 10.
    pub client_events_per_sec: u32,
    /// Distinct users in one presence channel. Default 100.
    pub max_presence_members: usize,
    /// Bytes of a presence member's `user_info`. Default 1024.
    pub max_presence_user_info_bytes: usize,
    /// Characters in a presence `user_id`. Default 128.
    pub max_user_id_length: usize,
    /// Characters in a channel name. Default 200 (the SDKs' limit; the docs say 164).
    pub max_channel_name_length: usize,
    /// Characters in an event name. Default 200.
    pub max_event_name_length: usize,
    /// User ids on a signin watchlist. Default 100.
    pub max_watchlist: usize,
    /// Channels one connection may join at once; beyond it subscribes get `LimitReached`. Default 1000.
    pub max_subscriptions_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_payload_bytes: 10 * 1024,
            max_channels_per_event: 100,
            max_batch_events: 10,
            client_events_per_sec: 10,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            max_user_id_length: 128,
            max_channel_name_length: 200,
            max_event_name_length: 200,
            max_watchlist: 100,
            max_subscriptions_per_connection: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// Which events go to this URL; empty means all of them.
    #[serde(default)]
    pub event_types: Vec<WebhookEventType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventType {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    ClientEvent,
    CacheMiss,
    SubscriptionCount,
}

impl Config {
    /// Loads `path` (or the defaults when `None`), then applies environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        cfg.apply_env(std::env::vars())?;
        let origin = path.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        cfg.validate(&origin)?;
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    /// Parses TOML text; unknown keys are errors naming the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Environment overrides for the common keys. `SWITCHYARD_APP_*` apply to the first app.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SWITCHYARD_") else {
                continue;
            };
            let invalid = |message: String| ConfigError::Invalid {
                origin: "the environment".into(),
                key: name.clone(),
                message,
            };
            let num = |v: &str| v.parse::<u64>().map_err(|e| invalid(e.to_string()));
            match key {
                "HOST" => self.server.host = value,
                "PORT" => {
                    self.server.port = value
                        .parse()
                        .map_err(|e: std::num::ParseIntError| invalid(e.to_string()))?
                }
                "MAX_CONNECTIONS" => self.server.max_connections = num(&value)? as usize,
                "ACTIVITY_TIMEOUT" => self.server.activity_timeout_secs = num(&value)?,
                "LOG_LEVEL" => self.log.level = value,
                "LOG_FORMAT" => {
                    self.log.format = match value.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        other => {
                            return Err(invalid(format!("expected text or json, got {other:?}")))
                        }
                    }
                }
                "ADAPTER" => self.adapter.driver = value,
                "CLUSTER_ROUTING" => {
                    self.cluster.routing = match value.as_str() {
                        "broadcast" => Routing::Broadcast,
                        "interest" => Routing::Interest,
                        other => {
                            return Err(invalid(format!(
                                "expected broadcast or interest, got {other:?}"
                            )))
                        }
                    }
                }
                "APP_ID" | "APP_KEY" | "APP_SECRET" => {
                    let app = self
                        .apps
                        .first_mut()
                        .ok_or_else(|| invalid("no app is configured to override".into()))?;
                    match key {
                        "APP_ID" => app.id = value,
                        "APP_KEY" => app.key = value,
                        _ => app.secret = value,
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks values serde cannot: non-empty credentials, unique ids and keys, positive limits.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            origin: origin.into(),
            key,
            message: message.into(),
        };
        if self.apps.is_empty() {
            return Err(invalid("apps".into(), "at least one app is required"));
        }
        let positive = [
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.activity_timeout_secs",
                self.server.activity_timeout_secs,
            ),
            ("server.pong_timeout_secs", self.server.pong_timeout_secs),
            (
                "server.max_message_bytes",
                self.server.max_message_bytes as u64,
            ),
            ("server.outbound_queue", self.server.outbound_queue as u64),
            (
                "server.max_request_bytes",
                self.server.max_request_bytes as u64,
            ),
            ("webhooks.batch_max", self.webhooks.batch_max as u64),
            ("webhooks.queue", self.webhooks.queue as u64),
            ("webhooks.max_in_flight", self.webhooks.max_in_flight as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key.into(), "must be greater than 0"));
            }
        }
        if self.server.host.parse::<std::net::IpAddr>().is_err() && self.server.host != "localhost"
        {
            return Err(invalid(
                "server.host".into(),
                "must be an IP address or localhost",
            ));
        }
        let a = &self.adapter;
        if a.driver.is_empty()
            || !a
                .driver
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(invalid(
                "adapter.driver".into(),
                "must be \"local\" or a plugin name of letters, digits, '-' and '_'",
            ));
        }
        for (i, ep) in a.allow.iter().enumerate() {
            let ok = ep
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid(format!("adapter.allow[{i}]"), "must be host:port"));
            }
        }
        if let Some(path) = &a.tls_ca_file {
            // Built as the adapter will build it, so a file that loads but cannot serve as a
            // root is refused here too.
            if let Err(why) = crate::plugin::tls::connector(Some(path)) {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    key: "adapter.tls_ca_file".into(),
                    message: why,
                });
            }
        }
        let l = &a.limits;
        let sandbox = [
            ("memory_bytes", l.memory_bytes as u64),
            ("call_deadline_ms", l.call_deadline_ms),
            ("max_call_bytes", l.max_call_bytes as u64),
            ("queue", l.queue as u64),
            ("max_batch", l.max_batch as u64),
        ];
        for (key, v) in sandbox {
            if v == 0 {
                return Err(invalid(
                    format!("adapter.limits.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        let c = &self.cluster;
        for (key, v) in [
            ("heartbeat_interval_ms", c.heartbeat_interval_ms),
            ("node_timeout_ms", c.node_timeout_ms),
            ("query_timeout_ms", c.query_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(format!("cluster.{key}"), "must be greater than 0"));
            }
        }
        if c.node_timeout_ms <= c.heartbeat_interval_ms {
            return Err(invalid(
                "cluster.node_timeout_ms".into(),
                "must be longer than cluster.heartbeat_interval_ms",
            ));
        }
        if a.restart.max_failures == 0 {
            return Err(invalid(
                "adapter.restart.max_failures".into(),
                "must be greater than 0",
            ));
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let k = |field: &str| format!("apps[{i}].{field}");
            for (field, v) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
                if v.is_empty() {
                    return Err(invalid(k(field), "must not be empty"));
                }
            }
            if app.id.contains('/') || app.key.contains('/') {
                return Err(invalid(k("id"), "id and key must not contain '/'"));
            }
            if !ids.insert(&app.id) {
                return Err(invalid(k("id"), "duplicate app id"));
            }
            if !keys.insert(&app.key) {
                return Err(invalid(k("key"), "duplicate app key"));
            }
            let l = &app.limits;
            let limits = [
                ("max_event_payload_bytes", l.max_event_payload_bytes),
                ("max_channels_per_event", l.max_channels_per_event),
                ("max_batch_events", l.max_batch_events),
                ("client_events_per_sec", l.client_events_per_sec as usize),
                ("max_presence_members", l.max_presence_members),
                (
                    "max_presence_user_info_bytes",
                    l.max_presence_user_info_bytes,
                ),
                ("max_user_id_length", l.max_user_id_length),
                ("max_channel_name_length", l.max_channel_name_length),
                ("max_event_name_length", l.max_event_name_length),
                (
                    "max_subscriptions_per_connection",
                    l.max_subscriptions_per_connection,
                ),
            ];
            for (field, v) in limits {
                if v == 0 {
                    return Err(invalid(
                        k(&format!("limits.{field}")),
                        "must be greater than 0",
                    ));
                }
            }
            for (j, hook) in app.webhooks.iter().enumerate() {
                match url::Url::parse(&hook.url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(invalid(
                            k(&format!("webhooks[{j}].url")),
                            "must be an absolute http or https URL",
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_documented_app() {
        let cfg = Config::default();
        cfg.validate("defaults").unwrap();
        let app = &cfg.apps[0];
        assert_eq!(
            (app.id.as_str(), app.key.as_str(), app.secret.as_str()),
            ("app-id", "app-key", "app-secret")
        );
        assert!(app.client_events && app.user_authentication);
        assert_eq!(cfg.server.port, 6001);
        assert_eq!(app.limits.max_event_payload_bytes, 10240);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("[server]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let err =
            Config::from_toml("[[apps]]\nid='a'\nkey='b'\nsecret='c'\n[apps.limits]\nmax_foo=1\n")
                .unwrap_err();
        assert!(err.contains("max_foo"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused() {
        let err = Config::from_toml("[server]\nport = 'x'\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
        let cfg = Config::from_toml("[[apps]]\nid='a'\nkey='k'\nsecret=''\n").unwrap();
        let err = cfg.validate("f.toml").unwrap_err().to_string();
        assert!(
            err.contains("apps[0].secret") && err.contains("f.toml"),
            "{err}"
        );
        let cfg = Config::from_toml(
            "[[apps]]\nid='a'\nkey='k'\nsecret='s'\n[[apps]]\nid='a'\nkey='k2'\nsecret='s'\n",
        )
        .unwrap();
        assert!(cfg
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("duplicate app id"));
        let cfg = Config::from_toml(
            "[[apps]]\nid='a'\nkey='k'\nsecret='s'\n[[apps.webhooks]]\nurl='nope'\n",
        )
        .unwrap();
        assert!(cfg
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("webhooks[0].url"));
        let cfg = Config::from_toml(
            "[adapter]\ntls_ca_file = '/nonexistent/ca.pem'\n[[apps]]\nid='a'\nkey='k'\nsecret='s'\n",
        )
        .unwrap();
        let err = cfg.validate("f").unwrap_err().to_string();
        assert!(
            err.contains("adapter.tls_ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_apply_and_bad_values_fail() {
        let mut cfg = Config::default();
        cfg.apply_env(
            [
                ("SWITCHYARD_PORT", "7000"),
                ("SWITCHYARD_APP_KEY", "k2"),
                ("OTHER", "x"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string())),
        )
        .unwrap();
        assert_eq!(cfg.server.port, 7000);
        assert_eq!(cfg.apps[0].key, "k2");
        let err = cfg
            .apply_env(std::iter::once((
                "SWITCHYARD_PORT".to_string(),
                "high".to_string(),
            )))
            .unwrap_err();
        assert!(err.to_string().contains("SWITCHYARD_PORT"));
    }
}
