//! Cache channels: the last event published through the HTTP API on each `cache-` channel,
//! kept for the app's TTL and replayed to new subscribers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct CachedEvent {
    /// The event's frame, replayed as is to a new subscriber.
    pub frame: Bytes,
    /// The event's `data` string, for `GET /channels/{c}?info=cache`.
    pub data: String,
    pub stored: Instant,
}

#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<Box<str>, CachedEvent>>,
}

impl Cache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn put(&self, channel: &str, frame: Bytes, data: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Expired entries are dropped as new ones arrive, so the map cannot grow without bound
        // beyond the set of channels written within one TTL.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            let ttl = self.ttl;
            map.retain(|_, e| e.stored.elapsed() < ttl);
        }
        map.insert(
            channel.into(),
            CachedEvent {
                frame,
                data: data.to_owned(),
                stored: Instant::now(),
            },
        );
    }

    /// The live entry and its remaining TTL in seconds.
    pub fn get(&self, channel: &str) -> Option<(CachedEvent, u64)> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(channel)?;
        let age = entry.stored.elapsed();
        if age >= self.ttl {
            map.remove(channel);
            return None;
        }
        Some((entry.clone(), (self.ttl - age).as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let cache = Cache::new(Duration::from_millis(20));
        cache.put("cache-a", Bytes::from_static(b"f"), "d");
        assert_eq!(cache.get("cache-a").unwrap().0.data, "d");
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get("cache-a").is_none());
    }
}
