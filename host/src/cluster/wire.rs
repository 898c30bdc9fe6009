//! The cluster's envelope and message encoding: a fixed header (origin node, epoch, sequence)
//! and a length-prefixed binary body. Hand-rolled because it is small, has no dependency, and
//! never allocates more than the message itself.

use bytes::{BufMut, Bytes, BytesMut};

/// First byte of every envelope; a message from something else is refused, not misread.
const MAGIC: u8 = 0x53; // 'S'
/// Bumped when the encoding changes incompatibly; receivers refuse other versions.
const VERSION: u8 = 1;
/// magic, version, kind, origin, epoch, seq.
pub const HEADER_LEN: usize = 3 + 4 + 4 + 8;

/// Who sent a message and where it stands in that sender's stream on its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub origin: u32,
    /// Changes when the origin resets its sequence counters; receivers then start afresh.
    pub epoch: u32,
    /// Per (origin, topic), from 1, with no holes unless messages were lost.
    pub seq: u64,
}

/// One presence channel's roster as a node holds it locally, in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    pub channel: String,
    /// Sockets subscribed on the node.
    pub subscribers: u32,
    /// `(user_id, user_info JSON)`; empty for channels that are not presence channels.
    pub members: Vec<(String, String)>,
}

/// What a query asks each node about one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKind {
    /// Occupied channels whose names start with the prefix.
    Channels { prefix: String },
    /// One channel.
    Channel { name: String },
    /// Several channels by name (the `info` of a publish to many channels).
    Names { names: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Frames for one channel, each a complete Pusher message as JSON text.
    Event {
        app: String,
        channel: String,
        messages: Vec<String>,
        /// Socket id (`node.conn`) not to deliver to; empty for none.
        except: String,
        /// The last event's `data`, for cache channels.
        cache: Option<String>,
    },
    /// I am alive. `hello` asks peers to answer at once (a node that just started).
    Heartbeat { hello: bool },
    /// Leaving on purpose: drop my state now instead of waiting for the timeout.
    Goodbye,
    /// A user's first socket on the origin joined a presence channel.
    MemberJoined {
        app: String,
        channel: String,
        user: String,
        info: String,
    },
    /// A user's last socket on the origin left a presence channel.
    MemberLeft {
        app: String,
        channel: String,
        user: String,
    },
    /// The origin's first local subscriber joined the channel.
    Occupied { app: String, channel: String },
    /// The origin's last local subscriber left the channel.
    Vacated { app: String, channel: String },
    /// The origin's subscriber count of a channel changed (apps with subscription counting).
    Count {
        app: String,
        channel: String,
        count: u32,
    },
    /// Everything the origin holds for one app, in one or more chunks (`first` .. `last`):
    /// replaces what receivers knew of it once the last chunk arrives. A channel may span
    /// chunks; its members are the union.
    Snapshot {
        app: String,
        first: bool,
        last: bool,
        channels: Vec<ChannelSnapshot>,
        /// Users signed in on the origin (watchlists).
        users: Vec<String>,
    },
    /// A user's first socket on the origin signed in.
    UserOnline { app: String, user: String },
    /// A user's last socket on the origin signed out.
    UserOffline { app: String, user: String },
    /// Asks `target` to publish its snapshots (after a gap, or on first contact).
    SnapshotRequest { target: u32 },
    /// Close every connection of `user`.
    Terminate { app: String, user: String },
    Query {
        id: u64,
        app: String,
        kind: QueryKind,
    },
    /// One node's answer: `(channel, local subscription count)`.
    Reply {
        id: u64,
        channels: Vec<(String, u32)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a cluster message (bad magic byte)")]
    Magic,
    #[error("unsupported cluster message version {0}")]
    Version(u8),
    #[error("unknown cluster message kind {0}")]
    Kind(u8),
    #[error("truncated cluster message")]
    Truncated,
    #[error("cluster message text is not UTF-8")]
    Utf8,
    #[error("trailing bytes after a cluster message")]
    Trailing,
}

/// Whether `payload` is one of `node`'s own messages that only matters to others (anything
/// but a heartbeat, whose echo is how a node knows the backplane carries it). Reads the
/// header only.
pub fn is_own_echo(payload: &[u8], node: u32) -> bool {
    payload.len() >= HEADER_LEN
        && payload[0] == MAGIC
        && payload[1] == VERSION
        && payload[2] != 2
        && payload[3..7] == node.to_be_bytes()
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Self::Event { .. } => 1,
            Self::Heartbeat { .. } => 2,
            Self::Goodbye => 3,
            Self::MemberJoined { .. } => 4,
            Self::MemberLeft { .. } => 5,
            Self::Occupied { .. } => 6,
            Self::Vacated { .. } => 7,
            Self::Snapshot { .. } => 8,
            Self::SnapshotRequest { .. } => 9,
            Self::Terminate { .. } => 10,
            Self::Query { .. } => 11,
            Self::Reply { .. } => 12,
            Self::Count { .. } => 13,
            Self::UserOnline { .. } => 14,
            Self::UserOffline { .. } => 15,
        }
    }

    pub fn encode(&self, h: Header) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + 64);
        b.put_u8(MAGIC);
        b.put_u8(VERSION);
        b.put_u8(self.kind());
        b.put_u32(h.origin);
        b.put_u32(h.epoch);
        b.put_u64(h.seq);
        match self {
            Self::Event {
                app,
                channel,
                messages,
                except,
                cache,
            } => {
                put_str(&mut b, app);
                put_str(&mut b, channel);
                put_strs(&mut b, messages);
                put_str(&mut b, except);
                match cache {
                    Some(c) => {
                        b.put_u8(1);
                        put_str(&mut b, c);
                    }
                    None => b.put_u8(0),
                }
            }
            Self::Heartbeat { hello } => b.put_u8(u8::from(*hello)),
            Self::Goodbye => {}
            Self::MemberJoined {
                app,
                channel,
                user,
                info,
            } => {
                for s in [app, channel, user, info] {
                    put_str(&mut b, s);
                }
            }
            Self::MemberLeft { app, channel, user } => {
                for s in [app, channel, user] {
                    put_str(&mut b, s);
                }
            }
            Self::Occupied { app, channel } | Self::Vacated { app, channel } => {
                put_str(&mut b, app);
                put_str(&mut b, channel);
            }
            Self::Snapshot {
                app,
                first,
                last,
                channels,
                users,
            } => {
                put_str(&mut b, app);
                b.put_u8(u8::from(*first) | (u8::from(*last) << 1));
                b.put_u32(channels.len() as u32);
                for c in channels {
                    put_str(&mut b, &c.channel);
                    b.put_u32(c.subscribers);
                    b.put_u32(c.members.len() as u32);
                    for (user, info) in &c.members {
                        put_str(&mut b, user);
                        put_str(&mut b, info);
                    }
                }
                put_strs(&mut b, users);
            }
            Self::SnapshotRequest { target } => b.put_u32(*target),
            Self::UserOnline { app, user } | Self::UserOffline { app, user } => {
                put_str(&mut b, app);
                put_str(&mut b, user);
            }
            Self::Count {
                app,
                channel,
                count,
            } => {
                put_str(&mut b, app);
                put_str(&mut b, channel);
                b.put_u32(*count);
            }
            Self::Terminate { app, user } => {
                put_str(&mut b, app);
                put_str(&mut b, user);
            }
            Self::Query { id, app, kind } => {
                b.put_u64(*id);
                put_str(&mut b, app);
                match kind {
                    QueryKind::Channels { prefix } => {
                        b.put_u8(0);
                        put_str(&mut b, prefix);
                    }
                    QueryKind::Channel { name } => {
                        b.put_u8(1);
                        put_str(&mut b, name);
                    }
                    QueryKind::Names { names } => {
                        b.put_u8(2);
                        put_strs(&mut b, names);
                    }
                }
            }
            Self::Reply { id, channels } => {
                b.put_u64(*id);
                b.put_u32(channels.len() as u32);
                for (name, n) in channels {
                    put_str(&mut b, name);
                    b.put_u32(*n);
                }
            }
        }
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<(Header, Message), DecodeError> {
        let mut r = Reader(bytes);
        if r.u8()? != MAGIC {
            return Err(DecodeError::Magic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = r.u8()?;
        let h = Header {
            origin: r.u32()?,
            epoch: r.u32()?,
            seq: r.u64()?,
        };
        let msg = match kind {
            1 => {
                let app = r.string()?;
                let channel = r.string()?;
                let messages = r.list(Reader::string)?;
                let except = r.string()?;
                let cache = match r.u8()? {
                    0 => None,
                    _ => Some(r.string()?),
                };
                Self::Event {
                    app,
                    channel,
                    messages,
                    except,
                    cache,
                }
            }
            2 => Self::Heartbeat {
                hello: r.u8()? != 0,
            },
            3 => Self::Goodbye,
            4 => Self::MemberJoined {
                app: r.string()?,
                channel: r.string()?,
                user: r.string()?,
                info: r.string()?,
            },
            5 => Self::MemberLeft {
                app: r.string()?,
                channel: r.string()?,
                user: r.string()?,
            },
            6 => Self::Occupied {
                app: r.string()?,
                channel: r.string()?,
            },
            7 => Self::Vacated {
                app: r.string()?,
                channel: r.string()?,
            },
            8 => {
                let app = r.string()?;
                let flags = r.u8()?;
                let channels = r.list(|r| {
                    Ok(ChannelSnapshot {
                        channel: r.string()?,
                        subscribers: r.u32()?,
                        members: r.list(|r| Ok((r.string()?, r.string()?)))?,
                    })
                })?;
                let users = r.list(Reader::string)?;
                Self::Snapshot {
                    app,
                    first: flags & 1 != 0,
                    last: flags & 2 != 0,
                    channels,
                    users,
                }
            }
            9 => Self::SnapshotRequest { target: r.u32()? },
            10 => Self::Terminate {
                app: r.string()?,
                user: r.string()?,
            },
            11 => {
                let id = r.u64()?;
                let app = r.string()?;
                let kind = match r.u8()? {
                    0 => QueryKind::Channels {
                        prefix: r.string()?,
                    },
                    1 => QueryKind::Channel { name: r.string()? },
                    2 => QueryKind::Names {
                        names: r.list(Reader::string)?,
                    },
                    other => return Err(DecodeError::Kind(other)),
                };
                Self::Query { id, app, kind }
            }
            12 => Self::Reply {
                id: r.u64()?,
                channels: r.list(|r| Ok((r.string()?, r.u32()?)))?,
            },
            13 => Self::Count {
                app: r.string()?,
                channel: r.string()?,
                count: r.u32()?,
            },
            14 => Self::UserOnline {
                app: r.string()?,
                user: r.string()?,
            },
            15 => Self::UserOffline {
                app: r.string()?,
                user: r.string()?,
            },
            other => return Err(DecodeError::Kind(other)),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok((h, msg))
    }
}

fn put_strs(b: &mut BytesMut, list: &[String]) {
    b.put_u32(list.len() as u32);
    for s in list {
        put_str(b, s);
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32(s.len() as u32);
    b.put_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A counted list. The count is checked against the bytes left so a forged one cannot
    /// make us reserve gigabytes (every element takes at least 4 bytes).
    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 4 {
            return Err(DecodeError::Truncated);
        }
        (0..n).map(|_| item(self)).collect()
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Event {
                app: "a".into(),
                channel: "presence-x".into(),
                messages: vec!["{\"event\":\"e\"}".into(), "{}".into()],
                except: "1.2".into(),
                cache: Some("d".into()),
            },
            Message::Heartbeat { hello: true },
            Message::Goodbye,
            Message::MemberJoined {
                app: "a".into(),
                channel: "presence-x".into(),
                user: "u".into(),
                info: "{\"n\":1}".into(),
            },
            Message::MemberLeft {
                app: "a".into(),
                channel: "c".into(),
                user: "ü".into(),
            },
            Message::Occupied {
                app: "a".into(),
                channel: "c".into(),
            },
            Message::Vacated {
                app: "a".into(),
                channel: "c".into(),
            },
            Message::Snapshot {
                app: "a".into(),
                first: true,
                last: false,
                channels: vec![ChannelSnapshot {
                    channel: "presence-x".into(),
                    subscribers: 2,
                    members: vec![("u".into(), "null".into())],
                }],
                users: vec!["u".into()],
            },
            Message::SnapshotRequest { target: 7 },
            Message::UserOnline {
                app: "a".into(),
                user: "u".into(),
            },
            Message::UserOffline {
                app: "a".into(),
                user: "u".into(),
            },
            Message::Count {
                app: "a".into(),
                channel: "c".into(),
                count: 4,
            },
            Message::Terminate {
                app: "a".into(),
                user: "u".into(),
            },
            Message::Query {
                id: 9,
                app: "a".into(),
                kind: QueryKind::Channels {
                    prefix: "presence-".into(),
                },
            },
            Message::Query {
                id: 9,
                app: "a".into(),
                kind: QueryKind::Channel { name: "c".into() },
            },
            Message::Query {
                id: 9,
                app: "a".into(),
                kind: QueryKind::Names {
                    names: vec!["c".into(), "d".into()],
                },
            },
            Message::Reply {
                id: 9,
                channels: vec![("c".into(), 3)],
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let h = Header {
            origin: 42,
            epoch: 3,
            seq: 1 << 40,
        };
        for m in samples() {
            let bytes = m.encode(h);
            assert_eq!(Message::decode(&bytes), Ok((h, m)));
        }
    }

    #[test]
    fn own_echoes_are_recognised_from_the_header_but_heartbeats_pass() {
        let h = Header {
            origin: 7,
            epoch: 1,
            seq: 1,
        };
        let event = samples().remove(0).encode(h);
        assert!(is_own_echo(&event, 7));
        assert!(!is_own_echo(&event, 8));
        assert!(!is_own_echo(
            &Message::Heartbeat { hello: false }.encode(h),
            7
        ));
        assert!(!is_own_echo(b"short", 7));
    }

    #[test]
    fn every_truncation_and_foreign_bytes_are_refused() {
        let h = Header {
            origin: 1,
            epoch: 1,
            seq: 1,
        };
        for m in samples() {
            let bytes = m.encode(h);
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert_eq!(Message::decode(&longer), Err(DecodeError::Trailing));
        }
        assert_eq!(Message::decode(b"hello"), Err(DecodeError::Magic));
        assert_eq!(
            Message::decode(&[MAGIC, 9, 1]),
            Err(DecodeError::Version(9))
        );
    }
}
