//! `packed-messages`, the buffer the batch calls carry across the sandbox: per message its
//! topic's length (u32 LE), the topic, its payload's length (u32 LE) and the payload. The
//! guest SDK has the same codec (`switchyard_adapter_sdk::packed`).

/// A message borrowed from a batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// Appends one message.
pub fn push(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads every message of a buffer, or `None` when it is malformed anywhere (a guest's buffer
/// is untrusted: lengths past the end, a topic that is not UTF-8).
pub fn unpack(buf: &[u8]) -> Option<Vec<MessageRef<'_>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let (topic, after) = field(rest)?;
        let (payload, after) = field(after)?;
        out.push(MessageRef {
            topic: std::str::from_utf8(topic).ok()?,
            payload,
        });
        rest = after;
    }
    Some(out)
}

fn field(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed_buffers() {
        let mut buf = Vec::new();
        push(&mut buf, "a", b"one");
        push(&mut buf, "", b"");
        push(&mut buf, "ch:é", &[0, 1, 2]);
        let got = unpack(&buf).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].topic, got[0].payload), ("a", &b"one"[..]));
        assert_eq!((got[2].topic, got[2].payload), ("ch:é", &[0u8, 1, 2][..]));
        // A cut between messages leaves a valid, shorter buffer; anywhere else it is malformed.
        for cut in 1..buf.len() {
            assert_eq!(
                unpack(&buf[..cut]).is_some(),
                cut == 12 || cut == 20,
                "cut at {cut}"
            );
        }
        let mut bad_utf8 = Vec::new();
        push(&mut bad_utf8, "x", b"");
        bad_utf8[4] = 0xff;
        assert!(unpack(&bad_utf8).is_none());
        assert!(unpack(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
