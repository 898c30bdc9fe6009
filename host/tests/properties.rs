//! Property tests ("fuzzing") of the parsers that face the network: WebSocket frame decoding,
//! client message parsing, channel names, and HTTP signature verification. Any input must
//! give a value or an error, never a panic, and valid input must round-trip.

use std::ops::ControlFlow;

use proptest::prelude::*;
use switchyard::protocol::{ChannelName, ClientMessage};
use switchyard::ws::frame::{Decoder, Message};

fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let mut dec = Decoder::new(256);
        let mut buf = Vec::new();
        for c in chunks {
            buf.extend_from_slice(&c);
            if dec.decode(&mut buf, |_| ControlFlow::Continue(())).is_err() {
                break;
            }
        }
    }

    #[test]
    fn text_frames_round_trip_through_any_split(text in "\\PC{0,300}", mask in any::<[u8; 4]>(), split in 0usize..400, frag in 1usize..50) {
        // Fragment the message, then feed the bytes in two reads at an arbitrary point.
        let bytes = text.as_bytes();
        let mut wire = Vec::new();
        let pieces: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(frag).collect() };
        for (i, p) in pieces.iter().enumerate() {
            let op = if i == 0 { 1 } else { 0 };
            wire.extend(masked(op, i + 1 == pieces.len(), p, mask));
        }
        let split = split.min(wire.len());
        let mut dec = Decoder::new(1 << 16);
        let mut got = Vec::new();
        let mut buf = wire[..split].to_vec();
        dec.decode(&mut buf, |m| { if let Message::Text(t) = m { got.push(t.to_owned()) } ControlFlow::Continue(()) }).unwrap();
        buf.extend_from_slice(&wire[split..]);
        dec.decode(&mut buf, |m| { if let Message::Text(t) = m { got.push(t.to_owned()) } ControlFlow::Continue(()) }).unwrap();
        prop_assert_eq!(got, vec![text]);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn client_message_parse_never_panics(s in "\\PC{0,200}") {
        let _ = ClientMessage::parse(&s);
    }

    #[test]
    fn client_message_parse_handles_json_shaped_input(event in "(pusher:[a-z]{0,12}|client-[a-z]{0,8}|[a-z]{0,8})", channel in proptest::option::of("[a-z#-]{0,12}"), data in "\\PC{0,40}") {
        let mut v = serde_json::json!({"event": event, "data": data});
        if let Some(c) = channel { v["channel"] = serde_json::json!(c); }
        let _ = ClientMessage::parse(&v.to_string());
    }

    #[test]
    fn channel_names_accept_exactly_the_legal_alphabet(s in "\\PC{0,40}") {
        let legal = !s.is_empty() && s.len() <= 200 && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-=@,.;".contains(&c));
        let parsed = ChannelName::parse(&s, 200);
        if legal { prop_assert!(parsed.is_ok()) }
        if !legal && !s.starts_with("#server-to-user-") { prop_assert!(parsed.is_err()) }
    }
}
