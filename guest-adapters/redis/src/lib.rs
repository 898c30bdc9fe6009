//! The Redis adapter: Redis pub/sub over two host-owned connections (a subscribed connection
//! cannot publish). Topics map to Redis channels under a prefix. The protocol lives in
//! [`proto`] (sans-IO, tested natively); this file is the glue to the host.

pub mod proto;

use std::collections::BTreeSet;

use serde::Deserialize;
use switchyard_adapter_sdk::{
    export_adapter, host, Adapter, Batch, Error, Health, LogLevel, MessageRef,
};

use proto::{Decoder, Item, PublishEncoder, Value};

/// The adapter's config section (`[adapter.config]` in the host's TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Connect with TLS (the host does the handshake and checks the certificate against
    /// `host`).
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Prepended to every topic to form the Redis channel name.
    pub prefix: String,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Bytes of commands handed to the host per `send`; a batch goes out in as many sends as
    /// it needs. Keep it under the host's `adapter.limits.max_call_bytes` (1 MiB by default),
    /// which refuses a larger send whole.
    pub max_send_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6379,
            tls: false,
            username: None,
            password: None,
            prefix: "switchyard:".into(),
            reconnect_initial_ms: 100,
            reconnect_max_ms: 1000,
            max_send_bytes: 64 * 1024,
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// `AUTH [user] password`, when a password is set.
    pub fn auth_command(&self, out: &mut Vec<u8>) {
        if let Some(pw) = &self.password {
            match &self.username {
                Some(u) => proto::encode_command(out, &[b"AUTH", u.as_bytes(), pw.as_bytes()]),
                None => proto::encode_command(out, &[b"AUTH", pw.as_bytes()]),
            }
        }
    }
}

#[derive(Default)]
struct Link {
    conn: Option<u32>,
    up: bool,
    decoder: Decoder,
}

pub struct Redis {
    cfg: Config,
    publisher: Link,
    subscriber: Link,
    topics: BTreeSet<String>,
    backoff_ms: u64,
    reconnect_timer: Option<u32>,
    /// Received messages on their way to the host; the buffer is kept between reads.
    inbox: Batch,
    /// The topic of the last message received, known to be UTF-8.
    last_topic: String,
    encoder: PublishEncoder,
    /// A batch's commands, before they go out in one send; the buffer is kept between batches.
    outbox: Vec<u8>,
}

fn log(level: LogLevel, msg: &str) {
    host::log(level, msg);
}

/// Bytes (packed) handed to the host per `deliver_batch`, unless one message alone is larger.
const MAX_DELIVER_BATCH: usize = 256 * 1024;

fn deliver(batch: &mut Batch) {
    if let Err(e) = batch.deliver() {
        log(LogLevel::Warn, &format!("delivery refused: {e:?}"));
    }
}

impl Redis {
    fn channel(&self, topic: &str) -> Vec<u8> {
        let mut c = self.cfg.prefix.as_bytes().to_vec();
        c.extend_from_slice(topic.as_bytes());
        c
    }

    fn connect(&mut self, which: Which) {
        let result = host::connect(&self.cfg.host, self.cfg.port, self.cfg.tls);
        let link = self.link(which);
        match result {
            Ok(c) => {
                link.conn = Some(c);
                link.up = false;
                link.decoder.clear();
            }
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("cannot open a Redis connection: {e:?}"),
                );
                self.schedule_reconnect();
            }
        }
    }

    fn link(&mut self, which: Which) -> &mut Link {
        match which {
            Which::Publisher => &mut self.publisher,
            Which::Subscriber => &mut self.subscriber,
        }
    }

    fn which(&self, conn: u32) -> Option<Which> {
        if self.publisher.conn == Some(conn) {
            Some(Which::Publisher)
        } else if self.subscriber.conn == Some(conn) {
            Some(Which::Subscriber)
        } else {
            None
        }
    }

    fn schedule_reconnect(&mut self) {
        if self.reconnect_timer.is_some() {
            return;
        }
        if let Ok(t) = host::set_timer(self.backoff_ms) {
            self.reconnect_timer = Some(t);
        }
        self.backoff_ms = (self.backoff_ms * 2).min(self.cfg.reconnect_max_ms);
    }

    fn send(&self, conn: Option<u32>, bytes: &[u8]) -> Result<(), Error> {
        let conn = conn.ok_or_else(|| Error::Unavailable("not connected to Redis".into()))?;
        host::send(conn, bytes).map_err(|e| Error::Unavailable(format!("{e:?}")))
    }

    fn subscribe_all(&self) {
        if self.topics.is_empty() {
            return;
        }
        let channels: Vec<Vec<u8>> = self.topics.iter().map(|t| self.channel(t)).collect();
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(channels.iter().map(Vec::as_slice));
        let mut out = Vec::new();
        proto::encode_command(&mut out, &args);
        let _ = self.send(self.subscriber.conn, &out);
    }

    fn drop_link(&mut self, which: Which, why: &str) {
        let link = self.link(which);
        if let Some(c) = link.conn.take() {
            host::close(c);
        }
        link.up = false;
        link.decoder.clear();
        log(
            LogLevel::Warn,
            &format!("Redis {which:?} connection lost: {why}"),
        );
        self.schedule_reconnect();
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Publisher,
    Subscriber,
}

impl Adapter for Redis {
    fn init(config: &str, _snapshot: Option<Vec<u8>>) -> Result<Self, Error> {
        let cfg = Config::parse(config).map_err(Error::InvalidConfig)?;
        let mut r = Self {
            backoff_ms: cfg.reconnect_initial_ms.max(1),
            encoder: PublishEncoder::new(cfg.prefix.as_bytes()),
            cfg,
            publisher: Link::default(),
            subscriber: Link::default(),
            topics: BTreeSet::new(),
            reconnect_timer: None,
            inbox: Batch::new(),
            last_topic: String::new(),
            outbox: Vec::new(),
        };
        r.connect(Which::Publisher);
        r.connect(Which::Subscriber);
        Ok(r)
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        if !self.publisher.up {
            return Err(Error::Unavailable("Redis publisher not connected".into()));
        }
        let mut out = Vec::with_capacity(payload.len() + topic.len() + 48);
        let prefix = self.cfg.prefix.as_bytes();
        proto::encode_publish(&mut out, prefix, topic.as_bytes(), payload);
        self.send(self.publisher.conn, &out)
    }

    /// Pipelines the batch, in sends of at most `max_send_bytes` (plus one message): its
    /// commands are larger than the batch the host handed over, and a send over the host's
    /// per-call bound would be refused whole.
    fn publish_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), Error> {
        if !self.publisher.up {
            return Err(Error::Unavailable("Redis publisher not connected".into()));
        }
        let mut out = std::mem::take(&mut self.outbox);
        out.clear();
        let mut result = Ok(());
        for m in messages {
            self.encoder.encode(&mut out, m.topic.as_bytes(), m.payload);
            if out.len() >= self.cfg.max_send_bytes {
                result = self.send(self.publisher.conn, &out);
                out.clear();
                if result.is_err() {
                    break;
                }
            }
        }
        if result.is_ok() && !out.is_empty() {
            result = self.send(self.publisher.conn, &out);
        }
        self.outbox = out;
        result
    }

    fn subscribe(&mut self, topic: &str) -> Result<(), Error> {
        if self.topics.insert(topic.to_owned()) && self.subscriber.up {
            let mut out = Vec::new();
            proto::encode_command(&mut out, &[b"SUBSCRIBE", &self.channel(topic)]);
            self.send(self.subscriber.conn, &out)?;
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: &str) -> Result<(), Error> {
        if self.topics.remove(topic) && self.subscriber.up {
            let mut out = Vec::new();
            proto::encode_command(&mut out, &[b"UNSUBSCRIBE", &self.channel(topic)]);
            self.send(self.subscriber.conn, &out)?;
        }
        Ok(())
    }

    fn on_connected(&mut self, conn: u32) {
        let Some(which) = self.which(conn) else {
            return;
        };
        let mut out = Vec::new();
        self.cfg.auth_command(&mut out);
        if !out.is_empty() {
            let _ = self.send(Some(conn), &out);
        }
        self.link(which).up = true;
        self.backoff_ms = self.cfg.reconnect_initial_ms.max(1);
        if let Which::Subscriber = which {
            self.subscribe_all();
        }
        log(LogLevel::Info, &format!("Redis {which:?} connected"));
    }

    fn on_data(&mut self, conn: u32, data: Vec<u8>) {
        let Some(which) = self.which(conn) else {
            return;
        };
        let prefix = self.cfg.prefix.as_bytes();
        let mut failed = None;
        let mut not_ours = 0;
        let link = match which {
            Which::Publisher => &mut self.publisher,
            Which::Subscriber => &mut self.subscriber,
        };
        // Everything this read completed goes to the host in as few calls as possible (a call
        // across the sandbox costs more than a message), packed as it is decoded.
        let inbox = &mut self.inbox;
        let topic = &mut self.last_topic;
        let result = link.decoder.decode(&data, |item| match item {
            Item::Message { channel, payload } => {
                let Some(name) = proto::strip_prefix(channel, prefix) else {
                    return;
                };
                // Our topics are UTF-8; anything else on our prefix is not ours. Runs of one
                // topic are checked once.
                if !proto::same_bytes(name, topic.as_bytes()) {
                    let Ok(name) = std::str::from_utf8(name) else {
                        not_ours += 1;
                        return;
                    };
                    topic.clear();
                    topic.push_str(name);
                }
                // Chunks keep each host call's buffer moderate; the host bounds each message,
                // not the batch, so chunking is about size, never about loss.
                if inbox.bytes() + 8 + topic.len() + payload.len() > MAX_DELIVER_BATCH {
                    deliver(inbox);
                }
                inbox.push(topic, payload);
            }
            Item::Value(Value::Error(e)) => failed = Some(e),
            Item::Value(_) => {}
        });
        deliver(inbox);
        if let Some(e) = failed {
            log(
                LogLevel::Error,
                &format!("Redis replied with an error: {e}"),
            );
        }
        if not_ours > 0 {
            log(
                LogLevel::Warn,
                &format!("{not_ours} messages on a channel name that is not UTF-8 were dropped"),
            );
        }
        if let Err(e) = result {
            self.drop_link(which, &format!("protocol error: {e:?}"));
        }
    }

    fn on_closed(&mut self, conn: u32, reason: String) {
        let Some(which) = self.which(conn) else {
            return;
        };
        let link = self.link(which);
        link.conn = None;
        link.up = false;
        link.decoder.clear();
        log(
            LogLevel::Warn,
            &format!("Redis {which:?} connection closed: {reason}"),
        );
        self.schedule_reconnect();
    }

    fn on_timer(&mut self, timer: u32) {
        if self.reconnect_timer != Some(timer) {
            return;
        }
        self.reconnect_timer = None;
        if self.publisher.conn.is_none() {
            self.connect(Which::Publisher);
        }
        if self.subscriber.conn.is_none() {
            self.connect(Which::Subscriber);
        }
    }

    fn health(&self) -> Health {
        match (self.publisher.up, self.subscriber.up) {
            (true, true) => Health::Ready,
            (false, false) if self.reconnect_timer.is_none() => Health::Starting,
            _ => Health::Degraded("reconnecting to Redis".into()),
        }
    }

    fn shutdown(&mut self) {
        for c in [self.publisher.conn.take(), self.subscriber.conn.take()]
            .into_iter()
            .flatten()
        {
            host::close(c);
        }
    }
}

export_adapter!(Redis);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_adapter_sdk::HostError;

    #[test]
    fn config_defaults_and_auth() {
        let c = Config::parse("{}").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 6379));
        let c = Config::parse(r#"{"username":"u","password":"p"}"#).unwrap();
        let mut out = Vec::new();
        c.auth_command(&mut out);
        assert_eq!(out, b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n");
        assert!(
            Config::parse(r#"{"hots":"x"}"#).is_err(),
            "unknown keys are refused"
        );
    }

    /// A host that records sends and refuses one over `limit`, as the real one does.
    struct Recorder {
        sends: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>,
        limit: usize,
        next: u32,
    }

    impl switchyard_adapter_sdk::native::Host for Recorder {
        fn connect(&mut self, _: &str, _: u16, _: bool) -> Result<u32, HostError> {
            self.next += 1;
            Ok(self.next)
        }
        fn send(&mut self, _: u32, bytes: &[u8]) -> Result<(), HostError> {
            if bytes.len() > self.limit {
                return Err(HostError::Limit("too big".into()));
            }
            self.sends.borrow_mut().push(bytes.to_vec());
            Ok(())
        }
        fn close(&mut self, _: u32) {}
        fn set_timer(&mut self, _: u64) -> Result<u32, HostError> {
            Ok(1)
        }
        fn cancel_timer(&mut self, _: u32) {}
        fn deliver(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn deliver_packed(&mut self, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn log(&mut self, _: LogLevel, _: &str) {}
        fn node_id(&mut self) -> String {
            "n".into()
        }
        fn now_ms(&mut self) -> u64 {
            0
        }
    }

    #[test]
    fn a_batch_larger_than_one_send_goes_out_in_several() {
        let sends = std::rc::Rc::default();
        switchyard_adapter_sdk::native::install(Box::new(Recorder {
            sends: std::rc::Rc::clone(&sends),
            limit: 4096,
            next: 0,
        }));
        let mut r = Redis::init(r#"{"max_send_bytes": 2048}"#, None).unwrap();
        let publisher = r.publisher.conn.unwrap();
        r.on_connected(publisher);
        // 100 messages: 20 KB packed, more as commands; every send under the host's bound.
        let payload = [b'x'; 200];
        let batch: Vec<MessageRef<'_>> = (0..100)
            .map(|_| MessageRef {
                topic: "t",
                payload: &payload,
            })
            .collect();
        r.publish_batch(&batch).unwrap();
        switchyard_adapter_sdk::native::uninstall();
        let sends = sends.borrow();
        assert!(sends.len() > 1);
        assert!(sends.iter().all(|s| s.len() <= 4096));
        let mut want = Vec::new();
        for m in &batch {
            proto::encode_publish(&mut want, b"switchyard:", b"t", m.payload);
        }
        assert_eq!(sends.concat(), want);
    }
}
