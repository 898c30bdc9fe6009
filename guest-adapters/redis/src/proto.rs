//! RESP2, sans-IO: encoders for the commands the adapter sends and a check-then-parse decoder
//! for what Redis answers. `Incomplete` means "wait for more bytes"; nothing here does I/O.

/// A decoded RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not enough bytes yet for a whole value.
    Incomplete,
    /// The bytes are not RESP; the connection must be dropped.
    Invalid(&'static str),
}

/// Appends a command as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_usize(out, args.len());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_usize(out, a.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_usize(out: &mut Vec<u8>, n: usize) {
    // Lengths are mostly short. Fixed-size appends compile to plain stores; a variable-length
    // one is a call to `memcpy` in a WebAssembly guest.
    let d = |n: usize| b'0' + (n % 10) as u8;
    match n {
        0..=9 => out.push(d(n)),
        10..=99 => out.extend_from_slice(&[d(n / 10), d(n)]),
        100..=999 => out.extend_from_slice(&[d(n / 100), d(n / 10), d(n)]),
        1000..=9999 => out.extend_from_slice(&[d(n / 1000), d(n / 100), d(n / 10), d(n)]),
        _ => {
            let mut buf = [0u8; 20];
            let mut i = buf.len();
            let mut n = n;
            loop {
                i -= 1;
                buf[i] = d(n);
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&buf[i..]);
        }
    }
}

/// `PUBLISH prefix+topic payload`, with the channel name written from its two parts.
pub fn encode_publish(out: &mut Vec<u8>, prefix: &[u8], topic: &[u8], payload: &[u8]) {
    publish_head(out, prefix, topic);
    publish_tail(out, payload);
}

/// Everything of a `PUBLISH` before the payload's length: it depends on the channel alone.
fn publish_head(out: &mut Vec<u8>, prefix: &[u8], topic: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
    push_usize(out, prefix.len() + topic.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(prefix);
    out.extend_from_slice(topic);
    out.extend_from_slice(b"\r\n$");
}

fn publish_tail(out: &mut Vec<u8>, payload: &[u8]) {
    out.reserve(payload.len() + 24);
    push_usize(out, payload.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `PUBLISH` commands for a run of messages under one prefix. Batches mostly repeat a topic,
/// so the head of the command is built once per change of topic, not once per message.
#[derive(Debug, Default)]
pub struct PublishEncoder {
    prefix: Vec<u8>,
    topic: Vec<u8>,
    head: Vec<u8>,
}

impl PublishEncoder {
    pub fn new(prefix: &[u8]) -> Self {
        Self {
            prefix: prefix.to_vec(),
            ..Self::default()
        }
    }

    /// Appends `PUBLISH prefix+topic payload`.
    pub fn encode(&mut self, out: &mut Vec<u8>, topic: &[u8], payload: &[u8]) {
        if self.head.is_empty() || !same_bytes(&self.topic, topic) {
            self.topic.clear();
            self.topic.extend_from_slice(topic);
            self.head.clear();
            publish_head(&mut self.head, &self.prefix, topic);
        }
        out.extend_from_slice(&self.head);
        publish_tail(out, payload);
    }
}

pub use switchyard_adapter_sdk::packed::same_bytes;

/// `name` without `prefix`, when it starts with it (see `same_bytes`).
pub fn strip_prefix<'a>(name: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = name.split_at_checked(prefix.len())?;
    same_bytes(head, prefix).then_some(rest)
}

/// Bounds on what the decoder accepts from the network.
const MAX_BULK: usize = 512 << 20;
const MAX_ARRAY: usize = 1 << 20;

/// Parses one value from the front of `buf`, returning it and the bytes it used.
pub fn parse(buf: &[u8]) -> Result<(Value, usize), ParseError> {
    let (line, rest_at) = line(buf, 0)?;
    let (kind, body) = line
        .split_first()
        .ok_or(ParseError::Invalid("empty line"))?;
    match kind {
        b'+' => Ok((Value::Simple(text(body)?), rest_at)),
        b'-' => Ok((Value::Error(text(body)?), rest_at)),
        b':' => Ok((Value::Int(int(body)?), rest_at)),
        b'$' => match bulk(buf, body, rest_at)? {
            (Some(b), used) => Ok((Value::Bulk(Some(b.to_vec())), used)),
            (None, used) => Ok((Value::Bulk(None), used)),
        },
        b'*' => {
            let n = int(body)?;
            if n < 0 {
                return Ok((Value::Array(None), rest_at));
            }
            let n = usize::try_from(n).map_err(|_| ParseError::Invalid("array too large"))?;
            if n > MAX_ARRAY {
                return Err(ParseError::Invalid("array too large"));
            }
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = rest_at;
            for _ in 0..n {
                let (v, used) = parse(&buf[at..])?;
                items.push(v);
                at += used;
            }
            Ok((Value::Array(Some(items)), at))
        }
        _ => Err(ParseError::Invalid("unknown RESP type")),
    }
}

/// The body of a bulk string whose `$len` line (`len`) ended at `at`, borrowed from `buf`.
fn bulk<'a>(buf: &'a [u8], len: &[u8], at: usize) -> Result<(Option<&'a [u8]>, usize), ParseError> {
    let n = int(len)?;
    if n < 0 {
        return Ok((None, at));
    }
    let n = usize::try_from(n).map_err(|_| ParseError::Invalid("bulk string too large"))?;
    if n > MAX_BULK {
        return Err(ParseError::Invalid("bulk string too large"));
    }
    let end = at + n;
    if buf.len() < end + 2 {
        return Err(ParseError::Incomplete);
    }
    if buf[end] != b'\r' || buf[end + 1] != b'\n' {
        return Err(ParseError::Invalid("bulk string not terminated"));
    }
    Ok((Some(&buf[at..end]), end + 2))
}

/// The line starting at `from`, without its CRLF, and where the next one starts.
fn line(buf: &[u8], from: usize) -> Result<(&[u8], usize), ParseError> {
    let mut at = from;
    loop {
        let cr = buf[at..]
            .iter()
            .position(|&b| b == b'\r')
            .ok_or(ParseError::Incomplete)?;
        let cr = at + cr;
        match buf.get(cr + 1) {
            Some(b'\n') => return Ok((&buf[from..cr], cr + 2)),
            Some(_) => at = cr + 1,
            None => return Err(ParseError::Incomplete),
        }
    }
}

fn text(b: &[u8]) -> Result<String, ParseError> {
    String::from_utf8(b.to_vec()).map_err(|_| ParseError::Invalid("non-UTF-8 simple string"))
}

fn int(b: &[u8]) -> Result<i64, ParseError> {
    let bad = ParseError::Invalid("bad integer");
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    // Up to 19 digits cannot overflow a u64, so the loop needs no checked (128-bit on wasm32)
    // multiplication; the range is checked once at the end.
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad);
        }
        n = n * 10 + u64::from(d - b'0');
    }
    match (neg, i64::try_from(n)) {
        (false, Ok(v)) => Ok(v),
        (true, Ok(v)) => Ok(-v),
        (true, Err(_)) if n == i64::MIN.unsigned_abs() => Ok(i64::MIN),
        _ => Err(bad),
    }
}

/// The fixed start of a pub/sub message push: `*3`, `$7`, `message`, and the `$` of the
/// channel's length.
const HEAD: &[u8; 18] = b"*3\r\n$7\r\nmessage\r\n$";

/// `message channel payload`, the push a subscribed connection receives, parsed without
/// copying. `Ok(None)`: a complete value of another shape starts here (the general parser
/// takes it, and reports any error in it).
fn parse_message(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, ParseError> {
    let Some(head) = buf.first_chunk::<18>() else {
        return if HEAD.starts_with(buf) {
            Err(ParseError::Incomplete)
        } else {
            Ok(None)
        };
    };
    if !is_message_head(head) {
        return Ok(None);
    }
    let Some((channel, at)) = bulk_body(buf, HEAD.len())? else {
        return Ok(None);
    };
    match buf.get(at) {
        Some(b'$') => {}
        Some(_) => return Ok(None),
        None => return Err(ParseError::Incomplete),
    }
    let Some((payload, used)) = bulk_body(buf, at + 1)? else {
        return Ok(None);
    };
    Ok(Some((Item::Message { channel, payload }, used)))
}

/// Compares the head as two words and a half-word: a slice comparison is a call to `memcmp`
/// in a WebAssembly guest, once per message.
fn is_message_head(h: &[u8; 18]) -> bool {
    let word =
        |b: &[u8; 18], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    word(h, 0) == word(HEAD, 0)
        && word(h, 8) == word(HEAD, 8)
        && h[16] == HEAD[16]
        && h[17] == HEAD[17]
}

/// `:n`, the reply to every `PUBLISH`, read in one pass. `Ok(None)`: anything unusual (a
/// sign, a long or malformed number), left to the general parser.
fn parse_int_reply(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, ParseError> {
    let mut n: i64 = 0;
    let mut i = 1;
    loop {
        match buf.get(i) {
            Some(&d @ b'0'..=b'9') if i <= 18 => n = n * 10 + i64::from(d - b'0'),
            Some(b'\r') if i > 1 => break,
            Some(_) => return Ok(None),
            None => return Err(ParseError::Incomplete),
        }
        i += 1;
    }
    match buf.get(i + 1) {
        Some(b'\n') => Ok(Some((Item::Value(Value::Int(n)), i + 2))),
        Some(_) => Ok(None),
        None => Err(ParseError::Incomplete),
    }
}

/// Digits in a bulk length the fast path reads: as many as the general parser's integers
/// (19 cannot overflow a `u64`; leading zeros are allowed). Longer ones go to the general
/// parser, which refuses them once their line is complete.
const MAX_LEN_DIGITS: usize = 19;

/// A bulk string's `len\r\nbody\r\n`, from just after its `$`: the body and where the next
/// value starts. The length is read in the same pass that finds its end. `Ok(None)`: not a
/// plain length (a null bulk string, a malformed one), left to the general parser.
fn bulk_body(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let mut n: u64 = 0;
    let mut i = at;
    loop {
        match buf.get(i) {
            Some(&d @ b'0'..=b'9') => n = n * 10 + u64::from(d - b'0'),
            Some(b'\r') => break,
            Some(_) => return Ok(None),
            None => return Err(ParseError::Incomplete),
        }
        i += 1;
        if i - at > MAX_LEN_DIGITS {
            return Ok(None);
        }
    }
    if i == at {
        return Ok(None);
    }
    match buf.get(i + 1) {
        Some(b'\n') => {}
        Some(_) => return Ok(None),
        None => return Err(ParseError::Incomplete),
    }
    if n > i64::MAX as u64 {
        // Not an integer to the general parser: it says so.
        return Ok(None);
    }
    if n > MAX_BULK as u64 {
        return Err(ParseError::Invalid("bulk string too large"));
    }
    let start = i + 2;
    // n <= MAX_BULK; checked anyway, for a 32-bit usize.
    let end = start
        .checked_add(n as usize)
        .ok_or(ParseError::Invalid("bulk string too large"))?;
    if buf.len() < end.saturating_add(2) {
        return Err(ParseError::Incomplete);
    }
    if buf[end] != b'\r' || buf[end + 1] != b'\n' {
        return Err(ParseError::Invalid("bulk string not terminated"));
    }
    Ok(Some((&buf[start..end], end + 2)))
}

/// One decoded item: a pub/sub message, borrowed from the read buffer, or any other value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    Message {
        channel: &'a [u8],
        payload: &'a [u8],
    },
    Value(Value),
}

/// Decodes values from a connection's bytes; keeps only an incomplete tail between reads.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Decodes every complete value in what was buffered plus `data`, handing each to `each`
    /// in order as it is parsed. Messages are parsed in place: with nothing buffered (the
    /// usual case) `data` is read without a copy.
    pub fn decode(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(Item<'_>),
    ) -> Result<(), ParseError> {
        if self.buf.is_empty() {
            let (used, result) = decode_all(data, &mut each);
            self.buf.extend_from_slice(&data[used..]);
            return result;
        }
        self.buf.extend_from_slice(data);
        let (used, result) = decode_all(&self.buf, &mut each);
        self.buf.drain(..used);
        result
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Decodes from the front of `buf`, handing each item to `each`: the bytes used, and whether
/// decoding stopped on an error (rather than on an incomplete value).
fn decode_all<'a>(
    buf: &'a [u8],
    each: &mut impl FnMut(Item<'a>),
) -> (usize, Result<(), ParseError>) {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some(&kind) = rest.first() else {
            return (at, Ok(()));
        };
        let fast = match kind {
            b'*' => parse_message(rest),
            b':' => parse_int_reply(rest),
            _ => Ok(None),
        };
        let step = match fast {
            Ok(Some((message, used))) => {
                each(message);
                Ok(used)
            }
            Ok(None) => parse(rest).map(|(v, used)| {
                each(Item::Value(v));
                used
            }),
            Err(e) => Err(e),
        };
        match step {
            Ok(used) => at += used,
            Err(ParseError::Incomplete) => return (at, Ok(())),
            Err(e) => return (at, Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_publish() {
        let mut out = Vec::new();
        encode_publish(&mut out, b"sy:", b"app", b"hi");
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nsy:app\r\n$2\r\nhi\r\n");
        for n in [0, 9, 10, 99, 100, 999, 1000, 9999, 10000, 12345, usize::MAX] {
            let mut out = Vec::new();
            push_usize(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// What a decoder yields, owned, so reads split anywhere can be compared.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Message(Vec<u8>, Vec<u8>),
        Value(Value),
    }

    fn owned(item: Item<'_>) -> Seen {
        match item {
            Item::Message { channel, payload } => Seen::Message(channel.to_vec(), payload.to_vec()),
            Item::Value(v) => Seen::Value(v),
        }
    }

    #[test]
    fn parses_pushes_split_anywhere() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$6\r\nhel\rlo\r\n:7\r\n*3\r\n$7\r\nmessage\r\n$2\r\nbb\r\n$0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Decoder::default();
            let mut seen = Vec::new();
            d.decode(&wire[..split], |i| seen.push(owned(i))).unwrap();
            d.decode(&wire[split..], |i| seen.push(owned(i))).unwrap();
            assert_eq!(seen.len(), 4, "split at {split}");
            assert!(matches!(&seen[0], Seen::Value(Value::Array(Some(items))) if items.len() == 3));
            assert_eq!(seen[1], Seen::Message(b"a".to_vec(), b"hel\rlo".to_vec()));
            assert_eq!(seen[2], Seen::Value(Value::Int(7)));
            assert_eq!(seen[3], Seen::Message(b"bb".to_vec(), Vec::new()));
            assert!(d.buf.is_empty(), "nothing left over at split {split}");
        }
    }

    #[test]
    fn a_message_shaped_array_of_other_types_is_a_plain_value() {
        let mut d = Decoder::default();
        let mut seen = Vec::new();
        d.decode(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n:5\r\n", |i| {
            seen.push(owned(i))
        })
        .unwrap();
        assert!(matches!(
            seen.as_slice(),
            [Seen::Value(Value::Array(Some(_)))]
        ));
    }

    #[test]
    fn rejects_garbage_and_bounds_sizes() {
        assert_eq!(
            parse(b"?x\r\n"),
            Err(ParseError::Invalid("unknown RESP type"))
        );
        assert_eq!(parse(b":abc\r\n"), Err(ParseError::Invalid("bad integer")));
        assert_eq!(
            parse(b":-9223372036854775808\r\n").unwrap().0,
            Value::Int(i64::MIN)
        );
        assert_eq!(
            parse(b":9223372036854775807\r\n").unwrap().0,
            Value::Int(i64::MAX)
        );
        assert_eq!(
            parse(b":9223372036854775808\r\n"),
            Err(ParseError::Invalid("bad integer"))
        );
        assert_eq!(parse(b":\r\n"), Err(ParseError::Invalid("bad integer")));
        assert_eq!(
            parse(b"$999999999999\r\n"),
            Err(ParseError::Invalid("bulk string too large"))
        );
        assert_eq!(
            parse(b"$3\r\nabcXY"),
            Err(ParseError::Invalid("bulk string not terminated"))
        );
        assert_eq!(parse(b"$3\r\nab"), Err(ParseError::Incomplete));
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap().0,
            Value::Error("ERR no".into())
        );
        assert_eq!(parse(b"$-1\r\n").unwrap().0, Value::Bulk(None));
    }

    #[test]
    fn the_publish_encoder_writes_what_encode_publish_writes() {
        let mut enc = PublishEncoder::new(b"sy:");
        let (mut fast, mut plain) = (Vec::new(), Vec::new());
        for (topic, payload) in [
            (&b"a"[..], &b"1"[..]),
            (b"a", b""),
            (b"bb", &[b'x'; 1000][..]),
            (b"", b"2"),
            (b"a", b"3"),
            (b"a", b"4"),
        ] {
            enc.encode(&mut fast, topic, payload);
            encode_publish(&mut plain, b"sy:", topic, payload);
        }
        assert_eq!(fast, plain);
    }

    /// Decodes with the general parser only, reading `message` pushes out of its arrays.
    fn general(mut wire: &[u8]) -> (Vec<Seen>, Result<(), ParseError>) {
        let mut seen = Vec::new();
        loop {
            if wire.is_empty() {
                return (seen, Ok(()));
            }
            match parse(wire) {
                Ok((v, used)) => {
                    seen.push(match v {
                        Value::Array(Some(items)) => match items.as_slice() {
                            [Value::Bulk(Some(kind)), Value::Bulk(Some(c)), Value::Bulk(Some(p))]
                                if kind == b"message" =>
                            {
                                Seen::Message(c.clone(), p.clone())
                            }
                            _ => Seen::Value(Value::Array(Some(items))),
                        },
                        v => Seen::Value(v),
                    });
                    wire = &wire[used..];
                }
                Err(ParseError::Incomplete) => return (seen, Ok(())),
                Err(e) => return (seen, Err(e)),
            }
        }
    }

    #[test]
    fn the_message_fast_path_agrees_with_the_general_parser() {
        let frames: [&[u8]; 23] = [
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n",
            b"*3\r\n$7\r\nmessage\r\n$0\r\n\r\n$0\r\n\r\n",
            b"*3\r\n$7\r\nmessage\r\n$-1\r\n$1\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$-1\r\n",
            b"*3\r\n$7\r\nmessage\r\n$\r\nc\r\n$1\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1x\r\nc\r\n$1\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\rx\nc\r\n$1\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$99999999999\r\n",
            b"*3\r\n$7\r\nmessage\r\n$999999999\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\ncXY$1\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n:1\r\n",
            b"*3\r\n$7\r\nmassage\r\n$1\r\nc\r\n$1\r\nx\r\n",
            b":0\r\n",
            b":123456789012345678\r\n",
            b":1234567890123456789\r\n",
            b":92233720368547758070\r\n",
            b":-5\r\n",
            b":\r\n",
            b":1x\r\n",
            b":1\rx",
            b"*3\r\n$7\r\nmessage\r\n$00000000001\r\nc\r\n$0000000000000000001\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$00000000000000000001\r\nx\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$9999999999999999999\r\n",
        ];
        for frame in frames {
            // Alone, followed by a reply, and cut short anywhere.
            let mut wire = frame.to_vec();
            wire.extend_from_slice(b":3\r\n");
            for input in [frame, &wire[..]]
                .into_iter()
                .chain((0..frame.len()).map(|n| &frame[..n]))
            {
                let mut seen = Vec::new();
                let result = Decoder::default().decode(input, |i| seen.push(owned(i)));
                assert_eq!(
                    (seen, result),
                    general(input),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn strips_prefixes() {
        // `same_bytes` itself is tested where it lives (switchyard-packed).
        let names: [&[u8]; 6] = [
            b"",
            b"s",
            b"sy:",
            b"sy:app",
            b"sy:apps:1",
            b"0123456789abcdef:x",
        ];
        for a in names {
            for b in names {
                assert_eq!(strip_prefix(a, b), a.strip_prefix(b), "{a:?} {b:?}");
            }
        }
    }
}
