//! An in-memory backplane: several nodes in one process joined by a shared bus, so the cluster
//! logic is tested without wasm or a broker. It can also lose messages on purpose.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backplane::{Backplane, BackplaneStatus, Delivery};

type Subscribers = HashMap<String, Vec<(usize, mpsc::Sender<Delivery>)>>;

/// The shared "broker".
#[derive(Default, Clone)]
pub struct Bus {
    topics: Arc<Mutex<Subscribers>>,
    next: Arc<Mutex<usize>>,
    /// While set, every publish is lost (a broker outage).
    pub down: Arc<AtomicBool>,
    /// Messages larger than this are dropped, as brokers refuse them (0: no limit).
    pub max_payload: Arc<std::sync::atomic::AtomicUsize>,
}

impl Bus {
    /// A backplane attached to this bus and the stream of what it receives.
    pub fn attach(&self) -> (FakeBackplane, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(1 << 16);
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        let bp = FakeBackplane {
            bus: self.clone(),
            id: *next,
            tx,
            topics: Mutex::new(HashSet::new()),
        };
        (bp, rx)
    }
}

pub struct FakeBackplane {
    bus: Bus,
    id: usize,
    tx: mpsc::Sender<Delivery>,
    topics: Mutex<HashSet<String>>,
}

impl Backplane for FakeBackplane {
    fn publish(&self, topic: &str, payload: Bytes) {
        let max = self.bus.max_payload.load(Ordering::Relaxed);
        if self.bus.down.load(Ordering::Relaxed) || (max > 0 && payload.len() > max) {
            return;
        }
        let topics = self.bus.topics.lock().unwrap_or_else(|e| e.into_inner());
        for (_, tx) in topics.get(topic).into_iter().flatten() {
            let _ = tx.try_send(Delivery {
                topic: topic.to_owned(),
                payload: payload.clone(),
            });
        }
    }

    fn subscribe(&self, topic: &str) {
        let mut mine = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if mine.insert(topic.to_owned()) {
            let mut topics = self.bus.topics.lock().unwrap_or_else(|e| e.into_inner());
            topics
                .entry(topic.to_owned())
                .or_default()
                .push((self.id, self.tx.clone()));
        }
    }

    fn unsubscribe(&self, topic: &str) {
        let mut mine = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if mine.remove(topic) {
            let mut topics = self.bus.topics.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = topics.get_mut(topic) {
                list.retain(|(id, _)| *id != self.id);
            }
        }
    }

    fn status(&self) -> BackplaneStatus {
        BackplaneStatus::Running
    }
}
