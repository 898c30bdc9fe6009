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
    // Lengths are mostly short: one or two divisions, not one per digit of a 20-digit buffer.
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    if n < 100 {
        out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
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

/// `PUBLISH prefix+topic payload`, with the channel name written from its two parts.
pub fn encode_publish(out: &mut Vec<u8>, prefix: &[u8], topic: &[u8], payload: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
    push_usize(out, prefix.len() + topic.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(prefix);
    out.extend_from_slice(topic);
    out.extend_from_slice(b"\r\n$");
    push_usize(out, payload.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
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

/// `message channel payload`, the push a subscribed connection receives, parsed without
/// copying. `Ok(None)`: a complete value of another shape starts here.
fn parse_message(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, ParseError> {
    const HEAD: &[u8] = b"*3\r\n$7\r\nmessage\r\n$";
    if buf.len() < HEAD.len() {
        return if HEAD.starts_with(buf) {
            Err(ParseError::Incomplete)
        } else {
            Ok(None)
        };
    }
    if !buf.starts_with(HEAD) {
        return Ok(None);
    }
    let (len, at) = line(buf, HEAD.len())?;
    let (channel, at) = bulk(buf, len, at)?;
    let (kind, at) = match buf.get(at) {
        Some(&k) => (k, at + 1),
        None => return Err(ParseError::Incomplete),
    };
    if kind != b'$' {
        return Ok(None);
    }
    let (len, body_at) = line(buf, at)?;
    let (payload, used) = bulk(buf, len, body_at)?;
    match (channel, payload) {
        (Some(channel), Some(payload)) => Ok(Some((Item::Message { channel, payload }, used))),
        _ => Ok(None),
    }
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
    /// Decodes every complete value in what was buffered plus `data`, handing them to `each`
    /// in order.
    pub fn decode(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(Item<'_>),
    ) -> Result<(), ParseError> {
        self.decode_batch(data, |items| items.into_iter().for_each(&mut each))
    }

    /// `decode`, with every complete value of this read handed over at once. Messages are
    /// parsed in place: with nothing buffered (the usual case) `data` is read without a copy.
    pub fn decode_batch(
        &mut self,
        data: &[u8],
        all: impl FnOnce(Vec<Item<'_>>),
    ) -> Result<(), ParseError> {
        if self.buf.is_empty() {
            let (used, items, result) = decode_all(data);
            all(items);
            self.buf.extend_from_slice(&data[used..]);
            return result;
        }
        self.buf.extend_from_slice(data);
        let (used, items, result) = decode_all(&self.buf);
        all(items);
        self.buf.drain(..used);
        result
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Decodes from the front of `buf`: the items, the bytes they used, and whether decoding
/// stopped on an error (rather than on an incomplete value).
fn decode_all(buf: &[u8]) -> (usize, Vec<Item<'_>>, Result<(), ParseError>) {
    let mut items = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.is_empty() {
            return (at, items, Ok(()));
        }
        let step = match parse_message(rest) {
            Ok(Some((message, used))) => {
                items.push(message);
                Ok(used)
            }
            Ok(None) => parse(rest).map(|(v, used)| {
                items.push(Item::Value(v));
                used
            }),
            Err(e) => Err(e),
        };
        match step {
            Ok(used) => at += used,
            Err(ParseError::Incomplete) => return (at, items, Ok(())),
            Err(e) => return (at, items, Err(e)),
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
        for n in [0, 9, 10, 99, 100, 12345, usize::MAX] {
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
}
