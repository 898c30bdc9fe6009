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

fn push_usize(out: &mut Vec<u8>, mut n: usize) {
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

/// `PUBLISH channel payload`.
pub fn encode_publish(out: &mut Vec<u8>, channel: &[u8], payload: &[u8]) {
    encode_command(out, &[b"PUBLISH", channel, payload]);
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
        b'$' => {
            let n = int(body)?;
            if n < 0 {
                return Ok((Value::Bulk(None), rest_at));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(ParseError::Invalid("bulk string too large"));
            }
            let end = rest_at + n;
            if buf.len() < end + 2 {
                return Err(ParseError::Incomplete);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::Invalid("bulk string not terminated"));
            }
            Ok((Value::Bulk(Some(buf[rest_at..end].to_vec())), end + 2))
        }
        b'*' => {
            let n = int(body)?;
            if n < 0 {
                return Ok((Value::Array(None), rest_at));
            }
            let n = n as usize;
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

fn line(buf: &[u8], from: usize) -> Result<(&[u8], usize), ParseError> {
    let pos = buf[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ParseError::Incomplete)?;
    Ok((&buf[from..from + pos], from + pos + 2))
}

fn text(b: &[u8]) -> Result<String, ParseError> {
    String::from_utf8(b.to_vec()).map_err(|_| ParseError::Invalid("non-UTF-8 simple string"))
}

fn int(b: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::Invalid("bad integer"))
}

/// What a subscribed connection receives that matters to the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `message channel payload`.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// `subscribe` / `unsubscribe` confirmations and other replies.
    Other(Value),
}

impl Push {
    pub fn from_value(v: Value) -> Self {
        if let Value::Array(Some(items)) = &v {
            if let [Value::Bulk(Some(kind)), Value::Bulk(Some(ch)), Value::Bulk(Some(p))] =
                items.as_slice()
            {
                if kind == b"message" {
                    return Self::Message {
                        channel: ch.clone(),
                        payload: p.clone(),
                    };
                }
            }
        }
        Self::Other(v)
    }
}

/// Accumulates bytes from a connection and yields whole values.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Decodes every complete value buffered so far.
    pub fn drain(&mut self, mut each: impl FnMut(Value)) -> Result<(), ParseError> {
        let mut at = 0;
        let result = loop {
            match parse(&self.buf[at..]) {
                Ok((v, used)) => {
                    at += used;
                    each(v);
                }
                Err(ParseError::Incomplete) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..at);
        result
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_publish() {
        let mut out = Vec::new();
        encode_publish(&mut out, b"sy:app", b"hi");
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nsy:app\r\n$2\r\nhi\r\n");
    }

    #[test]
    fn parses_pushes_split_anywhere() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n:7\r\n";
        for split in 0..wire.len() {
            let mut d = Decoder::default();
            let mut seen = Vec::new();
            d.feed(&wire[..split]);
            d.drain(|v| seen.push(Push::from_value(v))).unwrap();
            d.feed(&wire[split..]);
            d.drain(|v| seen.push(Push::from_value(v))).unwrap();
            assert_eq!(seen.len(), 3, "split at {split}");
            assert_eq!(
                seen[1],
                Push::Message {
                    channel: b"a".to_vec(),
                    payload: b"hello".to_vec()
                }
            );
            assert_eq!(seen[2], Push::Other(Value::Int(7)));
        }
    }

    #[test]
    fn rejects_garbage_and_bounds_sizes() {
        assert_eq!(
            parse(b"?x\r\n"),
            Err(ParseError::Invalid("unknown RESP type"))
        );
        assert_eq!(parse(b":abc\r\n"), Err(ParseError::Invalid("bad integer")));
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
