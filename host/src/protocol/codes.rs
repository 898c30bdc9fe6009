//! Pusher error and close codes (summary §4), mapped in one place.
//!
//! Each `ErrorCode` says which number it sends and whether the connection closes with it;
//! there is deliberately no catch-all arm so a new code must decide both.

/// A protocol-level error the server reports to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 4001: no app has this key. Fatal: pusher-js stops reconnecting.
    AppNotFound,
    /// 4003: the app exists but is disabled.
    AppDisabled,
    /// 4004: the app is over its connection quota.
    OverQuota,
    /// 4005: the WebSocket path is not `/app/{key}`.
    PathNotFound,
    /// 4007: the `protocol` query parameter names a version we do not speak.
    UnsupportedProtocol,
    /// 4009: signin failed, the user was terminated, or an authorised-connection timeout.
    Unauthorized,
    /// 4100: the server is over capacity; back off and retry.
    OverCapacity,
    /// 4200: reconnect at once (shutdown, drain, slow consumer).
    ReconnectImmediately,
    /// 4201: no pong arrived in time.
    PongTimeout,
    /// 4301: client event refused (rate limit, disabled, too large, not allowed).
    ClientEventRejected,
    /// 4302: watchlist over its limit (informational; signin still succeeds).
    WatchlistOverLimit,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            Self::AppNotFound => 4001,
            Self::AppDisabled => 4003,
            Self::OverQuota => 4004,
            Self::PathNotFound => 4005,
            Self::UnsupportedProtocol => 4007,
            Self::Unauthorized => 4009,
            Self::OverCapacity => 4100,
            Self::ReconnectImmediately => 4200,
            Self::PongTimeout => 4201,
            Self::ClientEventRejected => 4301,
            Self::WatchlistOverLimit => 4302,
        }
    }

    /// Whether the server closes the connection after sending this error.
    pub fn closes(self) -> bool {
        match self {
            Self::AppNotFound
            | Self::AppDisabled
            | Self::OverQuota
            | Self::PathNotFound
            | Self::UnsupportedProtocol
            | Self::Unauthorized
            | Self::OverCapacity
            | Self::ReconnectImmediately
            | Self::PongTimeout => true,
            Self::ClientEventRejected | Self::WatchlistOverLimit => false,
        }
    }
}

/// WebSocket close code for a malformed frame (RFC 6455 §7.4.1).
pub const WS_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code for a message larger than the server accepts.
pub const WS_TOO_BIG: u16 = 1009;
/// WebSocket close code for a text frame that is not valid UTF-8.
pub const WS_INVALID_PAYLOAD: u16 = 1007;
