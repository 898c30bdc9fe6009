//! Throttling of `pusher_internal:subscription_count`: on channels with more than
//! `THRESHOLD` subscribers, at most one update per `INTERVAL` (as Pusher does), with the
//! latest count sent once the interval has passed so clients never keep a stale one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Up to this many subscribers every change is sent at once.
pub const THRESHOLD: usize = 100;
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Entry {
    last_sent: Instant,
    /// A change happened since `last_sent` and was held back.
    pending: bool,
}

#[derive(Debug, Default)]
pub struct CountThrottle {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

impl CountThrottle {
    /// Whether a change to `count` on `channel` should be sent now; if not, it is remembered
    /// and `due` will name the channel once the interval has passed.
    pub fn admit(&self, channel: &str, count: usize, now: Instant) -> bool {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if count <= THRESHOLD {
            map.remove(channel);
            return true;
        }
        match map.get_mut(channel) {
            Some(e) if now.duration_since(e.last_sent) < INTERVAL => {
                e.pending = true;
                false
            }
            Some(e) => {
                e.last_sent = now;
                e.pending = false;
                true
            }
            None => {
                map.insert(
                    channel.into(),
                    Entry {
                        last_sent: now,
                        pending: false,
                    },
                );
                true
            }
        }
    }

    /// Channels with a held-back change whose interval has passed; each is marked sent.
    /// Entries idle for a while are dropped, so the map only holds busy large channels.
    pub fn due(&self, now: Instant) -> Vec<Box<str>> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        map.retain(|name, e| {
            let age = now.duration_since(e.last_sent);
            if e.pending && age >= INTERVAL {
                e.pending = false;
                e.last_sent = now;
                out.push(name.clone());
                return true;
            }
            e.pending || age < INTERVAL * 12
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_channels_get_one_update_per_interval_and_the_latest_at_the_end() {
        let t = CountThrottle::default();
        let t0 = Instant::now();
        assert!(
            t.admit("small", 5, t0),
            "small channels are never held back"
        );
        assert!(t.admit("small", 6, t0));
        assert!(t.admit("big", 101, t0), "the first change goes out");
        assert!(!t.admit("big", 102, t0 + Duration::from_secs(1)));
        assert!(!t.admit("big", 103, t0 + Duration::from_secs(2)));
        assert!(t.due(t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(t.due(t0 + INTERVAL).as_slice(), ["big".into()]);
        assert!(t.due(t0 + INTERVAL * 2).is_empty(), "sent once");
        assert!(
            t.admit("big", 90, t0 + INTERVAL),
            "back under the threshold"
        );
    }
}
