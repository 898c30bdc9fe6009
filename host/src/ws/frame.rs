//! RFC 6455 framing for the server side: decoding masked client frames (with fragmentation
//! and control frames) and encoding unmasked server frames.
//!
//! Server frames are encoded once per event and shared as `Bytes` by every subscriber's
//! queue, so fan-out never re-encodes. Decoding is sans-IO over a byte buffer so it can be
//! fuzzed and unit-tested without sockets.

use std::ops::ControlFlow;

use bytes::Bytes;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A complete message from the client, borrowed from the decoder's buffers.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// A close frame; the code is absent when the client sent an empty close.
    Close(Option<u16>),
}

/// Why the client's byte stream is not valid WebSocket; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("client frames must be masked")]
    Unmasked,
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControlFrame,
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is open")]
    InterleavedMessage,
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed close frame")]
    BadClose,
}

impl FrameError {
    /// The WebSocket close code that answers this error.
    pub fn close_code(&self) -> u16 {
        use crate::protocol::codes::{WS_INVALID_PAYLOAD, WS_PROTOCOL_ERROR, WS_TOO_BIG};
        match self {
            Self::TooBig(_) => WS_TOO_BIG,
            Self::InvalidUtf8 => WS_INVALID_PAYLOAD,
            Self::ReservedBits
            | Self::UnknownOpcode(_)
            | Self::Unmasked
            | Self::BadControlFrame
            | Self::UnexpectedContinuation
            | Self::InterleavedMessage
            | Self::BadClose => WS_PROTOCOL_ERROR,
        }
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
    mask: [u8; 4],
}

/// Reads one frame header; `Ok(None)` means more bytes are needed.
fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::UnknownOpcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u16::from_be_bytes([b[0], b[1]]) as u64, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10)
        }
        n => (n as u64, 2),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(FrameError::BadControlFrame);
    }
    // Checked before buffering the payload, so an announced giant frame costs nothing.
    if len > max as u64 {
        return Err(FrameError::TooBig(max));
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = mask.try_into().expect("4 bytes");
    at += 4;
    Ok(Some(Header {
        fin,
        opcode,
        header_len: at,
        payload_len: len as usize,
        mask,
    }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Reassembles client messages across reads and fragments.
pub struct Decoder {
    max_message: usize,
    /// Opcode and bytes of a fragmented message still open.
    fragment: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            fragment: None,
        }
    }

    /// Decodes every complete frame in `buf`, calls `on` for each complete message, and removes
    /// the consumed bytes. Stops early when `on` breaks (after a close, say).
    pub fn decode(
        &mut self,
        buf: &mut Vec<u8>,
        mut on: impl FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<(), FrameError> {
        let mut pos = 0;
        let result = loop {
            let header = match parse_header(&buf[pos..], self.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let start = pos + header.header_len;
            let end = start + header.payload_len;
            if end > buf.len() {
                break Ok(());
            }
            unmask(&mut buf[start..end], header.mask);
            pos = end;
            match self.dispatch(header.fin, header.opcode, &buf[start..end], &mut on) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        buf.drain(..pos);
        result
    }

    fn dispatch(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        on: &mut impl FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, FrameError> {
        match opcode {
            OP_PING => Ok(on(Message::Ping(payload))),
            OP_PONG => Ok(on(Message::Pong)),
            OP_CLOSE => {
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(FrameError::BadClose),
                    _ => {
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(FrameError::BadClose);
                        }
                        Some(u16::from_be_bytes([payload[0], payload[1]]))
                    }
                };
                Ok(on(Message::Close(code)))
            }
            OP_CONTINUATION => {
                let Some((_, buf)) = self.fragment.as_mut() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                if buf.len() + payload.len() > self.max_message {
                    return Err(FrameError::TooBig(self.max_message));
                }
                buf.extend_from_slice(payload);
                if !fin {
                    return Ok(ControlFlow::Continue(()));
                }
                let (op, whole) = self.fragment.take().expect("checked above");
                complete(op, &whole, on)
            }
            _ => {
                if self.fragment.is_some() {
                    return Err(FrameError::InterleavedMessage);
                }
                if fin {
                    return complete(opcode, payload, on);
                }
                self.fragment = Some((opcode, payload.to_vec()));
                Ok(ControlFlow::Continue(()))
            }
        }
    }
}

fn complete(
    opcode: u8,
    payload: &[u8],
    on: &mut impl FnMut(Message<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, FrameError> {
    if opcode == OP_TEXT {
        let text = std::str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?;
        Ok(on(Message::Text(text)))
    } else {
        Ok(on(Message::Binary(payload)))
    }
}

fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A complete unmasked text frame, ready to be shared across sockets.
pub fn text(payload: &[u8]) -> Bytes {
    Bytes::from(encode(OP_TEXT, payload))
}

pub fn pong(payload: &[u8]) -> Bytes {
    Bytes::from(encode(OP_PONG, payload))
}

/// A close frame; the reason is cut to fit the 125-byte control-frame limit.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(encode(OP_CLOSE, &payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a client frame (masked) the way a browser would.
    pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode_all(dec: &mut Decoder, buf: &mut Vec<u8>) -> Result<Vec<String>, FrameError> {
        let mut seen = Vec::new();
        dec.decode(buf, |m| {
            seen.push(format!("{m:?}"));
            ControlFlow::Continue(())
        })?;
        Ok(seen)
    }

    #[test]
    fn decodes_text_split_across_reads() {
        let frame = client_frame(true, OP_TEXT, &[b'x'; 300]);
        let mut dec = Decoder::new(1024);
        let mut buf = frame[..5].to_vec();
        assert!(decode_all(&mut dec, &mut buf).unwrap().is_empty());
        assert_eq!(buf.len(), 5, "partial frame stays buffered");
        buf.extend_from_slice(&frame[5..]);
        let seen = decode_all(&mut dec, &mut buf).unwrap();
        assert_eq!(seen.len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut buf = client_frame(false, OP_TEXT, b"hel");
        buf.extend(client_frame(true, OP_PING, b"p"));
        buf.extend(client_frame(true, OP_CONTINUATION, b"lo"));
        let seen = decode_all(&mut Decoder::new(64), &mut buf).unwrap();
        assert_eq!(seen, vec!["Ping([112])", "Text(\"hello\")"]);
    }

    #[test]
    fn refuses_protocol_violations() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![0x81, 0x01, b'a'], FrameError::Unmasked),
            (client_frame(true, 0x3, b""), FrameError::UnknownOpcode(3)),
            (
                client_frame(false, OP_PING, b""),
                FrameError::BadControlFrame,
            ),
            (
                client_frame(true, OP_CONTINUATION, b"x"),
                FrameError::UnexpectedContinuation,
            ),
            (
                client_frame(true, OP_TEXT, &[0xff, 0xfe]),
                FrameError::InvalidUtf8,
            ),
            (
                client_frame(true, OP_TEXT, &[b'a'; 65]),
                FrameError::TooBig(64),
            ),
            (client_frame(true, OP_CLOSE, &[3]), FrameError::BadClose),
            (vec![0xC1, 0x80, 0, 0, 0, 0], FrameError::ReservedBits),
        ];
        for (mut buf, want) in cases {
            assert_eq!(decode_all(&mut Decoder::new(64), &mut buf), Err(want));
        }
        // An announced 2^63-byte frame is refused from its header alone.
        let mut huge = vec![0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            decode_all(&mut Decoder::new(64), &mut huge),
            Err(FrameError::TooBig(64))
        );
    }

    #[test]
    fn server_frames_have_correct_lengths() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        assert_eq!(&text(&[0; 200])[..4], &[0x81, 126, 0, 200]);
        assert_eq!(text(&[0; 70_000])[1], 127);
        let c = close(4200, "restart");
        assert_eq!(&c[..4], &[0x88, 9, 0x10, 0x68]);
        assert!(close(1000, &"é".repeat(100)).len() <= 127);
    }
}
