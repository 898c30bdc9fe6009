//! The endpoint bodies: validate, act on the app's channels, and build the JSON answer.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::ApiError;
use crate::channels::{App, Hub};
use crate::cluster::{local_answer, Cluster, QueryKind};
use crate::metrics::Metrics;
use crate::protocol::names::check_event_name;
use crate::protocol::{ChannelKind, ChannelName};

pub struct Api<'a> {
    pub app: &'a Arc<App>,
    pub hub: &'a Hub,
    /// Present on a clustered node: counts and listings then cover every node.
    pub cluster: Option<&'a Arc<Cluster>>,
}

/// One event as `events` and each `batch_events` entry carry it.
#[derive(Deserialize)]
struct EventBody {
    name: Option<String>,
    data: Option<Value>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody {
    batch: Vec<EventBody>,
}

/// An event that passed validation, ready to publish.
struct Checked {
    name: String,
    data: String,
    channels: Vec<ChannelName>,
    /// Socket id not to deliver to, on whichever node it lives.
    except: Option<String>,
    info: Vec<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// `^\d+\.\d+$`, the shape the SDKs enforce for socket ids.
fn valid_socket_id(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

fn parse_info(info: Option<&str>) -> Vec<String> {
    info.map(|s| {
        s.split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

impl Api<'_> {
    fn check(&self, ev: EventBody) -> Result<Checked, ApiError> {
        let limits = &self.app.config.limits;
        let name = ev.name.ok_or_else(|| bad("missing event name"))?;
        check_event_name(&name, limits.max_event_name_length).map_err(|e| bad(e.to_string()))?;
        let data = match ev.data {
            Some(Value::String(s)) => s,
            // The SDKs always send a string; other JSON is accepted in its encoded form.
            Some(other) => other.to_string(),
            None => return Err(bad("missing event data")),
        };
        if data.len() > limits.max_event_payload_bytes {
            return Err(ApiError::TooLarge(format!(
                "event data is {} bytes; the limit is {}",
                data.len(),
                limits.max_event_payload_bytes
            )));
        }
        let names = match (ev.channels, ev.channel) {
            (Some(list), None) => list,
            (None, Some(one)) => vec![one],
            (Some(_), Some(_)) => return Err(bad("give either channels or channel, not both")),
            (None, None) => return Err(bad("missing channels")),
        };
        if names.is_empty() {
            return Err(bad("channels is empty"));
        }
        if names.len() > limits.max_channels_per_event {
            return Err(bad(format!(
                "more than {} channels in one event",
                limits.max_channels_per_event
            )));
        }
        let channels = names
            .iter()
            .map(|n| {
                ChannelName::parse(n, limits.max_channel_name_length)
                    .map_err(|e| bad(format!("channel {n:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if channels.len() > 1 && channels.iter().any(|c| c.kind() == ChannelKind::Encrypted) {
            return Err(bad(
                "cannot publish to several channels when one of them is encrypted",
            ));
        }
        let except = match ev.socket_id.as_deref() {
            None | Some("") => None,
            Some(s) if valid_socket_id(s) => Some(s.to_owned()),
            Some(s) => return Err(bad(format!("invalid socket_id {s:?}"))),
        };
        let info = parse_info(ev.info.as_deref());
        for i in &info {
            if i != "user_count" && i != "subscription_count" {
                return Err(bad(format!("unknown info attribute {i:?}")));
            }
        }
        Ok(Checked {
            name,
            data,
            channels,
            except,
            info,
        })
    }

    /// Subscription counts of the channels `kind` names, over the cluster when there is one.
    /// Presence user counts come from the roster every node replicates.
    async fn counts(&self, kind: QueryKind) -> HashMap<String, u32> {
        match self.cluster {
            Some(c) => c.query(self.app, kind).await.counts,
            None => local_answer(self.app, &kind),
        }
    }

    async fn publish(&self, ev: &Checked) -> Value {
        for channel in &ev.channels {
            self.app
                .publish(channel, &ev.name, &ev.data, ev.except.as_deref());
            Metrics::inc(&self.hub.metrics.http_events);
        }
        let counts = self.info_counts(std::slice::from_ref(ev)).await;
        self.info(ev, &counts)
    }

    /// Cluster-wide subscription counts for the non-presence channels of `evs` that asked for
    /// them: one query for all, so the wait is one timeout at most.
    async fn info_counts(&self, evs: &[Checked]) -> HashMap<String, u32> {
        let names: Vec<String> = evs
            .iter()
            .filter(|e| e.info.iter().any(|i| i == "subscription_count"))
            .flat_map(|e| &e.channels)
            .filter(|c| c.kind() != ChannelKind::Presence)
            .map(|c| c.as_str().to_owned())
            .collect();
        if names.is_empty() {
            return HashMap::new();
        }
        self.counts(QueryKind::Names { names }).await
    }

    /// The `info` attributes an event asked for, per channel.
    fn info(&self, ev: &Checked, counts: &HashMap<String, u32>) -> Value {
        if ev.info.is_empty() {
            return json!({});
        }
        let mut out = Map::new();
        for channel in &ev.channels {
            let name = channel.as_str();
            let mut attrs = Map::new();
            for i in &ev.info {
                match (i.as_str(), channel.kind()) {
                    ("user_count", ChannelKind::Presence) => {
                        attrs.insert(i.clone(), json!(self.app.registry.user_count(name)));
                    }
                    ("subscription_count", kind) if kind != ChannelKind::Presence => {
                        attrs.insert(i.clone(), json!(counts.get(name).copied().unwrap_or(0)));
                    }
                    _ => {}
                }
            }
            out.insert(name.to_owned(), Value::Object(attrs));
        }
        json!({ "channels": out })
    }

    pub async fn events(&self, body: &[u8]) -> Result<String, ApiError> {
        let ev: EventBody =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let checked = self.check(ev)?;
        Ok(self.publish(&checked).await.to_string())
    }

    /// Validates the whole batch before publishing any of it, so a bad entry publishes nothing.
    pub async fn batch_events(&self, body: &[u8]) -> Result<String, ApiError> {
        let b: BatchBody =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let max = self.app.config.limits.max_batch_events;
        if b.batch.len() > max {
            return Err(bad(format!("more than {max} events in one batch")));
        }
        if b.batch.iter().any(|e| e.channels.is_some()) {
            return Err(bad("batch events name one `channel` each, not `channels`"));
        }
        let checked = b
            .batch
            .into_iter()
            .map(|e| self.check(e))
            .collect::<Result<Vec<_>, _>>()?;
        let any_info = checked.iter().any(|c| !c.info.is_empty());
        // Consecutive events for the same channel (and the same excluded socket) go out as one
        // buffer, so each subscriber gets them in one write.
        let mut i = 0;
        while i < checked.len() {
            let head = &checked[i];
            let mut j = i + 1;
            while j < checked.len()
                && checked[j].channels == head.channels
                && checked[j].except == head.except
            {
                j += 1;
            }
            let events: Vec<(&str, &str)> = checked[i..j]
                .iter()
                .map(|c| (c.name.as_str(), c.data.as_str()))
                .collect();
            for channel in &head.channels {
                self.app
                    .publish_many(channel, &events, head.except.as_deref());
            }
            Metrics::add(
                &self.hub.metrics.http_events,
                ((j - i) * head.channels.len()) as u64,
            );
            i = j;
        }
        let counts = self.info_counts(&checked).await;
        let mut results = Vec::with_capacity(checked.len());
        for c in &checked {
            // Batch answers carry each event's attributes for its single channel.
            let info = self.info(c, &counts);
            results.push(
                match info
                    .get("channels")
                    .and_then(|m| m.as_object())
                    .and_then(|m| m.values().next())
                {
                    Some(attrs) => attrs.clone(),
                    None => json!({}),
                },
            );
        }
        Ok(if any_info {
            json!({ "batch": results })
        } else {
            json!({})
        }
        .to_string())
    }

    pub async fn channels(
        &self,
        prefix: Option<&str>,
        info: Option<&str>,
    ) -> Result<String, ApiError> {
        let prefix = prefix.unwrap_or("");
        let info = parse_info(info);
        let wants_users = info.iter().any(|i| i == "user_count");
        if wants_users && !prefix.starts_with("presence-") {
            return Err(bad("info=user_count needs filter_by_prefix=presence-"));
        }
        let counts = self
            .counts(QueryKind::Channels {
                prefix: prefix.to_owned(),
            })
            .await;
        let mut out = Map::new();
        for (name, subs) in counts {
            let mut attrs = Map::new();
            if wants_users {
                attrs.insert(
                    "user_count".into(),
                    json!(self.app.registry.user_count(&name)),
                );
            }
            if info.iter().any(|i| i == "subscription_count") {
                attrs.insert("subscription_count".into(), json!(subs));
            }
            out.insert(name, Value::Object(attrs));
        }
        Ok(json!({ "channels": out }).to_string())
    }

    pub async fn channel(&self, name: &str, info: Option<&str>) -> Result<String, ApiError> {
        let channel = ChannelName::parse(name, self.app.config.limits.max_channel_name_length)
            .map_err(|e| bad(format!("channel {name:?}: {e}")))?;
        let info = parse_info(info);
        for i in &info {
            match i.as_str() {
                "user_count" if channel.kind() != ChannelKind::Presence => {
                    return Err(bad("user_count is only available for presence channels"))
                }
                "cache" if !channel.is_cache() => {
                    return Err(bad("cache is only available for cache channels"))
                }
                "user_count" | "subscription_count" | "cache" => {}
                other => return Err(bad(format!("unknown info attribute {other:?}"))),
            }
        }
        let subs = self
            .counts(QueryKind::Channel {
                name: name.to_owned(),
            })
            .await
            .get(name)
            .copied()
            .unwrap_or(0);
        let mut out = Map::new();
        // The replica knows occupancy even when a slow node's count is missing.
        out.insert(
            "occupied".into(),
            json!(subs > 0 || self.app.registry.occupied_anywhere(name)),
        );
        for i in &info {
            match i.as_str() {
                "user_count" => {
                    out.insert(i.clone(), json!(self.app.registry.user_count(name)));
                }
                "subscription_count" => {
                    out.insert(i.clone(), json!(subs));
                }
                _ => {
                    if let Some((cached, ttl)) = self.app.cache.get(name) {
                        out.insert("cache".into(), json!({"data": cached.data, "ttl": ttl}));
                    }
                }
            }
        }
        Ok(Value::Object(out).to_string())
    }

    pub fn users(&self, name: &str) -> Result<String, ApiError> {
        let channel = ChannelName::parse(name, self.app.config.limits.max_channel_name_length)
            .map_err(|e| bad(format!("channel {name:?}: {e}")))?;
        if channel.kind() != ChannelKind::Presence {
            return Err(bad("users are only available for presence channels"));
        }
        let users: Vec<Value> = self
            .app
            .registry
            .members(name)
            .into_iter()
            .map(|id| json!({"id": id}))
            .collect();
        Ok(json!({ "users": users }).to_string())
    }

    pub fn terminate(&self, user: &str) -> Result<String, ApiError> {
        if user.is_empty() {
            return Err(bad("user id is empty"));
        }
        self.app.terminate_user(user);
        if let Some(c) = self.cluster {
            c.terminate(&self.app.config.id, user);
        }
        Ok("{}".into())
    }
}
