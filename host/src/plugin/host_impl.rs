//! The host side of the contract: what an adapter may ask for. Every request is checked
//! against the sandbox (allow-list, socket and timer counts, bytes per call, pending output)
//! and answered at once; the I/O itself runs on tokio and comes back as jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{HostError, HostImports, LogLevel, TypesHost};
use super::instance::{IoEvent, Job};
use super::sandbox::AllowList;
use super::tls::{self, Tls};
use super::AdapterMetrics;
use crate::config::SandboxLimits;
use switchyard_packed as packed;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub use crate::backplane::Delivery;

/// What one incarnation's store holds.
pub struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub host: HostState,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What every incarnation of one adapter shares with the host.
#[derive(Clone)]
pub struct Shared {
    pub name: Arc<str>,
    pub node_id: Arc<str>,
    pub allow: Arc<AllowList>,
    pub limits: SandboxLimits,
    pub rt: tokio::runtime::Handle,
    pub deliveries: mpsc::Sender<Delivery>,
    /// Decides, before queueing, whether the node wants a delivery (the node drops its own
    /// messages echoed by the broker here, sparing a hand-off per message).
    pub keep: Option<DeliveryFilter>,
    pub metrics: Arc<AdapterMetrics>,
    /// For connections the adapter opens with TLS.
    pub tls: Arc<Tls>,
}

/// `keep(topic, payload)`: false drops the delivery silently.
pub type DeliveryFilter = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

struct Socket {
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes handed to the writer task and not yet written; bounded by
    /// `max_pending_output_bytes`. Zero means nothing is queued or being written.
    pending: Arc<AtomicUsize>,
    /// The connected stream's write half, set once connected: while nothing is pending the
    /// guest's thread writes to it directly, sparing a hand-off to the writer task (and the
    /// wake-up of an idle runtime thread) per publish.
    direct: Arc<std::sync::OnceLock<Arc<tokio::net::tcp::OwnedWriteHalf>>>,
    task: AbortHandle,
}

/// How long a closed socket may take to write what was queued on it before it is cut.
const LINGER: Duration = Duration::from_secs(2);

impl Socket {
    /// Closes the socket once what the adapter queued is written (a TLS session also says
    /// goodbye), or after `LINGER`: the last publishes before a close or a shutdown still go out.
    fn close(self, rt: &tokio::runtime::Handle) {
        drop(self.out);
        let task = self.task;
        if !task.is_finished() {
            rt.spawn(async move {
                tokio::time::sleep(LINGER).await;
                task.abort();
            });
        }
    }
}

/// The host-owned resources of one incarnation. Dropping it closes every socket (see
/// `Socket::close`) and timer.
pub struct HostState {
    pub shared: Shared,
    /// This incarnation's job queue, where I/O results go.
    jobs: mpsc::Sender<Job>,
    sockets: HashMap<u32, Socket>,
    timers: HashMap<u32, AbortHandle>,
    next_id: u32,
}

impl Drop for HostState {
    fn drop(&mut self) {
        for (_, s) in self.sockets.drain() {
            s.close(&self.shared.rt);
        }
        for t in self.timers.values() {
            t.abort();
        }
    }
}

impl HostState {
    pub fn new(shared: Shared, jobs: mpsc::Sender<Job>) -> Self {
        Self {
            shared,
            jobs,
            sockets: HashMap::new(),
            timers: HashMap::new(),
            next_id: 1,
        }
    }

    /// A fresh handle: never 0, never one still naming a live socket or timer (after 2^32
    /// handles the counter wraps).
    fn next(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.sockets.contains_key(&id) && !self.timers.contains_key(&id) {
                return id;
            }
        }
    }

    /// Whether an I/O event is still wanted: its socket or timer is live. Forgets a socket on
    /// `Closed` and a timer on `Timer`, so each reaches the guest at most once.
    pub fn accept_event(&mut self, ev: &IoEvent) -> bool {
        match ev {
            IoEvent::Connected(id) | IoEvent::Data(id, _) => self.sockets.contains_key(id),
            IoEvent::Closed(id, _) => self.sockets.remove(id).is_some(),
            IoEvent::Timer(id) => self.timers.remove(id).is_some(),
        }
    }

    /// Filters one received message and queues it for the node.
    fn deliver_one(&self, topic: &str, payload: Bytes) -> Result<(), HostError> {
        if let Some(keep) = &self.shared.keep {
            if !keep(topic, &payload) {
                return Ok(());
            }
        }
        let m = &self.shared.metrics;
        let d = Delivery {
            topic: topic.to_owned(),
            payload,
        };
        match self.shared.deliveries.try_send(d) {
            Ok(()) => {
                m.deliveries.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                m.deliveries_dropped.fetch_add(1, Ordering::Relaxed);
                Err(HostError::Limit("the host's delivery queue is full".into()))
            }
            // The node stopped listening (it is shutting down): nothing for the guest to fix.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                m.deliveries_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn check_size(&self, n: usize) -> Result<(), HostError> {
        let max = self.shared.limits.max_call_bytes;
        if n > max {
            return Err(HostError::Limit(format!(
                "{n} bytes in one call; the limit is {max}"
            )));
        }
        Ok(())
    }
}

/// Opens the connection, then pumps bytes both ways until either side ends.
#[allow(clippy::too_many_arguments)]
async fn run_socket(
    id: u32,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    direct: Arc<std::sync::OnceLock<Arc<tokio::net::tcp::OwnedWriteHalf>>>,
    jobs: mpsc::Sender<Job>,
) {
    let connect = async {
        let addrs = tokio::net::lookup_host((host.as_str(), port)).await?;
        let mut last = std::io::Error::other("name resolved to no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let stream = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = jobs
                .send(Job::Io(IoEvent::Closed(id, format!("connect failed: {e}"))))
                .await;
            return;
        }
        Err(_) => {
            let _ = jobs
                .send(Job::Io(IoEvent::Closed(id, "connect timed out".into())))
                .await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    if let Some((connector, name)) = tls {
        // Encrypted: no direct writes from the adapter's thread (the TLS session lives in
        // this task); everything goes through the writer below.
        let reason = match handshake(connector, name, stream).await {
            Ok(stream) => {
                if jobs.send(Job::Io(IoEvent::Connected(id))).await.is_err() {
                    return;
                }
                pump_tls(id, stream, out, pending, &jobs).await
            }
            Err(why) => why,
        };
        let _ = jobs.send(Job::Io(IoEvent::Closed(id, reason))).await;
        return;
    }
    if jobs.send(Job::Io(IoEvent::Connected(id))).await.is_err() {
        return;
    }
    let (rd, wr) = stream.into_split();
    let wr = Arc::new(wr);
    let _ = direct.set(wr.clone());
    let writer = async {
        while let Some(buf) = out.recv().await {
            let mut done = 0;
            while done < buf.len() {
                wr.writable().await?;
                match wr.try_write(&buf[done..]) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            pending.fetch_sub(buf.len(), Ordering::Release);
        }
        // Closed by the adapter (which also made its last direct write): our side is done.
        let stream: &tokio::net::TcpStream = (*wr).as_ref();
        socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write)
    };
    let reason = pump(writer, read_loop(id, rd, &jobs)).await;
    let _ = jobs.send(Job::Io(IoEvent::Closed(id, reason))).await;
}

/// Runs a connection's writer and reader; the reason it ended. When the adapter closes it, the
/// writer sends what was queued and shuts our side, and reading goes on until the broker
/// closes too: closing with its answers unread would reset the connection, and the broker
/// would drop whatever it had not read yet (the last publishes). `Socket::close` bounds the
/// wait.
async fn pump(
    writer: impl std::future::Future<Output = std::io::Result<()>>,
    reader: impl std::future::Future<Output = std::io::Result<String>>,
) -> String {
    tokio::pin!(writer, reader);
    tokio::select! {
        w = &mut writer => match w {
            Ok(()) => {
                let _ = reader.await;
                "closed".into()
            }
            Err(e) => format!("write failed: {e}"),
        },
        r = &mut reader => match r { Ok(why) => why, Err(e) => format!("read failed: {e}") },
    }
}

/// Hands each read to the incarnation until the peer closes. Awaiting the queue is the
/// backpressure: a slow guest slows reads from the broker.
async fn read_loop(
    id: u32,
    mut rd: impl tokio::io::AsyncRead + Unpin,
    jobs: &mpsc::Sender<Job>,
) -> std::io::Result<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut gone = false;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without saying goodbye (close_notify): a close all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(if gone {
                "incarnation gone"
            } else {
                "closed by peer"
            }
            .into());
        }
        // Once the incarnation is gone nobody reads any more, but what it queued may still be
        // being written: keep draining the broker's answers and let the writer finish (the
        // socket's close bounds how long).
        if !gone
            && jobs
                .send(Job::Io(IoEvent::Data(id, buf[..n].to_vec())))
                .await
                .is_err()
        {
            gone = true;
        }
    }
}

/// The TLS handshake, with a timeout of its own (as long as the connect's).
async fn handshake(
    connector: TlsConnector,
    name: ServerName<'static>,
    stream: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// `run_socket`'s pump for an encrypted connection.
async fn pump_tls(
    id: u32,
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    jobs: &mpsc::Sender<Job>,
) -> String {
    let (rd, mut wr) = tokio::io::split(stream);
    let writer = async {
        while let Some(buf) = out.recv().await {
            wr.write_all(&buf).await?;
            // Whatever else is queued goes in the same flush.
            let mut written = buf.len();
            while let Ok(more) = out.try_recv() {
                wr.write_all(&more).await?;
                written += more.len();
            }
            wr.flush().await?;
            pending.fetch_sub(written, Ordering::Release);
        }
        // Closed by the adapter: end the session properly (close_notify, then our side).
        wr.shutdown().await
    };
    pump(writer, read_loop(id, rd, jobs)).await
}

/// `send` and `deliver-batch`, on borrowed bytes: a component's calls reach them straight from
/// its memory (see `borrowed`), a native adapter's from its own buffers.
impl StoreState {
    pub(super) fn send_slice(&self, conn: u32, bytes: &[u8]) -> Result<(), HostError> {
        self.host.check_size(bytes.len())?;
        let max = self.host.shared.limits.max_pending_output_bytes;
        let sock = self
            .host
            .sockets
            .get(&conn)
            .ok_or(HostError::UnknownHandle)?;
        let now = sock.pending.load(Ordering::Acquire);
        if now + bytes.len() > max {
            return Err(HostError::Limit(format!(
                "{now} bytes already pending on this connection"
            )));
        }
        // Only this thread adds to `pending`, so zero stays zero until we queue: a direct
        // write cannot overtake queued bytes. Bytes are copied only when some must wait.
        let mut rest = bytes;
        if now == 0 {
            if let Some(wr) = sock.direct.get() {
                match wr.try_write(bytes) {
                    Ok(n) if n == bytes.len() => return Ok(()),
                    Ok(n) => rest = &bytes[n..],
                    // Full socket buffer or an error: the writer task waits or reports it.
                    Err(_) => {}
                }
            }
        }
        sock.pending.fetch_add(rest.len(), Ordering::AcqRel);
        sock.out
            .send(rest.to_vec())
            .map_err(|_| HostError::UnknownHandle)
    }

    /// A `packed-messages` buffer, owned by the host already.
    pub(super) fn deliver_packed(&self, buf: Bytes) -> Result<(), HostError> {
        // No bound on the whole buffer: it already sat in the instance's bounded memory, and
        // bounding it would make an adapter lose messages for batching them. Each message is
        // bounded as `deliver` bounds it.
        let Some(batch) = packed::unpack(&buf) else {
            self.host
                .shared
                .metrics
                .deliveries_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Err(HostError::Limit("malformed deliver-batch buffer".into()));
        };
        // Payloads stay slices of the one buffer that crossed the sandbox.
        let mut first_error = Ok(());
        for m in batch {
            let r = match self.host.check_size(m.topic.len() + m.payload.len()) {
                Ok(()) => self.host.deliver_one(m.topic, buf.slice_ref(m.payload)),
                Err(e) => {
                    self.host
                        .shared
                        .metrics
                        .deliveries_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            };
            if first_error.is_ok() {
                first_error = r;
            }
        }
        first_error
    }
}

impl TypesHost for StoreState {}

impl HostImports for StoreState {
    fn connect(&mut self, host: String, port: u16, tls: bool) -> Result<u32, HostError> {
        let h = &mut self.host;
        if !h.shared.allow.permits(&host, port) {
            h.shared
                .metrics
                .refused_connects
                .fetch_add(1, Ordering::Relaxed);
            return Err(HostError::NotAllowed(format!(
                "{host}:{port} is not in adapter.allow"
            )));
        }
        let max = h.shared.limits.max_sockets;
        if h.sockets.len() >= max {
            return Err(HostError::Limit(format!("at most {max} open connections")));
        }
        // An IPv6 literal may come bracketed, as in the allow-list; resolving wants it bare.
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(bare) => bare.to_owned(),
            None => host,
        };
        // What is known now is said now, rather than after a TCP connect.
        let tls = if tls {
            let connector = (*h.shared.tls)
                .as_ref()
                .map_err(|why| HostError::NotAllowed(format!("TLS is not available: {why}")))?;
            let name = tls::server_name(&host).map_err(HostError::NotAllowed)?;
            Some((connector.clone(), name))
        } else {
            None
        };
        let id = h.next();
        let (out, out_rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let direct = Arc::new(std::sync::OnceLock::new());
        let task = h
            .shared
            .rt
            .spawn(run_socket(
                id,
                host,
                port,
                tls,
                out_rx,
                pending.clone(),
                direct.clone(),
                h.jobs.clone(),
            ))
            .abort_handle();
        h.sockets.insert(
            id,
            Socket {
                out,
                pending,
                direct,
                task,
            },
        );
        Ok(id)
    }

    fn send(&mut self, conn: u32, bytes: Vec<u8>) -> Result<(), HostError> {
        self.send_slice(conn, &bytes)
    }

    fn close(&mut self, conn: u32) {
        if let Some(s) = self.host.sockets.remove(&conn) {
            s.close(&self.host.shared.rt);
        }
    }

    fn set_timer(&mut self, after_ms: u64) -> Result<u32, HostError> {
        let h = &mut self.host;
        let max = h.shared.limits.max_timers;
        if h.timers.len() >= max {
            return Err(HostError::Limit(format!("at most {max} live timers")));
        }
        let id = h.next();
        let jobs = h.jobs.clone();
        // Clamp: a guest-chosen delay must not overflow the timer wheel.
        let after = Duration::from_millis(after_ms.min(86_400_000));
        let task = h
            .shared
            .rt
            .spawn(async move {
                tokio::time::sleep(after).await;
                let _ = jobs.send(Job::Io(IoEvent::Timer(id))).await;
            })
            .abort_handle();
        h.timers.insert(id, task);
        Ok(id)
    }

    fn cancel_timer(&mut self, timer: u32) {
        if let Some(t) = self.host.timers.remove(&timer) {
            t.abort();
        }
    }

    fn deliver(&mut self, topic: String, payload: Vec<u8>) -> Result<(), HostError> {
        if let Err(e) = self.host.check_size(payload.len() + topic.len()) {
            self.host
                .shared
                .metrics
                .deliveries_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.host.deliver_one(&topic, Bytes::from(payload))
    }

    fn deliver_batch(&mut self, messages: Vec<u8>) -> Result<(), HostError> {
        self.deliver_packed(Bytes::from(messages))
    }

    fn log(&mut self, level: LogLevel, message: String) {
        // Guest input is hostile: cap what reaches the log.
        let mut end = message.len().min(2048);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let msg = &message[..end];
        let name = &*self.host.shared.name;
        match level {
            LogLevel::Trace => tracing::trace!(adapter = name, "{msg}"),
            LogLevel::Debug => tracing::debug!(adapter = name, "{msg}"),
            LogLevel::Info => tracing::info!(adapter = name, "{msg}"),
            LogLevel::Warn => tracing::warn!(adapter = name, "{msg}"),
            LogLevel::Error => tracing::error!(adapter = name, "{msg}"),
        }
    }

    fn node_id(&mut self) -> String {
        self.host.shared.node_id.to_string()
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
