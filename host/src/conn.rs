//! The handle the rest of the server holds for one WebSocket connection: its ids and its
//! bounded outbound queue. The connection's own task drains the queue (see `ws::connection`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::protocol::ErrorCode;

/// Process-wide connection counter; combined with the node id it forms the socket id.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A connection as seen by channels, presence and the HTTP API.
#[derive(Debug)]
pub struct Conn {
    /// Unique within this process; used for exclusion and map keys.
    pub id: u64,
    /// `"{node}.{id}"`, the `socket_id` clients and SDKs see.
    pub socket_id: Box<str>,
    tx: mpsc::Sender<Bytes>,
    /// Set once when someone asks the connection to close; read by its task after `notify`.
    close_request: Mutex<Option<(ErrorCode, String)>>,
    notify: Notify,
}

/// What `Conn::send` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The queue was full: the connection is being closed as a slow consumer.
    Overflow,
    /// The connection's task has ended.
    Gone,
}

impl Conn {
    /// Creates the handle and the receiving end its task drains.
    pub fn new(node_id: u32, queue: usize) -> (Self, mpsc::Receiver<Bytes>) {
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue);
        let conn = Self {
            id,
            socket_id: format!("{node_id}.{id}").into(),
            tx,
            close_request: Mutex::new(None),
            notify: Notify::new(),
        };
        (conn, rx)
    }

    /// Queues one pre-encoded frame without waiting. A full queue means the client cannot keep
    /// up: rather than grow memory, the connection is closed with 4100 so it backs off.
    pub fn send(&self, frame: Bytes) -> Sent {
        match self.tx.try_send(frame) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(
                    ErrorCode::OverCapacity,
                    "slow consumer: outbound queue full",
                );
                Sent::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Gone,
        }
    }

    /// Asks the connection's task to send `pusher:error` and close with `code`. The first
    /// request wins; later ones are ignored.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        // Poisoning only follows a panic elsewhere; the request slot is still usable.
        let mut slot = self.close_request.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
            self.notify.notify_one();
        }
    }

    /// Resolves when a close was requested, returning it.
    pub async fn close_requested(&self) -> (ErrorCode, String) {
        loop {
            if let Some(req) = self
                .close_request
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return req;
            }
            self.notify.notified().await;
        }
    }
}
