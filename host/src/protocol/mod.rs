//! The Pusher Channels wire protocol v7: names, messages, signatures and codes. No I/O.

pub mod auth;
pub mod codes;
pub mod messages;
pub mod names;

pub use codes::ErrorCode;
pub use messages::{ClientMessage, ProtocolError};
pub use names::{ChannelKind, ChannelName, NameError};
