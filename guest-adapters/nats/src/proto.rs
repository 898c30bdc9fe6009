//! The NATS core client protocol, sans-IO: topic <-> subject mapping, encoders for what the
//! adapter sends (CONNECT, PUB, SUB, UNSUB, PING, PONG) and an incremental parser for what the
//! server sends (INFO, MSG, PING, PONG, +OK, -ERR). Nothing here does I/O.

use serde::{Deserialize, Serialize};

/// `PING` and `PONG` have no arguments; both sides send them.
pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// nats-server's `max_payload` when INFO does not say (its default, 1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Longest subject the adapter sends. The server's default `max_control_line` is 4096 bytes and
/// a longer `PUB`/`SUB` line makes it close the connection, taking every topic down with it;
/// refusing the one topic is better. The slack leaves room for the verb, sid and byte count.
pub const MAX_SUBJECT: usize = 4096 - 64;

/// Bounds on what the parser accepts from the network. INFO lines grow with the cluster's
/// `connect_urls`, so the line bound is generous; 64 MiB is nats-server's hard payload limit.
const MAX_LINE: usize = 1 << 20;
const MAX_MSG_PAYLOAD: usize = 64 << 20;

// ---- topics and subjects ------------------------------------------------------------------

/// Bytes a subject token carries as they are. Everything else, `%` included, becomes `%XX`:
/// `.` separates tokens, `*` and `>` are wildcards, whitespace ends the subject.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b';' | b':' | b'#')
}

/// Appends `topic` as exactly one subject token.
pub fn escape_topic(out: &mut String, topic: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in topic.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
}

/// The topic a token produced by [`escape_topic`] stands for. `None` for anything
/// `escape_topic` cannot have produced (a raw `.`, lowercase or short escapes, an escaped plain
/// byte, invalid UTF-8), so the mapping stays one-to-one.
pub fn unescape_token(token: &[u8]) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(token.len());
    let mut i = 0;
    while i < token.len() {
        let b = token[i];
        if b == b'%' {
            let (hi, lo) = (token.get(i + 1).copied()?, token.get(i + 2).copied()?);
            let byte = (hex(hi)? << 4) | hex(lo)?;
            if is_plain(byte) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else if is_plain(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// `<prefix>.<escaped topic>`.
pub fn subject(prefix: &str, topic: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 1 + topic.len() + 8);
    s.push_str(prefix);
    s.push('.');
    escape_topic(&mut s, topic);
    s
}

/// The topic of a subject under `prefix`, or `None` when the subject is not one of ours.
pub fn topic_of(prefix: &str, subject: &[u8]) -> Option<String> {
    let token = subject
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(b".")?;
    unescape_token(token)
}

/// Checks a configured subject prefix: one or more non-empty tokens joined by `.`, printable
/// ASCII only, no wildcards, no trailing `.` (the adapter adds the separator).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("prefix must not be empty".into());
    }
    if prefix.ends_with('.') {
        return Err(format!(
            "prefix {prefix:?} must not end with '.': the adapter adds the separator itself"
        ));
    }
    if prefix.split('.').any(str::is_empty) {
        return Err(format!(
            "prefix {prefix:?} has an empty subject token (a leading '.' or \"..\")"
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '*' | '>'))
    {
        return Err(format!(
            "prefix {prefix:?} contains {c:?}: a subject prefix takes printable ASCII without \
             whitespace or the wildcards '*' and '>'"
        ));
    }
    if prefix.len() > MAX_SUBJECT / 2 {
        return Err(format!(
            "prefix is {} bytes long; at most {} leaves room for topics",
            prefix.len(),
            MAX_SUBJECT / 2
        ));
    }
    Ok(())
}

// ---- what the client sends ----------------------------------------------------------------

/// Credentials for CONNECT: a token, or a user and password (the config refuses both).
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth<'a> {
    pub token: Option<&'a str>,
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
}

#[derive(Serialize)]
struct Connect<'a> {
    verbose: bool,
    pedantic: bool,
    echo: bool,
    tls_required: bool,
    lang: &'a str,
    version: &'a str,
    protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
}

/// `CONNECT {...}`. `echo` is always true: the host listens for its own heartbeats coming back
/// through the broker to tell whether this node is cut off. `verbose` is off, so the server
/// sends no `+OK` per command. `protocol: 1` lets the server send INFO updates at any time,
/// which the parser handles.
pub fn encode_connect(out: &mut Vec<u8>, name: Option<&str>, auth: Auth<'_>) {
    let c = Connect {
        verbose: false,
        pedantic: false,
        echo: true,
        tls_required: false,
        lang: "rust",
        version: env!("CARGO_PKG_VERSION"),
        protocol: 1,
        name,
        auth_token: auth.token,
        user: auth.user,
        pass: auth.pass,
    };
    out.extend_from_slice(b"CONNECT ");
    // Serializing plain strings and bools cannot fail.
    serde_json::to_writer(&mut *out, &c).expect("CONNECT is serializable");
    out.extend_from_slice(b"\r\n");
}

/// `PUB <subject> <#bytes>\r\n<payload>\r\n`.
pub fn encode_pub(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_u64(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `SUB <subject> <sid>`. No queue group: every node must see every message.
pub fn encode_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_u64(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// `UNSUB <sid>`.
pub fn encode_unsub(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB ");
    push_u64(out, sid);
    out.extend_from_slice(b"\r\n");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

// ---- what the server sends ----------------------------------------------------------------

/// The parts of the server's INFO the adapter uses; other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Info {
    pub server_id: String,
    pub version: String,
    pub max_payload: Option<u64>,
    pub auth_required: bool,
    pub tls_required: bool,
}

impl Info {
    /// The largest payload the server accepts in one PUB.
    pub fn max_payload(&self) -> usize {
        self.max_payload.map_or(DEFAULT_MAX_PAYLOAD, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }
}

/// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: Vec<u8>,
    pub sid: u64,
    pub reply_to: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// One server operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Info(Info),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    /// `-ERR '<message>'`, quotes removed.
    Err(String),
}

/// The bytes are not the NATS protocol; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(why: impl Into<String>) -> ParseError {
    ParseError(why.into())
}

/// Whether the server closes the connection after this `-ERR`. Per the protocol docs only
/// permission violations and invalid subjects leave it open; anything else ends it.
pub fn is_fatal_err(message: &str) -> bool {
    let m = message.trim().to_ascii_lowercase();
    !(m.starts_with("permissions violation") || m.starts_with("invalid subject"))
}

/// Accumulates bytes from one connection and yields whole operations. A MSG payload is taken
/// by its byte count, so it may hold anything, `\r\n` included.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already parsed; dropped on the next `feed`.
    pos: usize,
}

impl Parser {
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Bytes received and not yet parsed.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete operation, `Ok(None)` when more bytes are needed.
    pub fn next_op(&mut self) -> Result<Option<Op>, ParseError> {
        let rest = &self.buf[self.pos..];
        // Scanning is bounded so that a peer that never ends its line costs O(MAX_LINE).
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some(eol) = window.windows(2).position(|w| w == b"\r\n") else {
            if rest.len() > MAX_LINE {
                return Err(invalid("control line too long"));
            }
            return Ok(None);
        };
        let line = &rest[..eol];
        let body_at = eol + 2;
        let (verb, args) = split_verb(line);
        let (op, used) = if verb.eq_ignore_ascii_case(b"MSG") {
            match parse_msg(args, &rest[body_at..])? {
                Some((msg, n)) => (Op::Msg(msg), body_at + n),
                None => return Ok(None),
            }
        } else if verb.eq_ignore_ascii_case(b"PING") {
            (Op::Ping, body_at)
        } else if verb.eq_ignore_ascii_case(b"PONG") {
            (Op::Pong, body_at)
        } else if verb.eq_ignore_ascii_case(b"+OK") {
            (Op::Ok, body_at)
        } else if verb.eq_ignore_ascii_case(b"-ERR") {
            let text = String::from_utf8_lossy(args);
            let text = text.trim().trim_matches('\'').to_string();
            (Op::Err(text), body_at)
        } else if verb.eq_ignore_ascii_case(b"INFO") {
            let info = serde_json::from_slice(args)
                .map_err(|e| invalid(format!("INFO is not valid JSON: {e}")))?;
            (Op::Info(info), body_at)
        } else {
            // HMSG included: CONNECT never asks for headers, so a server must not send it.
            let shown = String::from_utf8_lossy(&verb[..verb.len().min(32)]).into_owned();
            return Err(invalid(format!("unknown operation {shown:?}")));
        };
        self.pos += used;
        Ok(Some(op))
    }
}

fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// Splits a control line into its verb and the rest (leading blanks removed).
fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    let start = line.iter().position(|b| !is_space(b)).unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().position(is_space).unwrap_or(line.len());
    let (verb, rest) = line.split_at(end);
    let skip = rest.iter().position(|b| !is_space(b)).unwrap_or(rest.len());
    (verb, &rest[skip..])
}

/// Parses MSG's arguments and takes its payload from `body`; `None` while the payload (or its
/// trailing `\r\n`) has not fully arrived. Returns the message and the body bytes it used.
fn parse_msg(args: &[u8], body: &[u8]) -> Result<Option<(Msg, usize)>, ParseError> {
    let fields: Vec<&[u8]> = args.split(is_space).filter(|f| !f.is_empty()).collect();
    let (subject, sid, reply_to, size) = match fields.as_slice() {
        [s, sid, n] => (s, sid, None, n),
        [s, sid, r, n] => (s, sid, Some(r.to_vec()), n),
        _ => return Err(invalid("MSG needs 3 or 4 arguments")),
    };
    let sid = number(sid).ok_or_else(|| invalid("MSG sid is not a number"))?;
    let size = number(size).ok_or_else(|| invalid("MSG size is not a number"))?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&n| n <= MAX_MSG_PAYLOAD)
        .ok_or_else(|| invalid("MSG payload too large"))?;
    if body.len() < size + 2 {
        return Ok(None);
    }
    if &body[size..size + 2] != b"\r\n" {
        return Err(invalid("MSG payload not followed by \\r\\n"));
    }
    let msg = Msg {
        subject: subject.to_vec(),
        sid,
        reply_to,
        payload: body[..size].to_vec(),
    };
    Ok(Some((msg, size + 2)))
}

fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(topic: &str) -> String {
        let mut s = String::new();
        escape_topic(&mut s, topic);
        s
    }

    fn parse_all(p: &mut Parser) -> Vec<Op> {
        let mut ops = Vec::new();
        while let Some(op) = p.next_op().unwrap() {
            ops.push(op);
        }
        ops
    }

    fn msg(subject: &str, sid: u64, payload: &[u8]) -> Op {
        Op::Msg(Msg {
            subject: subject.as_bytes().to_vec(),
            sid,
            reply_to: None,
            payload: payload.to_vec(),
        })
    }

    #[test]
    fn host_topics_become_one_token() {
        assert_eq!(esc("ctl"), "ctl");
        assert_eq!(esc("node:123"), "node:123");
        assert_eq!(esc("app:app-id"), "app:app-id");
        assert_eq!(
            esc("ch:app-id:private-chat.room*1"),
            "ch:app-id:private-chat%2Eroom%2A1"
        );
        assert_eq!(esc("a>b c%d\te"), "a%3Eb%20c%25d%09e");
        assert_eq!(esc("presence-x=@,;#_"), "presence-x=@,;#_");
        assert_eq!(esc("é"), "%C3%A9");
        assert_eq!(subject("switchyard", "ch:a:b.c"), "switchyard.ch:a:b%2Ec");
        assert_eq!(
            topic_of("switchyard", b"switchyard.ch:a:b%2Ec").as_deref(),
            Some("ch:a:b.c")
        );
    }

    #[test]
    fn every_byte_round_trips_and_tokens_stay_clean() {
        // Every ASCII byte alone, in pairs, and next to '%'.
        for a in 0u8..128 {
            for b in [None, Some(b'%'), Some(b'.'), Some(b'a')]
                .into_iter()
                .chain((0u8..128).map(Some))
            {
                let mut t = String::from(a as char);
                if let Some(b) = b {
                    t.push(b as char);
                }
                let e = esc(&t);
                assert!(
                    e.bytes()
                        .all(|c| c.is_ascii_graphic() && !b".*>".contains(&c)),
                    "{t:?} escaped to {e:?}"
                );
                assert_eq!(unescape_token(e.as_bytes()).as_deref(), Some(t.as_str()));
            }
        }
        // Every char up to U+2FFF and a sample above, so every byte value 0x00..=0xFF occurs
        // in some UTF-8 encoding (lead bytes, continuation bytes).
        let mut seen = [false; 256];
        for c in (0u32..0x3000)
            .chain((0x3000..0x11_0000).step_by(997))
            .filter_map(char::from_u32)
        {
            let t = format!("ch:app:{c}x{c}");
            for b in t.bytes() {
                seen[usize::from(b)] = true;
            }
            let s = subject("p.q", &t);
            assert_eq!(s.matches('.').count(), 2, "{t:?} -> {s:?}");
            assert_eq!(topic_of("p.q", s.as_bytes()).as_deref(), Some(t.as_str()));
        }
        // 0xC0, 0xC1 and 0xF5.. never occur in UTF-8.
        for (b, seen) in seen.iter().enumerate() {
            assert_eq!(*seen, !matches!(b, 0xC0 | 0xC1 | 0xF5..), "byte {b:#04X}");
        }
    }

    #[test]
    fn every_byte_decodes_only_in_its_one_form() {
        for b in 0u8..=255 {
            // Raw: only plain bytes stand for themselves.
            assert_eq!(unescape_token(&[b]).is_some(), is_plain(b), "raw {b:#04X}");
            // Escaped: only non-plain bytes, uppercase hex, and the result must be UTF-8.
            let upper = format!("%{b:02X}");
            let want = (!is_plain(b) && b < 0x80).then(|| (b as char).to_string());
            assert_eq!(unescape_token(upper.as_bytes()), want, "{upper}");
            let lower = format!("%{b:02x}");
            if lower != upper {
                assert_eq!(unescape_token(lower.as_bytes()), None, "{lower}");
            }
        }
    }

    #[test]
    fn escaping_is_injective_over_a_pseudo_random_sample() {
        // A small xorshift: reproducible, no dependency. Distinct topics must give distinct
        // tokens (which the round trip implies) and each token must decode canonically.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let alphabet: Vec<char> = "aZ09_-=@,.;:#%*> \t\r\né".chars().collect();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 12) as usize;
            let t: String = (0..len)
                .map(|i| alphabet[((x >> (i * 5)) % alphabet.len() as u64) as usize])
                .collect();
            let e = esc(&t);
            assert_eq!(unescape_token(e.as_bytes()).as_deref(), Some(t.as_str()));
        }
    }

    #[test]
    fn only_canonical_tokens_decode() {
        for bad in [
            &b"a.b"[..],
            b"a*b",
            b"a>",
            b"a b",
            b"%2e",
            b"%2",
            b"%",
            b"%G0",
            b"%41",
            b"%3A",
            b"%FF",
        ] {
            assert_eq!(
                unescape_token(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(unescape_token(b"").as_deref(), Some(""));
        assert_eq!(topic_of("switchyard", b"other.x"), None);
        assert_eq!(topic_of("switchyard", b"switchyardx"), None);
        assert_eq!(topic_of("switchyard", b"switchyard.a.b"), None);
        assert_eq!(topic_of("a.b", b"a.b.c").as_deref(), Some("c"));
    }

    #[test]
    fn prefixes_are_validated() {
        for ok in ["switchyard", "sy.prod", "a.b-c.d_e:f", "x%y"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("sy.", "end with '.'"),
            (".sy", "empty subject token"),
            ("a..b", "empty subject token"),
            ("a b", "printable ASCII"),
            ("a.*", "wildcards"),
            ("a>", "wildcards"),
            ("é", "printable ASCII"),
        ] {
            let err = check_prefix(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        assert!(check_prefix(&"a".repeat(MAX_SUBJECT)).is_err());
    }

    #[test]
    fn encodes_client_operations() {
        let mut out = Vec::new();
        encode_pub(&mut out, "sy.room", b"hi\r\n");
        encode_sub(&mut out, "sy.room", 7);
        encode_unsub(&mut out, 18_446_744_073_709_551_615);
        out.extend_from_slice(PING);
        assert_eq!(
            out,
            b"PUB sy.room 4\r\nhi\r\n\r\nSUB sy.room 7\r\nUNSUB 18446744073709551615\r\nPING\r\n"
        );
        let mut out = Vec::new();
        encode_pub(&mut out, "s", b"");
        assert_eq!(out, b"PUB s 0\r\n\r\n");
    }

    #[test]
    fn connect_keeps_echo_on_and_carries_credentials() {
        let json = |name, auth| {
            let mut out = Vec::new();
            encode_connect(&mut out, name, auth);
            assert!(out.starts_with(b"CONNECT {") && out.ends_with(b"}\r\n"));
            serde_json::from_slice::<serde_json::Value>(&out[8..out.len() - 2]).unwrap()
        };
        let v = json(Some("switchyard-n1"), Auth::default());
        assert_eq!(v["echo"], true);
        assert_eq!(v["verbose"], false);
        assert_eq!(v["pedantic"], false);
        assert_eq!(v["name"], "switchyard-n1");
        assert!(v.get("auth_token").is_none() && v.get("user").is_none());
        let v = json(
            None,
            Auth {
                token: Some("t\"ok"),
                ..Auth::default()
            },
        );
        assert_eq!(v["auth_token"], "t\"ok");
        assert!(v.get("name").is_none());
        let v = json(
            None,
            Auth {
                user: Some("u"),
                pass: Some("p"),
                ..Auth::default()
            },
        );
        assert_eq!((&v["user"], &v["pass"]), (&"u".into(), &"p".into()));
    }

    /// A session as a server would send it: INFO, traffic with a binary payload holding
    /// `\r\n` and a fake "MSG" line, a reply-to, PING, +OK, -ERR.
    fn session() -> (Vec<u8>, Vec<Op>) {
        let mut wire = Vec::new();
        wire.extend_from_slice(
            b"INFO {\"server_id\":\"S1\",\"version\":\"2.9.10\",\"max_payload\":1048576,\"headers\":true,\"connect_urls\":[\"10.0.0.1:4222\"]}\r\n",
        );
        let binary: Vec<u8> = (0u8..=255).chain(*b"\r\nMSG x 1 2\r\nhi\r\n").collect();
        wire.extend_from_slice(b"MSG sy.a 1 ");
        wire.extend_from_slice(binary.len().to_string().as_bytes());
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&binary);
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(b"MSG sy.b%2Ec 22 _INBOX.x 3\r\nabc\r\n");
        wire.extend_from_slice(b"PING\r\n+OK\r\nMSG sy.e 3 0\r\n\r\n");
        wire.extend_from_slice(b"-ERR 'Permissions Violation for Publish to \"sy.x\"'\r\nPONG\r\n");
        let ops = vec![
            Op::Info(Info {
                server_id: "S1".into(),
                version: "2.9.10".into(),
                max_payload: Some(1 << 20),
                auth_required: false,
                tls_required: false,
            }),
            msg("sy.a", 1, &binary),
            Op::Msg(Msg {
                subject: b"sy.b%2Ec".to_vec(),
                sid: 22,
                reply_to: Some(b"_INBOX.x".to_vec()),
                payload: b"abc".to_vec(),
            }),
            Op::Ping,
            Op::Ok,
            msg("sy.e", 3, b""),
            Op::Err("Permissions Violation for Publish to \"sy.x\"".into()),
            Op::Pong,
        ];
        (wire, ops)
    }

    #[test]
    fn parses_a_session_in_one_read() {
        let (wire, want) = session();
        let mut p = Parser::default();
        p.feed(&wire);
        assert_eq!(parse_all(&mut p), want);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn parses_a_session_split_at_every_byte() {
        let (wire, want) = session();
        for split in 0..=wire.len() {
            let mut p = Parser::default();
            p.feed(&wire[..split]);
            let mut got = parse_all(&mut p);
            p.feed(&wire[split..]);
            got.extend(parse_all(&mut p));
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn parses_a_session_fed_byte_by_byte() {
        let (wire, want) = session();
        let mut p = Parser::default();
        let mut got = Vec::new();
        for b in &wire {
            p.feed(std::slice::from_ref(b));
            got.extend(parse_all(&mut p));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn many_messages_in_odd_chunks_keep_order() {
        let mut wire = Vec::new();
        for i in 0u32..3000 {
            let payload = i.to_be_bytes();
            wire.extend_from_slice(b"MSG sy.room 1 4\r\n");
            wire.extend_from_slice(&payload);
            wire.extend_from_slice(b"\r\n");
        }
        let mut p = Parser::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(97) {
            p.feed(chunk);
            got.extend(parse_all(&mut p));
        }
        assert_eq!(got.len(), 3000);
        for (i, op) in got.into_iter().enumerate() {
            assert_eq!(op, msg("sy.room", 1, &(i as u32).to_be_bytes()));
        }
    }

    #[test]
    fn a_large_payload_waits_for_all_its_bytes() {
        let payload = vec![b'\n'; 200_000];
        let mut wire = format!("MSG s 1 {}\r\n", payload.len()).into_bytes();
        wire.extend_from_slice(&payload);
        wire.extend_from_slice(b"\r\nPING\r\n");
        let mut p = Parser::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(64 * 1024) {
            p.feed(chunk);
            got.extend(parse_all(&mut p));
        }
        assert_eq!(got, vec![msg("s", 1, &payload), Op::Ping]);
    }

    #[test]
    fn verbs_are_case_insensitive_and_blanks_tolerated() {
        let mut p = Parser::default();
        p.feed(b"ping\r\nmsg  s\t9   2\r\nok\r\n+ok\r\n-err  'Stale Connection' \r\n");
        assert_eq!(
            parse_all(&mut p),
            vec![
                Op::Ping,
                msg("s", 9, b"ok"),
                Op::Ok,
                Op::Err("Stale Connection".into())
            ]
        );
    }

    #[test]
    fn err_messages_are_classified() {
        assert!(is_fatal_err("Authorization Violation"));
        assert!(is_fatal_err("Maximum Payload Violation"));
        assert!(is_fatal_err("Stale Connection"));
        assert!(is_fatal_err("Unknown Protocol Operation"));
        assert!(!is_fatal_err(
            "Permissions Violation for Subscription to \"x\""
        ));
        assert!(!is_fatal_err("Invalid Subject"));
    }

    #[test]
    fn info_gives_max_payload() {
        let mut p = Parser::default();
        p.feed(b"INFO {\"max_payload\":4096,\"auth_required\":true,\"tls_required\":true,\"proto\":1}\r\nINFO {}\r\n");
        let Some(Op::Info(a)) = p.next_op().unwrap() else {
            panic!("INFO expected")
        };
        assert_eq!(a.max_payload(), 4096);
        assert!(a.auth_required && a.tls_required);
        let Some(Op::Info(b)) = p.next_op().unwrap() else {
            panic!("INFO expected")
        };
        assert_eq!(b.max_payload(), DEFAULT_MAX_PAYLOAD);
    }

    #[test]
    fn rejects_garbage() {
        let err = |wire: &[u8]| {
            let mut p = Parser::default();
            p.feed(wire);
            p.next_op().unwrap_err().0
        };
        assert!(err(b"HELLO\r\n").contains("unknown operation"));
        assert!(err(b"HMSG s 1 0 2\r\n\r\n").contains("unknown operation"));
        assert!(err(b"INFO {nope\r\n").contains("INFO is not valid JSON"));
        assert!(err(b"MSG s 1\r\n").contains("3 or 4 arguments"));
        assert!(err(b"MSG s 1 a b c\r\n").contains("3 or 4 arguments"));
        assert!(err(b"MSG s x 1\r\na\r\n").contains("sid"));
        assert!(err(b"MSG s 1 -1\r\n").contains("size"));
        assert!(err(b"MSG s 1 99999999999\r\n").contains("too large"));
        assert!(err(b"MSG s 1 2\r\nabcd\r\n").contains("not followed"));
        assert!(err(&vec![b'x'; MAX_LINE + 1]).contains("too long"));
        // Incomplete input is not an error.
        let mut p = Parser::default();
        p.feed(b"MSG s 1 5\r\nab");
        assert_eq!(p.next_op(), Ok(None));
        p.feed(b"cde\r");
        assert_eq!(p.next_op(), Ok(None));
        p.feed(b"\n");
        assert_eq!(p.next_op(), Ok(Some(msg("s", 1, b"abcde"))));
    }
}
