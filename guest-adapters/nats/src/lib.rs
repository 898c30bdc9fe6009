//! The NATS adapter: NATS core pub/sub over one host-owned connection (NATS multiplexes
//! publishing and subscriptions, and echoes our own publishes back to us). Each topic is one
//! subject under a prefix. The protocol lives in [`proto`] (sans-IO, tested natively); this
//! file is the connection state machine and the glue to the host.

pub mod proto;

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use switchyard_adapter_sdk::{
    export_adapter, host, Adapter, Error, Health, HostError, LogLevel, MessageRef,
};

use proto::{Auth, Op, Parser};

/// The adapter's config section (`[adapter.config]` in the host's TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// `auth_token` in CONNECT; exclusive with `user`/`password`.
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Subject prefix: topic `T` is the subject `<prefix>.<T escaped into one token>`.
    pub prefix: String,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// How often the adapter PINGs a quiet-or-not connection.
    pub ping_interval_ms: u64,
    /// How long the server may take to answer a PING (or the connect handshake) before the
    /// connection counts as dead and is replaced.
    pub ping_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 4222,
            token: None,
            user: None,
            password: None,
            prefix: "switchyard".into(),
            reconnect_initial_ms: 100,
            reconnect_max_ms: 1000,
            ping_interval_ms: 5000,
            ping_timeout_ms: 3000,
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Self, String> {
        let cfg: Self = if json.trim().is_empty() {
            Self::default()
        } else {
            serde_json::from_str(json).map_err(|e| e.to_string())?
        };
        proto::check_prefix(&cfg.prefix)?;
        if cfg.token.is_some() && (cfg.user.is_some() || cfg.password.is_some()) {
            return Err("set either token or user/password, not both".into());
        }
        if cfg.user.is_some() != cfg.password.is_some() {
            return Err("user and password go together".into());
        }
        if cfg.ping_interval_ms == 0 || cfg.ping_timeout_ms == 0 {
            return Err("ping_interval_ms and ping_timeout_ms must be above 0".into());
        }
        Ok(cfg)
    }

    fn auth(&self) -> Auth<'_> {
        Auth {
            token: self.token.as_deref(),
            user: self.user.as_deref(),
            pass: self.password.as_deref(),
        }
    }
}

/// The host functions the adapter uses. The component uses [`SdkIo`]; the unit tests below
/// use a recording fake, so the state machine is tested natively like the protocol.
pub trait Io {
    fn connect(&mut self, host: &str, port: u16) -> Result<u32, HostError>;
    fn send(&mut self, conn: u32, bytes: &[u8]) -> Result<(), HostError>;
    fn close(&mut self, conn: u32);
    fn set_timer(&mut self, after_ms: u64) -> Result<u32, HostError>;
    fn cancel_timer(&mut self, timer: u32);
    fn deliver_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), HostError>;
    fn log(&mut self, level: LogLevel, message: &str);
    fn node_id(&mut self) -> String;
}

/// The real host, through the SDK.
#[derive(Default)]
pub struct SdkIo;

impl Io for SdkIo {
    fn connect(&mut self, host: &str, port: u16) -> Result<u32, HostError> {
        host::connect(host, port, false)
    }
    fn send(&mut self, conn: u32, bytes: &[u8]) -> Result<(), HostError> {
        host::send(conn, bytes)
    }
    fn close(&mut self, conn: u32) {
        host::close(conn);
    }
    fn set_timer(&mut self, after_ms: u64) -> Result<u32, HostError> {
        host::set_timer(after_ms)
    }
    fn cancel_timer(&mut self, timer: u32) {
        host::cancel_timer(timer);
    }
    fn deliver_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), HostError> {
        host::deliver_batch(messages)
    }
    fn log(&mut self, level: LogLevel, message: &str) {
        host::log(level, message);
    }
    fn node_id(&mut self) -> String {
        host::node_id()
    }
}

/// Bytes handed to the host per `send` at most. The host refuses a single call over its
/// `max_call_bytes` (1 MiB by default), so big batches and the re-subscribe burst after a
/// reconnect go out in pieces; order on the connection is kept.
const SEND_CHUNK: usize = 256 << 10;

/// Where the one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; a reconnect timer is normally pending.
    Down,
    /// `connect` asked for; waiting for `on_connected`.
    Opening,
    /// TCP is up; waiting for the server's INFO.
    AwaitInfo,
    /// CONNECT, a SUB per topic and a PING are sent. The server answers in order, so its PONG
    /// says the credentials were accepted and every SUB is in place.
    AwaitPong,
    Ready,
}

pub struct Nats<H: Io = SdkIo> {
    io: H,
    cfg: Config,
    /// Client name in CONNECT, so the broker's monitoring shows which node a connection is.
    name: String,
    conn: Option<u32>,
    phase: Phase,
    parser: Parser,
    /// From the server's INFO; larger publishes are dropped here, since the server would
    /// answer one with `-ERR` and close the connection.
    max_payload: usize,
    server_version: String,
    /// topic -> sid and back. Sids are never reused, so a MSG still in flight for a topic
    /// unsubscribed (and maybe subscribed again) cannot reach the host under the wrong sid.
    sids: BTreeMap<String, u64>,
    topics: HashMap<u64, String>,
    next_sid: u64,
    backoff_ms: u64,
    reconnect_timer: Option<u32>,
    /// Next keepalive PING, while ready.
    ping_timer: Option<u32>,
    /// The handshake or an outstanding PING must be answered before this fires.
    deadline_timer: Option<u32>,
    been_ready: bool,
    /// Why the last connection ended or failed, for `health`.
    last_failure: Option<String>,
    /// Messages decoded from the current read, handed to the host in one call at its end.
    inbox: Vec<(String, Vec<u8>)>,
    inbox_bytes: usize,
}

/// Bytes of received messages (packed) handed to the host per `deliver_batch`, unless one
/// message alone is larger.
const DELIVER_CHUNK: usize = 256 << 10;

impl<H: Io> Nats<H> {
    /// Builds the adapter and opens the connection.
    pub fn start(cfg: Config, mut io: H) -> Result<Self, Error> {
        let name = format!("switchyard-{}", io.node_id());
        let mut n = Self {
            io,
            name,
            backoff_ms: cfg.reconnect_initial_ms.max(1),
            cfg,
            conn: None,
            phase: Phase::Down,
            parser: Parser::default(),
            max_payload: proto::DEFAULT_MAX_PAYLOAD,
            server_version: String::new(),
            sids: BTreeMap::new(),
            topics: HashMap::new(),
            next_sid: 1,
            reconnect_timer: None,
            ping_timer: None,
            deadline_timer: None,
            been_ready: false,
            last_failure: None,
            inbox: Vec::new(),
            inbox_bytes: 0,
        };
        match n.connect() {
            Ok(()) => Ok(n),
            // The allow-list does not change while the host runs: retrying cannot help, and
            // `invalid-config` shows the reason instead of a silent reconnect loop.
            Err(HostError::NotAllowed(why)) => Err(Error::InvalidConfig(format!(
                "cannot connect to NATS: {why}"
            ))),
            Err(e) => {
                n.failed(format!("cannot open a connection: {e:?}"));
                Ok(n)
            }
        }
    }

    fn log(&mut self, level: LogLevel, msg: &str) {
        self.io.log(level, msg);
    }

    fn connect(&mut self) -> Result<(), HostError> {
        let c = self.io.connect(&self.cfg.host, self.cfg.port)?;
        self.conn = Some(c);
        self.phase = Phase::Opening;
        self.parser.clear();
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        let conn = self.conn.ok_or(HostError::UnknownHandle)?;
        self.io.send(conn, bytes)
    }

    /// Sends `out` once it has grown to a chunk, keeping calls under the host's size limit.
    fn send_if_full(&mut self, out: &mut Vec<u8>) -> Result<(), HostError> {
        if out.len() >= SEND_CHUNK {
            self.send(out)?;
            out.clear();
        }
        Ok(())
    }

    fn set_timer(&mut self, after_ms: u64) -> Option<u32> {
        match self.io.set_timer(after_ms) {
            Ok(t) => Some(t),
            Err(e) => {
                self.log(LogLevel::Error, &format!("cannot set a timer: {e:?}"));
                None
            }
        }
    }

    fn cancel_timers(&mut self) {
        for t in [self.ping_timer.take(), self.deadline_timer.take()]
            .into_iter()
            .flatten()
        {
            self.io.cancel_timer(t);
        }
    }

    fn arm_deadline(&mut self) {
        if let Some(t) = self.deadline_timer.take() {
            self.io.cancel_timer(t);
        }
        self.deadline_timer = self.set_timer(self.cfg.ping_timeout_ms);
    }

    /// A connection failed to open or was lost: note why and try again after the backoff.
    fn failed(&mut self, why: String) {
        self.log(LogLevel::Warn, &format!("NATS connection lost: {why}"));
        self.last_failure = Some(why);
        self.schedule_reconnect();
    }

    /// Ends the current connection (if any) and schedules a new one.
    fn lost(&mut self, why: String) {
        if let Some(c) = self.conn.take() {
            self.io.close(c);
        }
        self.phase = Phase::Down;
        self.parser.clear();
        self.cancel_timers();
        self.failed(why);
    }

    fn schedule_reconnect(&mut self) {
        if self.reconnect_timer.is_some() {
            return;
        }
        self.reconnect_timer = self.set_timer(self.backoff_ms);
        self.backoff_ms = self
            .backoff_ms
            .saturating_mul(2)
            .min(self.cfg.reconnect_max_ms.max(1));
    }

    fn subject(&self, topic: &str) -> Result<String, Error> {
        if topic.is_empty() {
            return Err(Error::Other("empty topic".into()));
        }
        let s = proto::subject(&self.cfg.prefix, topic);
        if s.len() > proto::MAX_SUBJECT {
            return Err(Error::Other(format!(
                "topic {:?}... makes a {}-byte subject; NATS takes at most {}",
                topic.chars().take(40).collect::<String>(),
                s.len(),
                proto::MAX_SUBJECT
            )));
        }
        Ok(s)
    }

    fn check_ready(&self) -> Result<(), Error> {
        if self.phase == Phase::Ready {
            Ok(())
        } else {
            Err(Error::Unavailable("not connected to NATS".into()))
        }
    }

    /// Logs and describes a publish over the server's `max_payload`.
    fn too_large(&mut self, topic: &str, len: usize) -> Error {
        let msg = format!(
            "dropped a {len}-byte publish on {topic:?}: the NATS server's max_payload is {}",
            self.max_payload
        );
        self.log(LogLevel::Error, &msg);
        Error::Other(msg)
    }

    /// Whether SUB and UNSUB can go out now; before that, the handshake sends every SUB.
    fn subscribed_on_wire(&self) -> bool {
        matches!(self.phase, Phase::AwaitPong | Phase::Ready)
    }

    /// INFO arrived on a fresh connection: authenticate, re-subscribe every topic, PING.
    fn handshake(&mut self) -> Result<(), HostError> {
        let mut out = Vec::new();
        proto::encode_connect(&mut out, Some(&self.name), self.cfg.auth());
        let subs: Vec<(String, u64)> = self
            .sids
            .iter()
            .map(|(t, sid)| (proto::subject(&self.cfg.prefix, t), *sid))
            .collect();
        for (subject, sid) in subs {
            proto::encode_sub(&mut out, &subject, sid);
            self.send_if_full(&mut out)?;
        }
        out.extend_from_slice(proto::PING);
        self.send(&out)?;
        self.phase = Phase::AwaitPong;
        self.arm_deadline();
        Ok(())
    }

    fn ready(&mut self) {
        self.phase = Phase::Ready;
        self.been_ready = true;
        self.last_failure = None;
        self.backoff_ms = self.cfg.reconnect_initial_ms.max(1);
        if let Some(t) = self.deadline_timer.take() {
            self.io.cancel_timer(t);
        }
        self.ping_timer = self.set_timer(self.cfg.ping_interval_ms);
        let msg = format!(
            "connected to NATS {} at {}:{}, {} topics subscribed",
            self.server_version,
            self.cfg.host,
            self.cfg.port,
            self.sids.len()
        );
        self.log(LogLevel::Info, &msg);
    }

    /// Hands what the current read decoded to the host, in one call across the sandbox.
    fn flush_inbox(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let batch: Vec<MessageRef<'_>> = self
            .inbox
            .iter()
            .map(|(topic, payload)| MessageRef { topic, payload })
            .collect();
        let result = self.io.deliver_batch(&batch);
        self.inbox.clear();
        self.inbox_bytes = 0;
        if let Err(e) = result {
            self.io
                .log(LogLevel::Warn, &format!("delivery refused: {e:?}"));
        }
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Msg(m) => {
                // An unknown sid is a topic unsubscribed while its messages were in flight.
                let Some(topic) = self.topics.get(&m.sid) else {
                    return;
                };
                if proto::topic_of(&self.cfg.prefix, &m.subject).as_deref() != Some(topic) {
                    let msg = format!(
                        "MSG on {:?} for sid {} ({topic:?}) does not match; dropped",
                        String::from_utf8_lossy(&m.subject),
                        m.sid
                    );
                    self.io.log(LogLevel::Warn, &msg);
                    return;
                }
                // Chunks keep each host call's buffer moderate; the host bounds each message,
                // not the batch, so chunking is about size, never about loss.
                let size = 8 + topic.len() + m.payload.len();
                let topic = topic.clone();
                if self.inbox_bytes + size > DELIVER_CHUNK {
                    self.flush_inbox();
                }
                self.inbox_bytes += size;
                self.inbox.push((topic, m.payload));
            }
            Op::Ping => {
                // A failed send means the connection is going; `on_closed` follows.
                let _ = self.send(proto::PONG);
            }
            Op::Pong => match self.phase {
                Phase::AwaitPong => self.ready(),
                // Our keepalive PING is out exactly while no next one is scheduled.
                Phase::Ready if self.ping_timer.is_none() => {
                    if let Some(t) = self.deadline_timer.take() {
                        self.io.cancel_timer(t);
                    }
                    self.ping_timer = self.set_timer(self.cfg.ping_interval_ms);
                }
                _ => {}
            },
            Op::Info(info) => {
                self.max_payload = info.max_payload();
                self.server_version = info.version;
                if self.phase != Phase::AwaitInfo {
                    return;
                }
                if info.tls_required {
                    // Retried with backoff all the same: the server's config may change.
                    self.log(
                        LogLevel::Error,
                        "the NATS server requires TLS, which this adapter does not speak (NATS upgrades after INFO; the host encrypts from the first byte)",
                    );
                    self.lost("server requires TLS".into());
                } else if let Err(e) = self.handshake() {
                    self.lost(format!("cannot send CONNECT: {e:?}"));
                }
            }
            Op::Ok => {}
            Op::Err(e) if proto::is_fatal_err(&e) => {
                // The server closes the connection after these; do not wait for it.
                self.log(LogLevel::Error, &format!("NATS error: {e}"));
                self.lost(format!("server error: {e}"));
            }
            Op::Err(e) => self.log(LogLevel::Warn, &format!("NATS refused: {e}")),
        }
    }
}

/// Generic over the host so the tests drive exactly the code the component runs; the
/// component is `Nats<SdkIo>` (see `export_adapter!` below).
impl<H: Io + Default + 'static> Adapter for Nats<H> {
    fn init(config: &str, _snapshot: Option<Vec<u8>>) -> Result<Self, Error> {
        let cfg = Config::parse(config).map_err(Error::InvalidConfig)?;
        Self::start(cfg, H::default())
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        self.check_ready()?;
        let subject = self.subject(topic)?;
        if payload.len() > self.max_payload {
            return Err(self.too_large(topic, payload.len()));
        }
        let mut out = Vec::with_capacity(payload.len() + subject.len() + 24);
        proto::encode_pub(&mut out, &subject, payload);
        self.send(&out)
            .map_err(|e| Error::Unavailable(format!("{e:?}")))
    }

    /// Sends the batch in as few calls as the host's size limit allows; a message that cannot
    /// go (too large, bad topic) is skipped and the rest still go.
    fn publish_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), Error> {
        self.check_ready()?;
        let size: usize = messages
            .iter()
            .map(|m| m.payload.len() + m.topic.len() * 3 + self.cfg.prefix.len() + 24)
            .sum();
        let mut out = Vec::with_capacity(size.min(SEND_CHUNK * 2));
        let mut refused = Vec::new();
        for m in messages {
            let subject = match self.subject(m.topic) {
                Ok(s) => s,
                Err(e) => {
                    refused.push(e);
                    continue;
                }
            };
            if m.payload.len() > self.max_payload {
                refused.push(self.too_large(m.topic, m.payload.len()));
                continue;
            }
            proto::encode_pub(&mut out, &subject, m.payload);
            self.send_if_full(&mut out)
                .map_err(|e| Error::Unavailable(format!("{e:?}")))?;
        }
        if !out.is_empty() {
            self.send(&out)
                .map_err(|e| Error::Unavailable(format!("{e:?}")))?;
        }
        match refused.pop() {
            None => Ok(()),
            Some(last) => Err(Error::Other(format!(
                "{} of {} messages not published; the last: {last:?}",
                refused.len() + 1,
                messages.len()
            ))),
        }
    }

    fn subscribe(&mut self, topic: &str) -> Result<(), Error> {
        if self.sids.contains_key(topic) {
            return Ok(());
        }
        let subject = self.subject(topic)?;
        let sid = self.next_sid;
        self.next_sid += 1;
        self.sids.insert(topic.to_owned(), sid);
        self.topics.insert(sid, topic.to_owned());
        if self.subscribed_on_wire() {
            let mut out = Vec::new();
            proto::encode_sub(&mut out, &subject, sid);
            if let Err(e) = self.send(&out) {
                // The host does not retry a subscribe; a SUB that never reached the server
                // would lose the topic for good. A fresh connection re-subscribes everything.
                self.lost(format!("cannot send SUB: {e:?}"));
            }
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: &str) -> Result<(), Error> {
        let Some(sid) = self.sids.remove(topic) else {
            return Ok(());
        };
        self.topics.remove(&sid);
        if self.subscribed_on_wire() {
            let mut out = Vec::new();
            proto::encode_unsub(&mut out, sid);
            // Harmless when lost: messages for a forgotten sid are dropped on arrival.
            let _ = self.send(&out);
        }
        Ok(())
    }

    fn on_connected(&mut self, conn: u32) {
        if self.conn != Some(conn) {
            return;
        }
        self.phase = Phase::AwaitInfo;
        self.arm_deadline();
    }

    fn on_data(&mut self, conn: u32, data: Vec<u8>) {
        if self.conn != Some(conn) {
            return;
        }
        self.parser.feed(&data);
        // Handling an op may replace the connection; what is left belongs to the old one.
        while self.conn == Some(conn) {
            match self.parser.next_op() {
                Ok(Some(op)) => self.handle(op),
                Ok(None) => break,
                Err(e) => {
                    // Messages decoded before the bad bytes were received whole: deliver them.
                    self.flush_inbox();
                    self.lost(format!("protocol error: {e}"));
                }
            }
        }
        self.flush_inbox();
    }

    fn on_closed(&mut self, conn: u32, reason: String) {
        if self.conn != Some(conn) {
            return;
        }
        // The host forgets a closed connection itself; `lost` must not close it again.
        self.conn = None;
        self.lost(reason);
    }

    fn on_timer(&mut self, timer: u32) {
        let timer = Some(timer);
        if timer == self.reconnect_timer {
            self.reconnect_timer = None;
            if self.conn.is_none() {
                if let Err(e) = self.connect() {
                    self.failed(format!("cannot open a connection: {e:?}"));
                }
            }
        } else if timer == self.ping_timer {
            self.ping_timer = None;
            if self.phase == Phase::Ready {
                match self.send(proto::PING) {
                    Ok(()) => self.arm_deadline(),
                    Err(e) => self.lost(format!("cannot send PING: {e:?}")),
                }
            }
        } else if timer == self.deadline_timer {
            self.deadline_timer = None;
            let what = if self.phase == Phase::Ready {
                "PING"
            } else {
                "connect handshake"
            };
            self.lost(format!(
                "no answer to the {what} within {} ms",
                self.cfg.ping_timeout_ms
            ));
        }
    }

    fn health(&self) -> Health {
        match (&self.last_failure, self.phase) {
            (_, Phase::Ready) => Health::Ready,
            (None, _) if !self.been_ready => Health::Starting,
            (Some(why), _) => Health::Degraded(format!("reconnecting to NATS: {why}")),
            (None, _) => Health::Degraded("reconnecting to NATS".into()),
        }
    }

    fn shutdown(&mut self) {
        self.cancel_timers();
        if let Some(t) = self.reconnect_timer.take() {
            self.io.cancel_timer(t);
        }
        if let Some(c) = self.conn.take() {
            self.io.close(c);
        }
        self.phase = Phase::Down;
    }
}

export_adapter!(Nats);

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the adapter asks of the host.
    #[derive(Default)]
    struct Fake {
        next_id: u32,
        connects: u32,
        refuse_connect: Option<fn() -> HostError>,
        refuse_send: bool,
        /// Bytes sent on each connection, in order.
        sent: BTreeMap<u32, Vec<u8>>,
        sends: Vec<usize>,
        closed: Vec<u32>,
        /// Live timers and their delay.
        timers: BTreeMap<u32, u64>,
        delivered: Vec<(String, Vec<u8>)>,
        deliver_calls: usize,
        logs: Vec<String>,
    }

    impl Io for Fake {
        fn connect(&mut self, _host: &str, _port: u16) -> Result<u32, HostError> {
            if let Some(e) = self.refuse_connect {
                return Err(e());
            }
            self.connects += 1;
            self.next_id += 1;
            Ok(self.next_id)
        }
        fn send(&mut self, conn: u32, bytes: &[u8]) -> Result<(), HostError> {
            if self.refuse_send {
                return Err(HostError::Limit("full".into()));
            }
            self.sends.push(bytes.len());
            self.sent.entry(conn).or_default().extend_from_slice(bytes);
            Ok(())
        }
        fn close(&mut self, conn: u32) {
            self.closed.push(conn);
        }
        fn set_timer(&mut self, after_ms: u64) -> Result<u32, HostError> {
            self.next_id += 1;
            self.timers.insert(self.next_id, after_ms);
            Ok(self.next_id)
        }
        fn cancel_timer(&mut self, timer: u32) {
            self.timers.remove(&timer);
        }
        fn deliver_batch(&mut self, messages: &[MessageRef<'_>]) -> Result<(), HostError> {
            self.deliver_calls += 1;
            self.delivered.extend(
                messages
                    .iter()
                    .map(|m| (m.topic.to_owned(), m.payload.to_vec())),
            );
            Ok(())
        }
        fn log(&mut self, _level: LogLevel, message: &str) {
            self.logs.push(message.to_owned());
        }
        fn node_id(&mut self) -> String {
            "n1".into()
        }
    }

    const INFO: &[u8] =
        b"INFO {\"server_id\":\"S\",\"version\":\"2.9.10\",\"max_payload\":1048576}\r\n";

    fn adapter(json: &str) -> Nats<Fake> {
        Nats::start(Config::parse(json).unwrap(), Fake::default()).unwrap()
    }

    /// Takes what was sent on `conn` since the last call, as text.
    fn wire(n: &mut Nats<Fake>, conn: u32) -> String {
        let bytes = n.io.sent.remove(&conn).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Runs the handshake on the current connection until the adapter is ready.
    fn bring_up(n: &mut Nats<Fake>) -> u32 {
        let c = n.conn.unwrap();
        n.on_connected(c);
        feed(n, c, INFO);
        feed(n, c, b"PONG\r\n");
        assert_eq!(n.phase, Phase::Ready);
        c
    }

    fn feed(n: &mut Nats<Fake>, conn: u32, bytes: &[u8]) {
        n.on_data(conn, bytes.to_vec());
    }

    /// Fires the timer `which` picks, as the host would.
    fn fire(n: &mut Nats<Fake>, which: fn(&Nats<Fake>) -> Option<u32>) {
        let t = which(n).expect("timer armed");
        assert!(n.io.timers.remove(&t).is_some(), "timer {t} is live");
        n.on_timer(t);
    }

    #[test]
    fn config_defaults_validation_and_unknown_keys() {
        let c = Config::parse("{}").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("127.0.0.1", 4222, "switchyard")
        );
        assert_eq!(Config::parse("").unwrap().port, 4222);
        let err = Config::parse(r#"{"hots":"x"}"#).unwrap_err();
        assert!(err.contains("unknown field `hots`"), "{err}");
        let err = Config::parse(r#"{"prefix":"sy."}"#).unwrap_err();
        assert!(err.contains("must not end with '.'"), "{err}");
        assert!(Config::parse(r#"{"prefix":"sy.*"}"#).is_err());
        assert!(Config::parse(r#"{"prefix":"a.b"}"#).is_ok());
        assert!(Config::parse(r#"{"token":"t","user":"u","password":"p"}"#).is_err());
        assert!(Config::parse(r#"{"user":"u"}"#).is_err());
        assert!(Config::parse(r#"{"ping_timeout_ms":0}"#).is_err());
        assert!(Config::parse(r#"{"port":"x"}"#).is_err());
    }

    #[test]
    fn handshake_authenticates_subscribes_and_waits_for_pong() {
        let mut n = adapter(r#"{"token":"secret","prefix":"sy.test"}"#);
        assert!(matches!(n.health(), Health::Starting));
        n.subscribe("room.1").unwrap();
        n.subscribe("ctl").unwrap();
        let c = n.conn.unwrap();
        assert!(n.io.sent.is_empty(), "nothing goes out before INFO");
        n.on_connected(c);
        assert!(n.deadline_timer.is_some());
        feed(&mut n, c, &INFO[..10]);
        assert!(n.io.sent.is_empty());
        feed(&mut n, c, &INFO[10..]);
        let w = wire(&mut n, c);
        assert!(w.starts_with("CONNECT {"), "{w}");
        assert!(w.contains("\"echo\":true") && w.contains("\"auth_token\":\"secret\""));
        assert!(w.contains("\"name\":\"switchyard-n1\""));
        assert!(
            w.ends_with("SUB sy.test.ctl 2\r\nSUB sy.test.room%2E1 1\r\nPING\r\n"),
            "{w}"
        );
        // Not ready until the PONG: publishes are refused, subscribes go straight out.
        assert!(matches!(n.publish("ctl", b"x"), Err(Error::Unavailable(_))));
        n.subscribe("late").unwrap();
        assert_eq!(wire(&mut n, c), "SUB sy.test.late 3\r\n");
        feed(&mut n, c, b"PONG\r\n");
        assert!(matches!(n.health(), Health::Ready));
        assert!(n.deadline_timer.is_none() && n.ping_timer.is_some());
        n.publish("ctl", b"a\r\nb").unwrap();
        assert_eq!(wire(&mut n, c), "PUB sy.test.ctl 4\r\na\r\nb\r\n");
    }

    #[test]
    fn messages_reach_the_host_under_the_subscribed_topic() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        let topic = "ch:app:private-chat.room*1";
        n.subscribe(topic).unwrap();
        let w = wire(&mut n, c);
        assert!(
            w.ends_with("PING\r\nSUB switchyard.ch:app:private-chat%2Eroom%2A1 1\r\n"),
            "{w}"
        );
        let mut frames =
            b"MSG switchyard.ch:app:private-chat%2Eroom%2A1 1 4\r\n\x00\r\n\xff\r\n".to_vec();
        // An unknown sid (unsubscribed meanwhile) and a subject that does not match its sid.
        frames.extend_from_slice(
            b"MSG switchyard.other 9 1\r\nx\r\nMSG switchyard.other 1 1\r\ny\r\n",
        );
        for chunk in frames.chunks(5) {
            feed(&mut n, c, chunk);
        }
        assert_eq!(
            n.io.delivered,
            vec![(topic.to_string(), b"\x00\r\n\xff".to_vec())]
        );
        assert!(n.io.logs.iter().any(|l| l.contains("does not match")));
    }

    /// Everything one read completes goes to the host in one call, in order.
    #[test]
    fn one_read_is_one_delivery_call() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        n.subscribe("a").unwrap();
        wire(&mut n, c);
        let mut read = Vec::new();
        for i in 0..50 {
            read.extend_from_slice(format!("MSG switchyard.a 1 2\r\n{i:02}\r\n").as_bytes());
        }
        read.extend_from_slice(b"MSG switchyard.a 1 2\r\nx"); // completed by the next read
        feed(&mut n, c, &read);
        assert_eq!(n.io.deliver_calls, 1);
        assert_eq!(n.io.delivered.len(), 50);
        assert_eq!(n.io.delivered[49].1, b"49");
        feed(&mut n, c, b"y\r\n");
        assert_eq!(n.io.deliver_calls, 2);
        assert_eq!(n.io.delivered[50].1, b"xy");
    }

    /// A large message after small ones goes in a call of its own: no batch grows past the
    /// chunk size because of it, and nothing is held back.
    #[test]
    fn a_large_message_starts_a_new_delivery_call() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        n.subscribe("a").unwrap();
        wire(&mut n, c);
        let mut read = Vec::new();
        for _ in 0..100 {
            read.extend_from_slice(b"MSG switchyard.a 1 2\r\nok\r\n");
        }
        let big = DELIVER_CHUNK;
        read.extend_from_slice(format!("MSG switchyard.a 1 {big}\r\n").as_bytes());
        read.extend(std::iter::repeat_n(b'x', big));
        read.extend_from_slice(b"\r\nMSG switchyard.a 1 4\r\nlast\r\n");
        feed(&mut n, c, &read);
        assert_eq!(n.io.delivered.len(), 102);
        assert_eq!(n.io.delivered[100].1.len(), big);
        assert_eq!(n.io.delivered[101].1, b"last");
        assert_eq!(n.io.deliver_calls, 3, "small ones, the large one, the last");
    }

    #[test]
    fn unsubscribe_forgets_the_sid_and_sids_are_not_reused() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        n.subscribe("a").unwrap();
        n.subscribe("a").unwrap();
        n.unsubscribe("a").unwrap();
        n.unsubscribe("a").unwrap();
        n.subscribe("a").unwrap();
        let w = wire(&mut n, c);
        assert!(
            w.ends_with("SUB switchyard.a 1\r\nUNSUB 1\r\nSUB switchyard.a 2\r\n"),
            "{w}"
        );
        feed(
            &mut n,
            c,
            b"MSG switchyard.a 1 3\r\nold\r\nMSG switchyard.a 2 3\r\nnew\r\n",
        );
        assert_eq!(n.io.delivered, vec![("a".to_string(), b"new".to_vec())]);
    }

    #[test]
    fn reconnects_with_backoff_and_resubscribes_every_topic() {
        let mut n = adapter(r#"{"reconnect_initial_ms":50,"reconnect_max_ms":150}"#);
        let c1 = bring_up(&mut n);
        for t in ["x", "y", "z"] {
            n.subscribe(t).unwrap();
        }
        n.unsubscribe("y").unwrap();
        n.on_closed(c1, "closed by peer".into());
        assert!(n.conn.is_none() && n.ping_timer.is_none());
        assert!(matches!(n.health(), Health::Degraded(ref why) if why.contains("closed by peer")));
        assert!(matches!(n.publish("x", b"p"), Err(Error::Unavailable(_))));
        // Failing attempts back off 50, 100, 150, 150.
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(n.io.timers[&n.reconnect_timer.unwrap()]);
            fire(&mut n, |n| n.reconnect_timer);
            let c = n.conn.unwrap();
            n.on_closed(c, "connect failed: refused".into());
        }
        assert_eq!(delays, [50, 100, 150, 150]);
        fire(&mut n, |n| n.reconnect_timer);
        let c = n.conn.unwrap();
        n.on_connected(c);
        feed(&mut n, c, INFO);
        let w = wire(&mut n, c);
        assert!(
            w.ends_with("SUB switchyard.x 1\r\nSUB switchyard.z 3\r\nPING\r\n"),
            "{w}"
        );
        feed(&mut n, c, b"PONG\r\n");
        assert!(matches!(n.health(), Health::Ready));
        // A successful connection resets the backoff.
        n.on_closed(c, "gone".into());
        assert_eq!(n.io.timers[&n.reconnect_timer.unwrap()], 50);
        assert_eq!(n.io.connects, 6);
        assert!(
            n.io.closed.is_empty(),
            "closed connections are not closed again"
        );
    }

    #[test]
    fn answers_server_pings_and_replaces_a_connection_that_stops_answering() {
        let mut n = adapter(r#"{"ping_interval_ms":1000,"ping_timeout_ms":300}"#);
        let c = bring_up(&mut n);
        wire(&mut n, c);
        feed(&mut n, c, b"PING\r\n");
        assert_eq!(wire(&mut n, c), "PONG\r\n");
        // Answering the server's PING does not disturb our own keepalive.
        assert_eq!(n.io.timers[&n.ping_timer.unwrap()], 1000);
        fire(&mut n, |n| n.ping_timer);
        assert_eq!(wire(&mut n, c), "PING\r\n");
        assert_eq!(n.io.timers[&n.deadline_timer.unwrap()], 300);
        feed(&mut n, c, b"PONG\r\n");
        assert!(n.deadline_timer.is_none());
        // This one goes unanswered.
        fire(&mut n, |n| n.ping_timer);
        fire(&mut n, |n| n.deadline_timer);
        assert_eq!(n.io.closed, [c]);
        assert!(n.conn.is_none() && n.reconnect_timer.is_some());
        assert!(n
            .io
            .logs
            .iter()
            .any(|l| l.contains("no answer to the PING")));
        // Only the reconnect timer is left.
        assert_eq!(n.io.timers.len(), 1);
    }

    #[test]
    fn a_silent_server_fails_the_handshake() {
        let mut n = adapter("{}");
        let c = n.conn.unwrap();
        n.on_connected(c);
        fire(&mut n, |n| n.deadline_timer);
        assert_eq!(n.io.closed, [c]);
        assert!(n.io.logs.iter().any(|l| l.contains("connect handshake")));
    }

    #[test]
    fn publishes_over_max_payload_are_dropped_not_sent() {
        let mut n = adapter("{}");
        let c = n.conn.unwrap();
        n.on_connected(c);
        feed(&mut n, c, b"INFO {\"max_payload\":8}\r\nPONG\r\n");
        wire(&mut n, c);
        assert!(matches!(n.publish("t", &[0; 9]), Err(Error::Other(_))));
        assert_eq!(wire(&mut n, c), "");
        n.publish("t", &[b'a'; 8]).unwrap();
        assert_eq!(wire(&mut n, c), "PUB switchyard.t 8\r\naaaaaaaa\r\n");
        let batch: Vec<MessageRef<'_>> = ["ok", "too-long!", "ok2"]
            .into_iter()
            .map(|p| MessageRef {
                topic: "t",
                payload: p.as_bytes(),
            })
            .collect();
        let err = n.publish_batch(&batch).unwrap_err();
        assert!(
            matches!(err, Error::Other(ref m) if m.contains("1 of 3")),
            "{err:?}"
        );
        assert_eq!(
            wire(&mut n, c),
            "PUB switchyard.t 2\r\nok\r\nPUB switchyard.t 3\r\nok2\r\n"
        );
        assert!(n.io.logs.iter().any(|l| l.contains("max_payload is 8")));
        assert_eq!(n.phase, Phase::Ready, "the connection stays up");
    }

    #[test]
    fn big_batches_go_out_in_chunks_in_order() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        wire(&mut n, c);
        n.io.sends.clear();
        let payloads: Vec<Vec<u8>> = (0u32..200)
            .map(|i| [i.to_be_bytes().to_vec(), vec![0; 4000]].concat())
            .collect();
        let batch: Vec<MessageRef<'_>> = payloads
            .iter()
            .map(|p| MessageRef {
                topic: "t",
                payload: p,
            })
            .collect();
        n.publish_batch(&batch).unwrap();
        assert!(n.io.sends.len() > 1, "{:?}", n.io.sends);
        assert!(n.io.sends.iter().all(|&s| s < SEND_CHUNK + 5000));
        // The PUB frames, back to back and in order.
        let out = n.io.sent.remove(&c).unwrap();
        let mut rest = &out[..];
        for i in 0u32..200 {
            let head = b"PUB switchyard.t 4004\r\n";
            assert!(rest.starts_with(head), "frame {i}");
            rest = &rest[head.len()..];
            assert_eq!(rest[..4], i.to_be_bytes());
            assert_eq!(&rest[4004..4006], b"\r\n");
            rest = &rest[4006..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn server_errors_end_the_connection_unless_they_are_permission_errors() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        feed(
            &mut n,
            c,
            b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n",
        );
        assert_eq!(n.phase, Phase::Ready);
        n.subscribe("a").unwrap();
        feed(
            &mut n,
            c,
            b"-ERR 'Authorization Violation'\r\nMSG switchyard.a 1 1\r\nx\r\n",
        );
        assert_eq!(n.io.closed, [c]);
        assert!(
            n.io.delivered.is_empty(),
            "nothing after the error is taken"
        );
        assert!(n.conn.is_none() && n.reconnect_timer.is_some());
        feed(&mut n, c, b"PING\r\n");
        assert!(n.io.sent.get(&c).is_none_or(|s| !s.ends_with(b"PONG\r\n")));
    }

    #[test]
    fn protocol_errors_and_tls_servers_drop_the_connection() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        feed(&mut n, c, b"BOGUS\r\n");
        assert_eq!(n.io.closed, [c]);
        assert!(n.io.logs.iter().any(|l| l.contains("unknown operation")));
        fire(&mut n, |n| n.reconnect_timer);
        let c = n.conn.unwrap();
        n.on_connected(c);
        feed(&mut n, c, b"INFO {\"tls_required\":true}\r\n");
        assert!(n.io.logs.iter().any(|l| l.contains("requires TLS")));
        assert!(n.conn.is_none());
    }

    #[test]
    fn a_sub_that_cannot_be_sent_forces_a_fresh_connection() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        n.io.refuse_send = true;
        n.subscribe("a").unwrap();
        assert_eq!(n.io.closed, [c]);
        n.io.refuse_send = false;
        fire(&mut n, |n| n.reconnect_timer);
        let c = n.conn.unwrap();
        n.on_connected(c);
        feed(&mut n, c, INFO);
        assert!(wire(&mut n, c).contains("SUB switchyard.a 1\r\n"));
    }

    #[test]
    fn a_forbidden_endpoint_is_a_config_error() {
        let fake = Fake {
            refuse_connect: Some(|| {
                HostError::NotAllowed("127.0.0.1:4222 is not in adapter.allow".into())
            }),
            ..Fake::default()
        };
        let err = Nats::start(Config::default(), fake).err().unwrap();
        assert!(matches!(err, Error::InvalidConfig(ref m) if m.contains("adapter.allow")));
        let fake = Fake {
            refuse_connect: Some(|| HostError::Limit("sockets".into())),
            ..Fake::default()
        };
        let n = Nats::start(Config::default(), fake).unwrap();
        assert!(n.reconnect_timer.is_some());
    }

    #[test]
    fn shutdown_releases_everything() {
        let mut n = adapter("{}");
        let c = bring_up(&mut n);
        n.shutdown();
        assert_eq!(n.io.closed, [c]);
        assert!(n.io.timers.is_empty());
    }
}
