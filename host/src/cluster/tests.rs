//! Cluster logic across several in-process nodes joined by the in-memory backplane.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::fake::Bus;
use super::wire::{Header, Message};
use super::{topics, Cluster, QueryKind};
use crate::backplane::Backplane;
use crate::channels::{App, Hub, PresenceJoin};
use crate::config::{AppConfig, ClusterConfig, Routing, WebhookSettings};
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::protocol::ChannelName;

struct Node {
    cluster: Arc<Cluster>,
    app: Arc<App>,
    /// Keeps the run loop's shutdown signal open.
    _stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn config(routing: Routing) -> ClusterConfig {
    ClusterConfig {
        routing,
        heartbeat_interval_ms: 50,
        node_timeout_ms: 300,
        query_timeout_ms: 150,
    }
}

fn start(bus: &Bus, id: u32, routing: Routing) -> Node {
    start_with(bus, id, routing, AppConfig::default())
}

fn start_with(bus: &Bus, id: u32, routing: Routing, app: AppConfig) -> Node {
    let (bp, rx) = bus.attach();
    let cluster = Arc::new(Cluster::new(id, config(routing), Arc::new(bp)));
    let metrics = Arc::new(Metrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let (hooks, _) =
        crate::webhooks::spawn(WebhookSettings::default(), metrics.clone(), stop_rx.clone());
    let hub = Arc::new(Hub::new(&[app], id, cluster.clone(), metrics, hooks));
    let app = hub.by_id("app-id").unwrap().clone();
    let task = tokio::spawn(cluster.clone().run(hub, rx));
    Node {
        cluster,
        app,
        _stop: stop,
        task,
    }
}

/// Starts `n` nodes and waits until each has heard all the others.
async fn cluster_of(bus: &Bus, n: u32, routing: Routing) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=n).map(|i| start(bus, i, routing)).collect();
    eventually(|| {
        nodes
            .iter()
            .all(|x| x.cluster.peer_ids().len() == n as usize - 1)
    })
    .await;
    nodes
}

async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 2 s");
}

fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name, 200).unwrap()
}

fn socket(node: &Node) -> Arc<Conn> {
    Arc::new(Conn::new(node.cluster.node_id, 1024))
}

fn join(node: &Node, conn: &Arc<Conn>, name: &str, user: Option<&str>) {
    let presence = user.map(|u| PresenceJoin {
        user_id: u.into(),
        user_info: format!("{{\"name\":\"{u}\"}}").into(),
    });
    node.app.subscribe(conn, &channel(name), presence).unwrap();
}

/// The text of every frame queued to `conn` since the last call.
fn texts(conn: &Conn) -> Vec<String> {
    let mut out = Vec::new();
    for buf in conn.take_frames() {
        let mut b = &buf[..];
        while b.len() >= 2 {
            let (hdr, len) = match b[1] & 0x7f {
                126 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
                127 => panic!("no test frame is that large"),
                n => (2, n as usize),
            };
            out.push(String::from_utf8(b[hdr..hdr + len].to_vec()).unwrap());
            b = &b[hdr + len..];
        }
    }
    out
}

fn events_named(texts: &[String], event: &str) -> usize {
    texts
        .iter()
        .filter(|t| t.contains(&format!("\"event\":\"{event}\"")))
        .count()
}

#[tokio::test]
async fn events_reach_every_node_but_the_excluded_socket() {
    for routing in [Routing::Broadcast, Routing::Interest] {
        let bus = Bus::default();
        let nodes = cluster_of(&bus, 3, routing).await;
        let subs: Vec<_> = nodes.iter().map(socket).collect();
        for (n, c) in nodes.iter().zip(&subs) {
            join(n, c, "news", None);
            texts(c);
        }
        let excluded = socket(&nodes[2]);
        join(&nodes[2], &excluded, "news", None);
        texts(&excluded);
        // Interest routing subscribes per channel; give the subscriptions a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 0..50 {
            nodes[0].app.publish(
                &channel("news"),
                "tick",
                &i.to_string(),
                Some(&excluded.socket_id),
            );
        }
        let mut got = vec![Vec::new(); subs.len()];
        eventually(|| {
            for (c, g) in subs.iter().zip(got.iter_mut()) {
                g.extend(texts(c));
            }
            got.iter().all(|g| g.len() >= 50)
        })
        .await;
        for got in &got {
            let order: Vec<String> = got
                .iter()
                .map(|t| {
                    t.split("\"data\":\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
            assert_eq!(order, want, "{routing:?}: every event once, in order");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            texts(&excluded).is_empty(),
            "socket_id exclusion crosses nodes"
        );
    }
}

#[tokio::test]
async fn interest_routing_receives_only_channels_with_local_subscribers() {
    let bus = Bus::default();
    let nodes = cluster_of(&bus, 2, Routing::Interest).await;
    let before = nodes[1].cluster.metrics.received.load(Ordering::Relaxed);
    for _ in 0..20 {
        nodes[0].app.publish(&channel("quiet"), "e", "x", None);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let events = nodes[1].cluster.metrics.received.load(Ordering::Relaxed) - before;
    assert!(
        events < 5,
        "only heartbeats arrive, not the 20 events ({events})"
    );
    let c = socket(&nodes[1]);
    join(&nodes[1], &c, "quiet", None);
    texts(&c);
    tokio::time::sleep(Duration::from_millis(20)).await;
    nodes[0].app.publish(&channel("quiet"), "e", "now", None);
    eventually(|| texts(&c).len() == 1).await;
}

#[tokio::test]
async fn presence_members_are_added_and_removed_once_across_nodes() {
    let bus = Bus::default();
    let nodes = cluster_of(&bus, 2, Routing::Broadcast).await;
    let watcher = socket(&nodes[1]);
    join(&nodes[1], &watcher, "presence-room", Some("watcher"));
    texts(&watcher);
    eventually(|| nodes[0].app.registry.user_count("presence-room") == 1).await;
    // The same user on both nodes, twice on node 0.
    let a0 = socket(&nodes[0]);
    let a0b = socket(&nodes[0]);
    let a1 = socket(&nodes[1]);
    join(&nodes[0], &a0, "presence-room", Some("alice"));
    join(&nodes[0], &a0b, "presence-room", Some("alice"));
    eventually(|| nodes[1].app.registry.user_count("presence-room") == 2).await;
    join(&nodes[1], &a1, "presence-room", Some("alice"));
    // alice's subscribe on node 0 saw the watcher from node 1 in its roster.
    let first = texts(&a0);
    assert!(first[0].contains("subscription_succeeded") && first[0].contains("watcher"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        events_named(&texts(&watcher), "pusher_internal:member_added"),
        1
    );

    nodes[0].app.unsubscribe(a0.id, &channel("presence-room"));
    nodes[0].app.unsubscribe(a0b.id, &channel("presence-room"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(texts(&watcher).is_empty(), "alice is still on node 1");
    nodes[1].app.unsubscribe(a1.id, &channel("presence-room"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        events_named(&texts(&watcher), "pusher_internal:member_removed"),
        1
    );
    eventually(|| nodes[0].app.registry.user_count("presence-room") == 1).await;
}

#[tokio::test]
async fn a_dead_nodes_members_are_removed_and_a_late_node_learns_the_roster() {
    let bus = Bus::default();
    let mut nodes = cluster_of(&bus, 2, Routing::Broadcast).await;
    let bob = socket(&nodes[0]);
    join(&nodes[0], &bob, "presence-room", Some("bob"));
    // A node that starts later gets the roster from a snapshot.
    nodes.push(start(&bus, 3, Routing::Broadcast));
    let carol = socket(&nodes[2]);
    eventually(|| nodes[2].app.registry.user_count("presence-room") == 1).await;
    join(&nodes[2], &carol, "presence-room", Some("carol"));
    assert!(texts(&carol)[0].contains("bob"));
    // Node 0 dies without a goodbye.
    let dead = nodes.remove(0);
    dead.task.abort();
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&carol));
        events_named(&seen, "pusher_internal:member_removed") == 1
    })
    .await;
    assert_eq!(nodes[1].app.registry.user_count("presence-room"), 1);
    assert!(nodes[1].cluster.metrics.node_deaths.load(Ordering::Relaxed) >= 1);
    eventually(|| nodes[0].cluster.peer_ids() == vec![3]).await;
}

#[tokio::test]
async fn queries_sum_every_node_and_time_out_on_a_silent_one() {
    let bus = Bus::default();
    let nodes = cluster_of(&bus, 2, Routing::Broadcast).await;
    let keep: Vec<_> = (0..3)
        .map(|i| {
            let n = &nodes[i % 2];
            let c = socket(n);
            join(n, &c, "room", None);
            c
        })
        .collect();
    let a = nodes[0]
        .cluster
        .query(
            &nodes[0].app,
            QueryKind::Channels {
                prefix: String::new(),
            },
        )
        .await;
    assert_eq!(a.counts.get("room"), Some(&3));
    assert!(a.missing.is_empty());
    drop(keep);
    // Node 1 stops answering but is not yet declared dead.
    nodes[1].task.abort();
    let started = std::time::Instant::now();
    let a = nodes[0]
        .cluster
        .query(
            &nodes[0].app,
            QueryKind::Channel {
                name: "room".into(),
            },
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(a.missing, vec![2]);
    assert_eq!(
        nodes[0]
            .cluster
            .metrics
            .partial_queries
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn duplicates_are_dropped_and_an_outage_shows_as_gaps_without_false_deaths() {
    let bus = Bus::default();
    let nodes = cluster_of(&bus, 2, Routing::Broadcast).await;
    let c = socket(&nodes[1]);
    join(&nodes[1], &c, "news", None);
    texts(&c);
    // A forged node sends the same envelope twice.
    let (rogue, _rx) = bus.attach();
    let msg = Message::Event {
        app: "app-id".into(),
        channel: "news".into(),
        messages: vec!["{\"event\":\"e\",\"channel\":\"news\",\"data\":\"1\"}".into()],
        except: String::new(),
        cache: None,
    };
    let h = Header {
        origin: 99,
        epoch: 1,
        seq: 1,
    };
    rogue.publish(&topics::app("app-id"), msg.encode(h));
    rogue.publish(&topics::app("app-id"), msg.encode(h));
    rogue.publish(
        &topics::app("app-id"),
        bytes::Bytes::from_static(b"garbage"),
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(texts(&c).len(), 1);
    assert_eq!(
        nodes[1].cluster.metrics.duplicates.load(Ordering::Relaxed),
        1
    );
    assert_eq!(nodes[1].cluster.metrics.invalid.load(Ordering::Relaxed), 1);

    // The broker goes away for longer than the node timeout, then comes back. One event
    // first, so the receiver has a place in node 1's sequence to count the gap from.
    nodes[0].app.publish(&channel("news"), "before", "x", None);
    eventually(|| !texts(&c).is_empty()).await;
    bus.down.store(true, Ordering::Relaxed);
    for _ in 0..5 {
        nodes[0].app.publish(&channel("news"), "lost", "x", None);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    bus.down.store(false, Ordering::Relaxed);
    nodes[0].app.publish(&channel("news"), "after", "x", None);
    eventually(|| !texts(&c).is_empty()).await;
    assert!(nodes[1].cluster.metrics.gaps.load(Ordering::Relaxed) >= 5);
    // The forged node went silent and is dropped; the real peer never is.
    eventually(|| nodes[1].cluster.peer_ids() == vec![1]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        nodes[1].cluster.metrics.node_deaths.load(Ordering::Relaxed),
        1
    );
    assert_eq!(nodes[1].cluster.peer_ids(), vec![1]);
}

#[tokio::test]
async fn subscription_counts_are_cluster_wide() {
    let bus = Bus::default();
    let app = AppConfig {
        subscription_count: true,
        ..AppConfig::default()
    };
    let nodes: Vec<Node> = (1..=2)
        .map(|i| start_with(&bus, i, Routing::Broadcast, app.clone()))
        .collect();
    eventually(|| nodes.iter().all(|n| n.cluster.peer_ids().len() == 1)).await;
    let a = socket(&nodes[0]);
    join(&nodes[0], &a, "counted", None);
    let b = socket(&nodes[1]);
    let b2 = socket(&nodes[1]);
    join(&nodes[1], &b, "counted", None);
    join(&nodes[1], &b2, "counted", None);
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&a));
        seen.last().is_some_and(|t| {
            t.contains("subscription_count") && t.contains("\\\"subscription_count\\\":3")
        })
    })
    .await;
    // A subscriber joining node 1 now hears the total, node 0's included.
    let c = socket(&nodes[1]);
    join(&nodes[1], &c, "counted", None);
    let got = texts(&c);
    assert!(
        got.iter()
            .any(|t| t.contains("\\\"subscription_count\\\":4")),
        "{got:?}"
    );
    // Node 0's subscriber leaves: node 1's subscribers hear 3.
    nodes[0].app.unsubscribe(a.id, &channel("counted"));
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&c));
        seen.iter()
            .any(|t| t.contains("\\\"subscription_count\\\":3"))
    })
    .await;
    // Node 0 gains a subscriber, then dies: node 1's subscribers hear the total drop.
    let d = socket(&nodes[0]);
    join(&nodes[0], &d, "counted", None);
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&c));
        seen.last()
            .is_some_and(|t| t.contains("\\\"subscription_count\\\":4"))
    })
    .await;
    nodes[0].task.abort();
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&c));
        seen.last()
            .is_some_and(|t| t.contains("\\\"subscription_count\\\":3"))
    })
    .await;
}

#[tokio::test]
async fn a_roster_too_big_for_one_message_arrives_in_chunks() {
    let bus = Bus::default();
    // Like a broker's max_payload, but small enough that one message cannot hold the roster.
    bus.max_payload.store(300 * 1024, Ordering::Relaxed);
    let mut app = AppConfig::default();
    app.limits.max_presence_members = 10_000;
    let first = start_with(&bus, 1, Routing::Broadcast, app.clone());
    let info = "x".repeat(700);
    let conns: Vec<_> = (0..600)
        .map(|i| {
            let c = socket(&first);
            let presence = PresenceJoin {
                user_id: format!("user-{i}").into(),
                user_info: format!("\"{info}\"").into(),
            };
            first
                .app
                .subscribe(&c, &channel("presence-big"), Some(presence))
                .unwrap();
            c
        })
        .collect();
    // Over 420 KB of roster: the late node can only learn it from several chunks.
    let late = start_with(&bus, 2, Routing::Broadcast, app);
    eventually(|| late.app.registry.user_count("presence-big") == 600).await;
    drop(conns);
}

#[tokio::test]
async fn watchlists_see_users_online_on_other_nodes() {
    let bus = Bus::default();
    let nodes = cluster_of(&bus, 2, Routing::Broadcast).await;
    let early = socket(&nodes[1]);
    nodes[1].app.sign_in(&early, &"early".into(), &[]);
    eventually(|| {
        let probe = socket(&nodes[0]);
        nodes[0]
            .app
            .sign_in(&probe, &"probe".into(), &["early".into()]);
        let online = texts(&probe).iter().any(|t| t.contains("early"));
        nodes[0]
            .app
            .sign_out(probe.id, &"probe".into(), &["early".into()]);
        online
    })
    .await;
    let watcher = socket(&nodes[0]);
    nodes[0]
        .app
        .sign_in(&watcher, &"watcher".into(), &["friend".into()]);
    assert!(texts(&watcher).is_empty(), "friend is offline everywhere");
    let friend = socket(&nodes[1]);
    let friend2 = socket(&nodes[1]);
    nodes[1].app.sign_in(&friend, &"friend".into(), &[]);
    nodes[1].app.sign_in(&friend2, &"friend".into(), &[]);
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&watcher));
        seen.iter()
            .any(|t| t.contains("online") && t.contains("friend"))
    })
    .await;
    nodes[1].app.sign_out(friend.id, &"friend".into(), &[]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(texts(&watcher).is_empty(), "friend still has a socket");
    nodes[1].app.sign_out(friend2.id, &"friend".into(), &[]);
    let mut seen = Vec::new();
    eventually(|| {
        seen.extend(texts(&watcher));
        seen.iter()
            .any(|t| t.contains("offline") && t.contains("friend"))
    })
    .await;
    assert_eq!(
        seen.len(),
        1,
        "one online and one offline, never more: {seen:?}"
    );
}
