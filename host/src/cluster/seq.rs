//! Sequence numbers: the counters a node stamps on what it sends, and the tracker that drops
//! duplicates and counts gaps in what it receives, per (origin, topic).

use std::collections::HashMap;

use super::wire::Header;

/// Topics a node keeps counters for before it resets them all under a new epoch, so that
/// interest routing over millions of channels cannot grow the map without bound.
const MAX_COUNTERS: usize = 65_536;

/// The sending side: one counter per topic.
#[derive(Debug)]
pub struct Counters {
    origin: u32,
    epoch: u32,
    next: HashMap<Box<str>, u64>,
}

impl Counters {
    pub fn new(origin: u32) -> Self {
        Self {
            origin,
            epoch: rand::random(),
            next: HashMap::new(),
        }
    }

    /// The header for the next message on `topic`.
    pub fn stamp(&mut self, topic: &str) -> Header {
        if !self.next.contains_key(topic) && self.next.len() >= MAX_COUNTERS {
            // Receivers see the new epoch and start afresh instead of taking the restarted
            // counters for duplicates.
            self.next.clear();
            self.epoch = self.epoch.wrapping_add(1);
        }
        let seq = self.next.entry(topic.into()).or_insert(0);
        *seq += 1;
        Header {
            origin: self.origin,
            epoch: self.epoch,
            seq: *seq,
        }
    }
}

/// What the tracker made of one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In order (or the first heard from this origin on this topic).
    Fresh,
    /// Seen before (or older than something seen): drop it.
    Duplicate,
    /// New, but `missed` messages before it never arrived.
    Gap { missed: u64 },
}

/// The receiving side: origin → topic → (epoch, last seq). Two levels so the hot path looks
/// a topic up by `&str` without allocating.
#[derive(Debug, Default)]
pub struct Tracker {
    last: HashMap<u32, HashMap<Box<str>, (u32, u64)>>,
}

impl Tracker {
    pub fn check(&mut self, topic: &str, h: Header) -> Verdict {
        let topics = self.last.entry(h.origin).or_default();
        match topics.get_mut(topic) {
            Some((epoch, last)) if *epoch == h.epoch => {
                if h.seq <= *last {
                    return Verdict::Duplicate;
                }
                let missed = h.seq - *last - 1;
                *last = h.seq;
                if missed == 0 {
                    Verdict::Fresh
                } else {
                    Verdict::Gap { missed }
                }
            }
            Some(entry) => {
                *entry = (h.epoch, h.seq);
                Verdict::Fresh
            }
            None => {
                topics.insert(topic.into(), (h.epoch, h.seq));
                Verdict::Fresh
            }
        }
    }

    /// Forgets an origin (it died or said goodbye).
    pub fn forget_origin(&mut self, origin: u32) {
        self.last.remove(&origin);
    }

    /// Forgets a topic (we stopped receiving it, so the next message starts afresh).
    pub fn forget_topic(&mut self, topic: &str) {
        for topics in self.last.values_mut() {
            topics.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_dropped_and_gaps_counted() {
        let mut c = Counters::new(7);
        let mut t = Tracker::default();
        let h1 = c.stamp("a");
        let h2 = c.stamp("a");
        let h3 = c.stamp("a");
        let other = c.stamp("b");
        assert_eq!((h1.seq, h2.seq, h3.seq, other.seq), (1, 2, 3, 1));
        assert_eq!(t.check("a", h1), Verdict::Fresh);
        assert_eq!(t.check("a", h1), Verdict::Duplicate);
        assert_eq!(t.check("a", h3), Verdict::Gap { missed: 1 });
        assert_eq!(t.check("a", h2), Verdict::Duplicate, "late is a duplicate");
        assert_eq!(t.check("b", other), Verdict::Fresh);
    }

    #[test]
    fn a_new_epoch_or_a_forgotten_topic_starts_afresh() {
        let mut t = Tracker::default();
        let h = |epoch, seq| Header {
            origin: 1,
            epoch,
            seq,
        };
        assert_eq!(t.check("a", h(1, 50)), Verdict::Fresh);
        assert_eq!(t.check("a", h(2, 1)), Verdict::Fresh);
        assert_eq!(t.check("a", h(2, 2)), Verdict::Fresh);
        t.forget_topic("a");
        assert_eq!(t.check("a", h(2, 9)), Verdict::Fresh);
        t.forget_origin(1);
        assert_eq!(t.check("a", h(2, 1)), Verdict::Fresh);
    }

    #[test]
    fn counters_reset_under_a_new_epoch_when_full() {
        let mut c = Counters::new(1);
        let first = c.stamp("t0");
        for i in 1..MAX_COUNTERS {
            c.stamp(&format!("t{i}"));
        }
        let after = c.stamp("one-too-many");
        assert_ne!(after.epoch, first.epoch);
        assert_eq!(c.stamp("t0").seq, 1);
    }
}
