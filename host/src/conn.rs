//! The handle the rest of the server holds for one WebSocket connection: its ids and its
//! bounded outbox. The connection's own task drains the outbox (see `ws::connection`).
//!
//! The outbox is a `Vec` behind a std `Mutex` (never held across an await), swapped whole with
//! the task's write buffer, plus the task's waker. Close requests ride on the same lock.
//!
//! Fast path: when nothing is queued and nobody is writing, `send` writes the frame to the
//! socket itself with one non-blocking `write`, on the publishing thread: no task wake-up, no
//! poll, just the syscall. Whatever does not fit goes to the outbox and the task finishes it.
//! The `direct` and `task_busy` flags keep exactly one writer at a time, so frames stay in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::protocol::ErrorCode;

/// Process-wide connection counter; combined with the node id it forms the socket id.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
struct Outbox {
    frames: Vec<Bytes>,
    /// A publisher is writing to the socket on the fast path right now.
    direct: bool,
    /// The task holds a batch from `poll_work` and has not called `write_done` yet.
    task_busy: bool,
    /// Set once when someone asks the connection to close; the first request wins.
    close: Option<(ErrorCode, String)>,
    /// The connection's task has ended; nothing will read the outbox again.
    ended: bool,
    waker: Option<Waker>,
}

/// A connection as seen by channels, presence and the HTTP API.
#[derive(Debug)]
pub struct Conn {
    /// Unique within this process; used for exclusion and map keys.
    pub id: u64,
    /// `"{node}.{id}"`, the `socket_id` clients and SDKs see.
    pub socket_id: Box<str>,
    capacity: usize,
    outbox: Mutex<Outbox>,
    /// The socket, for the fast path; set once by `attach`. Outside the lock so a direct
    /// write borrows it without a refcount round trip; `ended` (under the lock) stops its use.
    stream: std::sync::OnceLock<Arc<TcpStream>>,
}

/// What `Conn::send` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The outbox was full: the connection is being closed as a slow consumer.
    Overflow,
    /// The connection's task has ended.
    Gone,
}

/// What the connection's task found in its outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// Frames were moved into the caller's buffer.
    Frames,
    /// A close was requested; frames queued before it are in the caller's buffer too.
    Close(ErrorCode, String),
}

impl Conn {
    /// `capacity` bounds the frames waiting in the outbox.
    pub fn new(node_id: u32, capacity: usize) -> Self {
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        Self {
            id,
            socket_id: format!("{node_id}.{id}").into(),
            capacity,
            outbox: Mutex::new(Outbox::default()),
            stream: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Poisoning only follows a panic elsewhere; the outbox itself is still consistent.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one pre-encoded frame without waiting. A full outbox means the client cannot keep
    /// up: rather than grow memory, the connection is closed with 4100 so it backs off.
    pub fn send(&self, frame: Bytes) -> Sent {
        self.send_ref(&frame)
    }

    /// `send` for a frame shared across many sockets: the bytes are only cloned (a refcount
    /// bump) when they have to wait in the outbox.
    pub fn send_ref(&self, frame: &Bytes) -> Sent {
        let mut ob = self.lock();
        if ob.ended {
            return Sent::Gone;
        }
        if ob.frames.len() >= self.capacity {
            let wake = ob.close.is_none();
            if wake {
                ob.close = Some((
                    ErrorCode::OverCapacity,
                    "slow consumer: outbound queue full".into(),
                ));
            }
            let waker = wake.then(|| ob.waker.take()).flatten();
            drop(ob);
            if let Some(w) = waker {
                w.wake();
            }
            return Sent::Overflow;
        }
        if !ob.direct && !ob.task_busy && ob.frames.is_empty() && ob.close.is_none() {
            if let Some(stream) = self.stream.get() {
                ob.direct = true;
                drop(ob);
                return self.write_direct(stream, frame);
            }
        }
        ob.frames.push(frame.clone());
        // Only the empty → non-empty edge needs a wake-up; later frames ride along. While
        // someone is writing, they look at the outbox when done.
        let waker = (ob.frames.len() == 1 && !ob.direct && !ob.task_busy)
            .then(|| ob.waker.take())
            .flatten();
        drop(ob);
        if let Some(w) = waker {
            w.wake();
        }
        Sent::Queued
    }

    /// The fast path, entered with `direct` set: one non-blocking write; a remainder (socket
    /// full) goes to the front of the outbox for the task.
    fn write_direct(&self, stream: &TcpStream, frame: &Bytes) -> Sent {
        // A plain non-blocking send(2) on the socket: tokio's `try_write` would first read the
        // socket's readiness from its registration (another cache line per delivery) only to
        // learn what the syscall reports anyway. Readiness stays tokio's to track: the task's
        // own writes clear it on WouldBlock. SIGPIPE is ignored by the Rust runtime.
        let rest = match socket2::SockRef::from(stream).send(frame) {
            Ok(n) if n == frame.len() => None,
            Ok(n) => Some(frame.slice(n..)),
            // WouldBlock, or a broken socket the task will discover: hand the frame over.
            Err(_) => Some(frame.clone()),
        };
        let mut ob = self.lock();
        ob.direct = false;
        if let Some(rest) = rest {
            ob.frames.insert(0, rest);
        }
        // Frames queued behind our write, or the remainder, are the task's to send now.
        let waker = (!ob.frames.is_empty() || ob.close.is_some())
            .then(|| ob.waker.take())
            .flatten();
        drop(ob);
        if let Some(w) = waker {
            w.wake();
        }
        Sent::Queued
    }

    /// Gives the fast path its socket; called once, before the connection is shared.
    pub fn attach(&self, stream: Arc<TcpStream>) {
        let _ = self.stream.set(stream);
    }

    /// For the connection's task after it wrote what `poll_work` handed it.
    pub fn write_done(&self) {
        self.lock().task_busy = false;
    }

    /// Asks the connection's task to send `pusher:error` and close with `code`. The first
    /// request wins; later ones are ignored.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        let mut ob = self.lock();
        if ob.close.is_some() || ob.ended {
            return;
        }
        ob.close = Some((code, reason.to_owned()));
        let waker = ob.waker.take();
        drop(ob);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// For the connection's task: moves queued frames into `buf` (which must be empty) or
    /// reports a close request; registers the task's waker when there is nothing to do.
    pub fn poll_work(&self, cx: &mut Context<'_>, buf: &mut Vec<Bytes>) -> Poll<Work> {
        let mut ob = self.lock();
        // A publisher is mid-write on the fast path: it wakes us when done.
        if !ob.direct {
            if !ob.frames.is_empty() {
                std::mem::swap(&mut ob.frames, buf);
            }
            if let Some((code, reason)) = ob.close.clone() {
                return Poll::Ready(Work::Close(code, reason));
            }
            if !buf.is_empty() {
                // Until `write_done`, publishers queue behind this batch.
                ob.task_busy = true;
                return Poll::Ready(Work::Frames);
            }
        }
        match &ob.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => ob.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// For the connection's task while a write is stalled: ready once a close is requested.
    pub fn poll_close(&self, cx: &mut Context<'_>) -> Poll<(ErrorCode, String)> {
        let mut ob = self.lock();
        if let Some(req) = ob.close.clone() {
            return Poll::Ready(req);
        }
        ob.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Test helper: takes what is queued without ending the connection.
    #[cfg(test)]
    pub fn take_frames(&self) -> Vec<Bytes> {
        std::mem::take(&mut self.lock().frames)
    }

    /// Marks the task as gone and hands back anything still queued. Waits out a fast-path
    /// write in progress (one non-blocking syscall), so nothing else touches the socket after.
    pub fn end(&self) -> Vec<Bytes> {
        loop {
            let mut ob = self.lock();
            if !ob.direct {
                ob.ended = true;
                ob.waker = None;
                return std::mem::take(&mut ob.frames);
            }
            drop(ob);
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicU64);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn wakes_once_per_batch_and_closes_on_overflow() {
        let conn = Conn::new(1, 3);
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut buf = Vec::new();
        assert_eq!(conn.poll_work(&mut cx, &mut buf), Poll::Pending);
        for _ in 0..3 {
            assert_eq!(conn.send(Bytes::from_static(b"f")), Sent::Queued);
        }
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "one wake for three frames"
        );
        assert_eq!(conn.poll_work(&mut cx, &mut buf), Poll::Ready(Work::Frames));
        assert_eq!(buf.len(), 3);
        buf.clear();
        for _ in 0..3 {
            conn.send(Bytes::from_static(b"f"));
        }
        assert_eq!(conn.send(Bytes::from_static(b"f")), Sent::Overflow);
        match conn.poll_work(&mut cx, &mut buf) {
            Poll::Ready(Work::Close(code, _)) => assert_eq!(code, ErrorCode::OverCapacity),
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.len(), 3, "frames queued before the close still go out");
        conn.end();
        assert_eq!(conn.send(Bytes::from_static(b"f")), Sent::Gone);
    }

    /// The fast path and the task's path interleave under load and the bytes still arrive in
    /// order: 20 MB through a reader that starts late, so many writes hit a full socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_and_queued_writes_keep_order() {
        use std::future::poll_fn;
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let server = Arc::new(server);
        let conn = Arc::new(Conn::new(1, 1 << 20));
        conn.attach(server.clone());
        // The connection task, reduced to its writing part.
        let task_conn = conn.clone();
        let task = tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                match poll_fn(|cx| task_conn.poll_work(cx, &mut buf)).await {
                    Work::Frames => {
                        for f in buf.drain(..) {
                            let mut off = 0;
                            while off < f.len() {
                                match server.try_write(&f[off..]) {
                                    Ok(n) => off += n,
                                    Err(_) => server.writable().await.unwrap(),
                                }
                            }
                        }
                        task_conn.write_done();
                    }
                    Work::Close(..) => return,
                }
            }
        });
        const N: u32 = 20_000;
        let sender = conn.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                let mut frame = i.to_be_bytes().to_vec();
                frame.resize(1024, b'.');
                assert_eq!(sender.send(Bytes::from(frame)), Sent::Queued);
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut frame = vec![0u8; 1024];
        for i in 0..N {
            client.read_exact(&mut frame).await.unwrap();
            assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()), i);
        }
        producer.join().unwrap();
        conn.close(ErrorCode::ReconnectImmediately, "done");
        task.await.unwrap();
    }
}
