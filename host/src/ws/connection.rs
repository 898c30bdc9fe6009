//! One task per WebSocket connection: reads and decodes client frames, drains the outbox
//! into as few writes as possible, keeps the connection alive, and closes it cleanly.
//!
//! The task waits on one hand-written poll over its three sources (outbox, socket, timer), so
//! a delivery costs one wake-up, one lock and one write, with no per-message allocation.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::ops::ControlFlow;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use super::frame::{self, Decoder, Message};
use super::session::Session;
use crate::conn::{Conn, Work};
use crate::metrics::Metrics;
use crate::protocol::{messages, ErrorCode};

/// Frames written in one vectored write at most.
const MAX_IOV: usize = 64;
/// Read chunk; the stack buffer lives only inside the synchronous read step.
const READ_CHUNK: usize = 8192;

pub struct Timeouts {
    pub activity: Duration,
    pub pong: Duration,
    /// Authorized-connections mode: close unauthenticated sockets after this long.
    pub authorize: Option<Duration>,
}

enum Exit {
    /// The peer went away or the socket failed; nothing more to send.
    Gone,
    /// Close with this code after flushing, sending `pusher:error` first for Pusher codes.
    Close {
        code: u16,
        reason: String,
        pusher_error: bool,
    },
}

enum Event {
    Work(Work),
    Readable(io::Result<()>),
    Timer,
}

/// Runs the connection until it ends. `pre_read` holds bytes already read past the handshake.
pub async fn run(
    stream: Arc<TcpStream>,
    pre_read: Bytes,
    mut session: Session,
    timeouts: Timeouts,
    max_message: usize,
) {
    let metrics = session.metrics();
    let conn = session.conn.clone();
    let mut decoder = Decoder::new(max_message);
    let mut inbuf: Vec<u8> = pre_read.to_vec();
    let mut batch: Vec<Bytes> = Vec::new();
    let started = Instant::now();
    let mut last_seen = started;
    let mut ping_sent: Option<Instant> = None;
    let first_deadline = match timeouts.authorize {
        Some(limit) => (started + timeouts.activity).min(started + limit),
        None => started + timeouts.activity,
    };
    let mut timer = pin!(sleep_until(first_deadline));
    // Alternates which source is polled first, so neither a firehose nor a chatty client
    // starves the other.
    let mut reads_first = false;

    let exit = loop {
        if !inbuf.is_empty() {
            if let ControlFlow::Break(exit) = decode(&mut decoder, &mut inbuf, &mut session) {
                break exit;
            }
            // Release a large read buffer once drained, so idle connections stay small.
            if inbuf.is_empty() && inbuf.capacity() > READ_CHUNK {
                inbuf = Vec::new();
            }
        }
        reads_first = !reads_first;
        let event = poll_fn(|cx| {
            if reads_first {
                if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Event::Readable(r));
                }
            }
            if let Poll::Ready(w) = conn.poll_work(cx, &mut batch) {
                return Poll::Ready(Event::Work(w));
            }
            if !reads_first {
                if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Event::Readable(r));
                }
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Work(Work::Frames) => {
                if let Err(exit) =
                    write_or_abort(&stream, &mut batch, &conn, &metrics, timeouts.pong).await
                {
                    break exit;
                }
                conn.write_done();
            }
            Event::Work(Work::Close(code, reason)) => {
                if code == ErrorCode::OverCapacity {
                    Metrics::inc(&metrics.slow_consumers);
                }
                break Exit::Close {
                    code: code.code(),
                    reason,
                    pusher_error: true,
                };
            }
            Event::Readable(Err(_)) => break Exit::Gone,
            Event::Readable(Ok(())) => match read_some(&stream, &mut inbuf) {
                Ok(0) => break Exit::Gone,
                Ok(_) => {
                    last_seen = Instant::now();
                    ping_sent = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break Exit::Gone,
            },
            Event::Timer => {
                let now = Instant::now();
                if let Some(limit) = timeouts.authorize {
                    if !session.authorized && now >= started + limit {
                        break Exit::Close {
                            code: ErrorCode::Unauthorized.code(),
                            reason: "connection not authorized within the timeout".into(),
                            pusher_error: true,
                        };
                    }
                }
                match ping_sent {
                    Some(at) if now >= at + timeouts.pong => {
                        break Exit::Close {
                            code: ErrorCode::PongTimeout.code(),
                            reason: "pong not received in time".into(),
                            pusher_error: true,
                        };
                    }
                    None if now >= last_seen + timeouts.activity => {
                        ping_sent = Some(now);
                        conn.send(frame::text(&messages::ping()));
                    }
                    _ => {}
                }
                // Re-arm lazily: reads only stamp `last_seen`, the timer catches up here.
                let mut next = match ping_sent {
                    Some(at) => at + timeouts.pong,
                    None => last_seen + timeouts.activity,
                };
                if let Some(limit) = timeouts.authorize {
                    if !session.authorized {
                        next = next.min(started + limit);
                    }
                }
                timer
                    .as_mut()
                    .reset(next.max(now + Duration::from_millis(1)));
            }
        }
    };

    session.cleanup();
    // What was queued before the close still goes out, then the error and the close.
    batch.extend(conn.end());
    if let Exit::Close {
        code,
        reason,
        pusher_error,
    } = exit
    {
        if pusher_error {
            batch.push(frame::text(&messages::error(&reason, Some(code))));
        }
        batch.push(frame::close(code, &reason));
        let _ =
            tokio::time::timeout(Duration::from_secs(2), write_batch(&stream, &mut batch)).await;
        // Finish the closing handshake: half-close, then read until the peer's close frame and
        // EOF arrive, so it sees an orderly close rather than a reset.
        let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut sink = [0u8; 512];
            loop {
                if stream.readable().await.is_err() {
                    break;
                }
                match stream.try_read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    }
    metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Writes the batch. A write only pends when the peer's window is full; if a close is
/// requested meanwhile (a slow consumer overflowing its outbox, say), or the peer has not
/// taken a byte for `stall` (a client that stopped reading on a quiet channel), the socket is
/// dropped: a half-written frame leaves no clean way to send a close frame.
async fn write_or_abort(
    stream: &TcpStream,
    batch: &mut Vec<Bytes>,
    conn: &Arc<Conn>,
    metrics: &Metrics,
    stall: Duration,
) -> Result<(), Exit> {
    let outcome = {
        let mut write = pin!(write_batch(stream, batch));
        // Created only once a write pends, so the fast path sets no timer.
        let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        poll_fn(|cx| {
            if let Poll::Ready(r) = write.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(|_| Exit::Gone));
            }
            if let Poll::Ready((code, _)) = conn.poll_close(cx) {
                if code == ErrorCode::OverCapacity {
                    Metrics::inc(&metrics.slow_consumers);
                }
                return Poll::Ready(Err(Exit::Gone));
            }
            let timer = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
            if timer.as_mut().poll(cx).is_ready() {
                Metrics::inc(&metrics.slow_consumers);
                return Poll::Ready(Err(Exit::Gone));
            }
            Poll::Pending
        })
        .await
    };
    if outcome.is_err() {
        batch.clear();
    }
    outcome
}

/// Decodes buffered frames and handles each message; breaks when the connection must end.
/// Pongs go through the outbox like every other frame, so no write happens outside
/// `write_or_abort` and its deadline.
fn decode(decoder: &mut Decoder, inbuf: &mut Vec<u8>, session: &mut Session) -> ControlFlow<Exit> {
    let mut exit = None;
    let result = decoder.decode(inbuf, |msg| match msg {
        Message::Text(text) => {
            session.on_text(text);
            ControlFlow::Continue(())
        }
        Message::Binary(_) => {
            session.error(
                "binary frames are not supported; send JSON text frames",
                None,
            );
            ControlFlow::Continue(())
        }
        Message::Ping(payload) => {
            session.conn.send(frame::pong(payload));
            ControlFlow::Continue(())
        }
        Message::Pong => ControlFlow::Continue(()),
        Message::Close(code) => {
            exit = Some(Exit::Close {
                code: code
                    .filter(|c| (1000..5000).contains(c) && *c != 1005 && *c != 1006)
                    .unwrap_or(1000),
                reason: String::new(),
                pusher_error: false,
            });
            ControlFlow::Break(())
        }
    });
    if let Err(e) = result {
        return ControlFlow::Break(Exit::Close {
            code: e.close_code(),
            reason: e.to_string(),
            pusher_error: false,
        });
    }
    match exit {
        Some(exit) => ControlFlow::Break(exit),
        None => ControlFlow::Continue(()),
    }
}

/// Reads what is available into `inbuf` through a stack buffer.
fn read_some(stream: &TcpStream, inbuf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut total = 0;
    loop {
        match stream.try_read(&mut chunk) {
            Ok(0) if total == 0 => return Ok(0),
            Ok(0) => return Ok(total),
            Ok(n) => {
                inbuf.extend_from_slice(&chunk[..n]);
                total += n;
                if n < READ_CHUNK {
                    return Ok(total);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// Writes every frame in `batch`: a plain write for one frame, vectored writes for several
/// (one syscall when the socket has room), waiting for writability in between. Leaves `batch`
/// empty on success.
async fn write_batch(stream: &TcpStream, batch: &mut Vec<Bytes>) -> io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < batch.len() {
        let result = if batch.len() - idx == 1 {
            stream.try_write(&batch[idx][off..])
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, f) in batch[idx..].iter().take(MAX_IOV).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &f[off..] } else { &f[..] });
                n += 1;
            }
            stream.try_write_vectored(&slices[..n])
        };
        let mut written = match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        while written > 0 {
            let left = batch[idx].len() - off;
            if written >= left {
                written -= left;
                idx += 1;
                off = 0;
            } else {
                off += written;
                written = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}
