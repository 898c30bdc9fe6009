//! Wire messages: parsing what clients send and encoding what the server sends.
//!
//! Server→client `data` is a JSON-encoded string for everything but `pusher:error`, to match
//! Pusher byte for byte (summary §2). Client-event `data` is relayed with its original JSON
//! type and bytes, so it is carried as raw JSON text end to end.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A message from a client, validated for shape but not yet for permissions.
#[derive(Debug)]
pub enum ClientMessage {
    Ping,
    Pong,
    Subscribe(Subscribe),
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    /// A `client-` event; `data` is the raw JSON text the client sent.
    ClientEvent {
        event: String,
        channel: String,
        data: Box<RawValue>,
    },
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct Subscribe {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub channel_data: Option<String>,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// Why a client frame could not be understood. Each becomes a `pusher:error` without a close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is not a JSON object with a string 'event': {0}")]
    InvalidJson(String),
    #[error("unsupported event '{0}'")]
    UnknownEvent(String),
    #[error("invalid data for '{event}': {reason}")]
    BadData { event: &'static str, reason: String },
    #[error("client event needs a 'channel'")]
    MissingChannel,
}

/// `data` of a `pusher:` event is normally an object; some clients send it as a JSON string.
fn decode_data<'de, T: Deserialize<'de>>(
    event: &'static str,
    data: &'de Option<Box<RawValue>>,
) -> Result<T, ProtocolError> {
    let bad = |reason: String| ProtocolError::BadData { event, reason };
    let raw = data.as_deref().ok_or_else(|| bad("missing".into()))?;
    if raw.get().starts_with('"') {
        let inner: String = serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))?;
        // The inner string must outlive the borrow, so decode into an owned value first.
        let value: serde_json::Value =
            serde_json::from_str(&inner).map_err(|e| bad(e.to_string()))?;
        return T::deserialize(value).map_err(|e| bad(e.to_string()));
    }
    serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))
}

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let env: Envelope =
            serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
        match env.event.as_str() {
            "pusher:ping" => Ok(Self::Ping),
            "pusher:pong" => Ok(Self::Pong),
            "pusher:subscribe" => Ok(Self::Subscribe(decode_data("pusher:subscribe", &env.data)?)),
            "pusher:unsubscribe" => {
                let d: UnsubscribeData = decode_data("pusher:unsubscribe", &env.data)?;
                Ok(Self::Unsubscribe { channel: d.channel })
            }
            "pusher:signin" => {
                let d: SigninData = decode_data("pusher:signin", &env.data)?;
                Ok(Self::Signin {
                    auth: d.auth,
                    user_data: d.user_data,
                })
            }
            name if name.starts_with("client-") => {
                let channel = env.channel.ok_or(ProtocolError::MissingChannel)?;
                let data = env
                    .data
                    .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid"));
                Ok(Self::ClientEvent {
                    event: env.event,
                    channel,
                    data,
                })
            }
            _ => Err(ProtocolError::UnknownEvent(truncate(&env.event, 64))),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Encodes `{"event":..,"channel":..,"data":<data_json>,"user_id":..}`.
///
/// `data_json` is JSON text already: a string literal for server events, or the raw value a
/// client sent for client events.
pub fn envelope(
    event: &str,
    channel: Option<&str>,
    data_json: &str,
    user_id: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + event.len() + data_json.len());
    out.extend_from_slice(b"{\"event\":");
    push_json_str(&mut out, event);
    if let Some(channel) = channel {
        out.extend_from_slice(b",\"channel\":");
        push_json_str(&mut out, channel);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data_json.as_bytes());
    if let Some(user_id) = user_id {
        out.extend_from_slice(b",\"user_id\":");
        push_json_str(&mut out, user_id);
    }
    out.push(b'}');
    out
}

/// Encodes a server event whose `data` is a string (the double-encoded form).
pub fn string_event(event: &str, channel: Option<&str>, data: &str) -> Vec<u8> {
    envelope(event, channel, &json_string(data), None)
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serialises")
}

pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> Vec<u8> {
    let data =
        serde_json::json!({"socket_id": socket_id, "activity_timeout": activity_timeout_secs});
    string_event("pusher:connection_established", None, &data.to_string())
}

/// `pusher:error` carries its data as an object (summary §2), with `code` null when generic.
pub fn error(message: &str, code: Option<u16>) -> Vec<u8> {
    let data = serde_json::json!({"message": message, "code": code});
    envelope("pusher:error", None, &data.to_string(), None)
}

pub fn pong() -> Vec<u8> {
    envelope("pusher:pong", None, "{}", None)
}

pub fn ping() -> Vec<u8> {
    envelope("pusher:ping", None, "{}", None)
}

pub fn subscription_succeeded(channel: &str, data: &str) -> Vec<u8> {
    string_event(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
    )
}

/// Soketi-style channel-scoped failure that pusher-js passes to the channel's bindings.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> Vec<u8> {
    let data = serde_json::json!({"type": kind, "error": error, "status": status});
    envelope(
        "pusher:subscription_error",
        Some(channel),
        &data.to_string(),
        None,
    )
}

pub fn member_added(channel: &str, user_id: &str, user_info_json: &str) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(b"{\"user_id\":");
    push_json_str(&mut data, user_id);
    data.extend_from_slice(b",\"user_info\":");
    data.extend_from_slice(user_info_json.as_bytes());
    data.push(b'}');
    string_event(
        "pusher_internal:member_added",
        Some(channel),
        std::str::from_utf8(&data).expect("built from str"),
    )
}

pub fn member_removed(channel: &str, user_id: &str) -> Vec<u8> {
    let data = serde_json::json!({"user_id": user_id});
    string_event(
        "pusher_internal:member_removed",
        Some(channel),
        &data.to_string(),
    )
}

pub fn cache_miss(channel: &str) -> Vec<u8> {
    envelope("pusher:cache_miss", Some(channel), "\"{}\"", None)
}

pub fn signin_success(user_data: &str) -> Vec<u8> {
    let data = serde_json::json!({"user_data": user_data});
    string_event("pusher:signin_success", None, &data.to_string())
}

pub fn subscription_count(channel: &str, count: usize) -> Vec<u8> {
    let data = serde_json::json!({"subscription_count": count});
    string_event(
        "pusher_internal:subscription_count",
        Some(channel),
        &data.to_string(),
    )
}

/// `pusher_internal:watchlist_events`; pusher-js reads `data.events` after decoding.
pub fn watchlist_events(online: &[&str], offline: &[&str]) -> Vec<u8> {
    let mut events = Vec::new();
    if !online.is_empty() {
        events.push(serde_json::json!({"name": "online", "user_ids": online}));
    }
    if !offline.is_empty() {
        events.push(serde_json::json!({"name": "offline", "user_ids": offline}));
    }
    let data = serde_json::json!({ "events": events });
    string_event("pusher_internal:watchlist_events", None, &data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subscribe_with_object_or_string_data() {
        let m = ClientMessage::parse(
            r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"news"}}"#,
        )
        .unwrap();
        match m {
            ClientMessage::Subscribe(s) => assert_eq!(
                s,
                Subscribe {
                    channel: "news".into(),
                    auth: Some(String::new()),
                    channel_data: None
                }
            ),
            other => panic!("{other:?}"),
        }
        let m =
            ClientMessage::parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"news\"}"}"#)
                .unwrap();
        assert!(matches!(m, ClientMessage::Subscribe(s) if s.channel == "news"));
    }

    #[test]
    fn client_event_data_keeps_its_bytes() {
        let m = ClientMessage::parse(
            r#"{"event":"client-x","channel":"private-a","data":{"b": 1 ,"a":[2]}}"#,
        )
        .unwrap();
        match m {
            ClientMessage::ClientEvent { data, .. } => {
                assert_eq!(data.get(), r#"{"b": 1 ,"a":[2]}"#)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"event":5}"#,
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":{"channel":7}}"#,
            r#"{"event":"pusher:subscribe","data":"not json"}"#,
            r#"{"event":"client-x","data":{}}"#,
            r#"{"event":"pusher:bogus","data":{}}"#,
            r#"{"event":"my-event","data":{}}"#,
        ] {
            assert!(ClientMessage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_events_double_encode_data() {
        let out = string_event("e", Some("c"), r#"{"a":"b"}"#);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"event":"e","channel":"c","data":"{\"a\":\"b\"}"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&connection_established("1.2", 120)).unwrap();
        let inner: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(inner["socket_id"], "1.2");
        assert_eq!(inner["activity_timeout"], 120);
    }
}
