//! `packed-messages`, the buffer the adapter contract's batch calls carry across the sandbox:
//! per message its topic's length (u32 LE), the topic, its payload's length (u32 LE) and the
//! payload, back to back. One crate for both sides, the guest SDK and the host, so they agree
//! on every byte.

/// A message borrowed from wherever it lives: a read buffer, a batch from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// Appends one message.
pub fn push(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    // Lengths are u32 on the wire; nothing that reaches here comes near 4 GiB.
    debug_assert!(topic.len() <= u32::MAX as usize && payload.len() <= u32::MAX as usize);
    // One capacity check instead of four (it shows in a guest, once per message).
    out.reserve(8 + topic.len() + payload.len());
    out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Packs `messages` into one buffer.
pub fn pack(messages: &[MessageRef<'_>]) -> Vec<u8> {
    let size = messages
        .iter()
        .map(|m| 8 + m.topic.len() + m.payload.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for m in messages {
        push(&mut out, m.topic, m.payload);
    }
    out
}

/// Reads every message of a buffer, or `None` when it is malformed anywhere (a guest's
/// buffer is untrusted: lengths past the end, a topic that is not UTF-8).
pub fn unpack(buf: &[u8]) -> Option<Vec<MessageRef<'_>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    // Batches mostly repeat a topic: a repeat is compared, not checked as UTF-8 again.
    let mut last = "";
    while !rest.is_empty() {
        let (topic, after) = field(rest)?;
        let (payload, after) = field(after)?;
        if !same_bytes(topic, last.as_bytes()) {
            last = std::str::from_utf8(topic).ok()?;
        }
        out.push(MessageRef {
            topic: last,
            payload,
        });
        rest = after;
    }
    Some(out)
}

/// `a == b`, eight bytes at a time in line: for the short names compared once per message,
/// where a slice comparison is a call to `memcmp` in a WebAssembly guest.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
    if !a8
        .by_ref()
        .zip(b8.by_ref())
        .all(|(x, y)| word(x) == word(y))
    {
        return false;
    }
    a8.remainder()
        .iter()
        .zip(b8.remainder())
        .all(|(x, y)| x == y)
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
        let msgs = [
            MessageRef {
                topic: "a",
                payload: b"one",
            },
            MessageRef {
                topic: "",
                payload: b"",
            },
            MessageRef {
                topic: "ch:é",
                payload: &[0, 1, 2],
            },
        ];
        let buf = pack(&msgs);
        assert_eq!(unpack(&buf).unwrap(), msgs);
        assert_eq!(unpack(&[]).unwrap(), []);
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
        assert!(unpack(&[9, 0, 0, 0, b'a']).is_none());
        // A repeated topic is still checked: the second message's topic differs in a byte.
        let mut repeat = Vec::new();
        push(&mut repeat, "ab", b"1");
        push(&mut repeat, "ab", b"2");
        assert_eq!(unpack(&repeat).unwrap()[1].topic, "ab");
        repeat[4 + 2 + 4 + 1 + 4 + 1] = 0xff;
        assert!(unpack(&repeat).is_none());
    }

    #[test]
    fn compares_bytes() {
        let names: [&[u8]; 7] = [
            b"",
            b"a",
            b"ab",
            b"sy:app",
            b"sy:app:1",
            b"0123456789abcdefX",
            b"0123456789abcdefY",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
