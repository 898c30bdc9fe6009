//! Channel and event names: what kind of channel a name denotes and which names are legal.
//!
//! The kind is decided by prefix once, when a name enters the server, so the rest of the
//! code branches on `ChannelKind` rather than re-reading prefixes.

use std::fmt;

/// Prefix of the per-user channel that only a socket signed in as that user may join.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// The access rules a channel follows, decided by its name's prefix (protocol summary §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Public,
    Private,
    /// `private-encrypted-`: authorised like private, payload relayed opaquely, no client events.
    Encrypted,
    Presence,
    /// `#server-to-user-{id}`: joinable only by a socket signed in as `{id}`.
    ServerToUser,
}

impl ChannelKind {
    /// Whether a subscription needs an HMAC `auth` string.
    pub fn needs_auth(self) -> bool {
        matches!(self, Self::Private | Self::Encrypted | Self::Presence)
    }

    /// Whether clients may send `client-` events on the channel.
    pub fn allows_client_events(self) -> bool {
        matches!(self, Self::Private | Self::Presence)
    }
}

/// A validated channel name together with its kind and whether it is a cache channel.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    name: Box<str>,
    kind: ChannelKind,
    cache: bool,
}

/// Why a channel or event name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {max} characters")]
    TooLong { max: usize },
    #[error("channel name contains a character outside A-Z a-z 0-9 _ - = @ , . ;")]
    BadCharacter,
    #[error("channel names starting with '#' are reserved")]
    Reserved,
    #[error("event name is empty")]
    EmptyEvent,
    #[error("event name is longer than {max} characters")]
    EventTooLong { max: usize },
}

fn legal_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

impl ChannelName {
    /// Parses a name chosen by a client or an HTTP caller.
    ///
    /// `#server-to-user-{id}` is accepted (pusher-js subscribes to it after signin and the
    /// server SDKs publish to it); any other `#` name is reserved.
    pub fn parse(name: &str, max_len: usize) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > max_len {
            return Err(NameError::TooLong { max: max_len });
        }
        if let Some(user) = name.strip_prefix(SERVER_TO_USER_PREFIX) {
            if user.is_empty() || !user.bytes().all(legal_char) {
                return Err(NameError::BadCharacter);
            }
            return Ok(Self {
                name: name.into(),
                kind: ChannelKind::ServerToUser,
                cache: false,
            });
        }
        if name.starts_with('#') {
            return Err(NameError::Reserved);
        }
        if !name.bytes().all(legal_char) {
            return Err(NameError::BadCharacter);
        }
        let (kind, cache) = classify(name);
        Ok(Self {
            name: name.into(),
            kind,
            cache,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Whether the server keeps the last HTTP-published event for late subscribers.
    pub fn is_cache(&self) -> bool {
        self.cache
    }

    /// The user id of a `#server-to-user-` channel.
    pub fn server_to_user_id(&self) -> Option<&str> {
        self.name.strip_prefix(SERVER_TO_USER_PREFIX)
    }
}

/// Prefix precedence matters: `private-encrypted-` before `private-` (summary §5.1).
fn classify(name: &str) -> (ChannelKind, bool) {
    const TABLE: &[(&str, ChannelKind, bool)] = &[
        ("private-encrypted-cache-", ChannelKind::Encrypted, true),
        ("private-encrypted-", ChannelKind::Encrypted, false),
        ("private-cache-", ChannelKind::Private, true),
        ("private-", ChannelKind::Private, false),
        ("presence-cache-", ChannelKind::Presence, true),
        ("presence-", ChannelKind::Presence, false),
        ("cache-", ChannelKind::Public, true),
    ];
    TABLE
        .iter()
        .find(|(prefix, _, _)| name.starts_with(prefix))
        .map(|&(_, kind, cache)| (kind, cache))
        .unwrap_or((ChannelKind::Public, false))
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Checks an event name's length; event names are otherwise free-form.
pub fn check_event_name(name: &str, max_len: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyEvent);
    }
    if name.len() > max_len {
        return Err(NameError::EventTooLong { max: max_len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_prefix_precedence() {
        let kind = |n: &str| ChannelName::parse(n, 200).unwrap();
        assert_eq!(kind("news").kind(), ChannelKind::Public);
        assert_eq!(kind("private-x").kind(), ChannelKind::Private);
        assert_eq!(kind("private-encrypted-x").kind(), ChannelKind::Encrypted);
        assert_eq!(kind("presence-x").kind(), ChannelKind::Presence);
        assert!(kind("cache-x").is_cache());
        assert!(kind("private-encrypted-cache-x").is_cache());
        assert_eq!(
            kind("presence-cache-x").kind(),
            ChannelKind::Presence,
            "cache variant keeps its base kind"
        );
        assert!(!kind("private-x").is_cache());
        assert_eq!(kind("#server-to-user-42").server_to_user_id(), Some("42"));
    }

    #[test]
    fn illegal_names_are_refused() {
        assert_eq!(ChannelName::parse("", 200), Err(NameError::Empty));
        assert_eq!(ChannelName::parse("a b", 200), Err(NameError::BadCharacter));
        assert_eq!(ChannelName::parse("#x", 200), Err(NameError::Reserved));
        assert_eq!(
            ChannelName::parse(&"a".repeat(201), 200),
            Err(NameError::TooLong { max: 200 })
        );
        assert!(ChannelName::parse("A-z_0=@,.;", 200).is_ok());
    }
}
