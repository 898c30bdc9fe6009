//! Publishes on their way to an incarnation, packed as they arrive: a publisher appends under a
//! short lock, and the incarnation's thread takes a whole batch at once and hands its buffer to
//! the guest's `publish-batch` as it is. One copy per message instead of a queued job, a topic
//! `String` and a second copy into a batch buffer.

use std::collections::VecDeque;
use std::sync::Mutex;

use switchyard_packed as packed;

/// Publishes taken together: a `packed-messages` buffer and how many messages it holds.
#[derive(Debug, Default)]
pub struct Batch {
    pub packed: Vec<u8>,
    pub count: usize,
}

/// The outbox refused a publish: `queue` messages are waiting already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Bounded in messages waiting (`limits.queue`); each batch holds at most `max_batch` messages
/// and, unless one message alone is larger, `max_bytes` bytes.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    max_messages: usize,
    max_batch: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<Batch>,
    /// Messages in `batches`.
    waiting: usize,
    /// Buffers of taken batches, kept for the next ones.
    spare: Vec<Vec<u8>>,
}

/// Spare buffers kept, and the largest kept (a burst of big messages should not pin memory).
const SPARE: usize = 4;
const SPARE_BYTES: usize = 1 << 20;

impl Outbox {
    pub fn new(max_messages: usize, max_batch: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_messages: max_messages.max(1),
            max_batch: max_batch.max(1),
            max_bytes,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one message. `Ok(true)`: nothing was waiting before it, so the thread may be
    /// asleep and needs a wake-up.
    pub fn push(&self, topic: &str, payload: &[u8]) -> Result<bool, Full> {
        let size = 8 + topic.len() + payload.len();
        let mut s = self.state();
        if s.waiting >= self.max_messages {
            return Err(Full);
        }
        let was_empty = s.waiting == 0;
        let fits = s.batches.back().is_some_and(|b| {
            b.count < self.max_batch
                && (b.packed.is_empty() || b.packed.len() + size <= self.max_bytes)
        });
        if !fits {
            let packed = s.spare.pop().unwrap_or_default();
            s.batches.push_back(Batch { packed, count: 0 });
        }
        let batch = s.batches.back_mut().expect("a batch was just ensured");
        packed::push(&mut batch.packed, topic, payload);
        batch.count += 1;
        s.waiting += 1;
        Ok(was_empty)
    }

    /// The oldest batch, if any.
    pub fn take(&self) -> Option<Batch> {
        let mut s = self.state();
        let batch = s.batches.pop_front()?;
        s.waiting -= batch.count;
        Some(batch)
    }

    /// Empties the outbox of an incarnation that ended, returning how many messages were lost.
    pub fn abandon(&self) -> usize {
        let mut s = self.state();
        s.batches.clear();
        std::mem::take(&mut s.waiting)
    }

    /// Gives a taken batch's buffer back for reuse.
    pub fn recycle(&self, mut packed: Vec<u8>) {
        if packed.capacity() > SPARE_BYTES {
            return;
        }
        packed.clear();
        let mut s = self.state();
        if s.spare.len() < SPARE {
            s.spare.push(packed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpacked(b: &Batch) -> Vec<(String, Vec<u8>)> {
        packed::unpack(&b.packed)
            .unwrap()
            .iter()
            .map(|m| (m.topic.to_string(), m.payload.to_vec()))
            .collect()
    }

    #[test]
    fn batches_keep_order_and_bounds() {
        let o = Outbox::new(10, 3, 40);
        assert_eq!(o.push("a", b"1"), Ok(true));
        assert_eq!(o.push("a", b"2"), Ok(false));
        assert_eq!(o.push("b", b"3"), Ok(false));
        // A fourth message starts a new batch (max_batch 3); so does one over 40 bytes.
        assert_eq!(o.push("c", &[b'x'; 20]), Ok(false));
        assert_eq!(o.push("d", &[b'y'; 20]), Ok(false));
        // Alone, a message over the byte bound still goes, in a batch of its own.
        assert_eq!(o.push("e", &[b'z'; 100]), Ok(false));
        let first = o.take().unwrap();
        assert_eq!(first.count, 3);
        assert_eq!(
            unpacked(&first),
            [("a", b"1"), ("a", b"2"), ("b", b"3")].map(|(t, p)| (t.to_string(), p.to_vec()))
        );
        assert_eq!(o.take().unwrap().count, 1);
        assert_eq!(o.take().unwrap().count, 1);
        assert_eq!(unpacked(&o.take().unwrap())[0].1.len(), 100);
        assert!(o.take().is_none());
        o.recycle(first.packed);
        // Empty again: the next publish asks for a wake-up.
        assert_eq!(o.push("a", b"1"), Ok(true));
    }

    #[test]
    fn refuses_past_its_bound_until_the_thread_takes() {
        let o = Outbox::new(2, 256, 1 << 20);
        assert!(o.push("t", b"1").is_ok());
        assert!(o.push("t", b"2").is_ok());
        assert_eq!(o.push("t", b"3"), Err(Full));
        assert_eq!(o.take().unwrap().count, 2);
        assert!(o.push("t", b"4").is_ok());
        assert!(o.push("t", b"5").is_ok());
        assert_eq!(o.abandon(), 2);
        assert!(o.take().is_none());
        assert_eq!(o.push("t", b"6"), Ok(true));
    }
}
