//! HMAC-SHA256 signatures: channel and signin auth strings (summary §6), HTTP API request
//! signatures (§11.1) and webhook signatures (§12). All comparisons are constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &str, message: &[u8]) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

fn mac(secret: &str, message: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(message);
    mac
}

/// Checks a lowercase or uppercase hex signature over `message` in constant time.
pub fn verify_hex(secret: &str, message: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    mac(secret, message).verify_slice(&sig).is_ok()
}

/// Why a client-supplied `auth` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth string is missing")]
    Missing,
    #[error("auth string must be '<app key>:<signature>'")]
    Malformed,
    #[error("auth key does not match the app key")]
    WrongKey,
    #[error("invalid signature")]
    BadSignature,
}

/// Verifies `auth = "<key>:<hex>"` over `string_to_sign`, split at the first `:`.
pub fn verify_auth(
    key: &str,
    secret: &str,
    auth: Option<&str>,
    string_to_sign: &[u8],
) -> Result<(), AuthError> {
    let auth = auth.filter(|a| !a.is_empty()).ok_or(AuthError::Missing)?;
    let (given_key, sig) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if given_key != key {
        return Err(AuthError::WrongKey);
    }
    if verify_hex(secret, string_to_sign, sig) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// String to sign for a private or encrypted channel, or a presence channel with `channel_data`.
pub fn channel_string(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// String to sign for `pusher:signin`.
pub fn signin_string(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from the protocol summary §6, cross-checked with the pusher Node SDK.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_vector() {
        let s = channel_string("1234.1234", "private-foobar", None);
        assert_eq!(
            sign(SECRET, s.as_bytes()),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn presence_vector_is_the_sdk_value_not_the_docs_typo() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let s = channel_string("1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            sign(SECRET, s.as_bytes()),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn signin_vector() {
        let s = signin_string("1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(
            sign(SECRET, s.as_bytes()),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn verify_auth_checks_key_and_signature() {
        let s = channel_string("1234.1234", "private-foobar", None);
        let good = format!("{KEY}:{}", sign(SECRET, s.as_bytes()));
        assert_eq!(verify_auth(KEY, SECRET, Some(&good), s.as_bytes()), Ok(()));
        let other = format!("other:{}", sign(SECRET, s.as_bytes()));
        assert_eq!(
            verify_auth(KEY, SECRET, Some(&other), s.as_bytes()),
            Err(AuthError::WrongKey)
        );
        let forged = format!("{KEY}:{}", sign("not-the-secret", s.as_bytes()));
        assert_eq!(
            verify_auth(KEY, SECRET, Some(&forged), s.as_bytes()),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_auth(KEY, SECRET, Some("nocolon"), s.as_bytes()),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify_auth(KEY, SECRET, Some(""), s.as_bytes()),
            Err(AuthError::Missing)
        );
        assert_eq!(
            verify_auth(KEY, SECRET, Some(&format!("{KEY}:zz")), s.as_bytes()),
            Err(AuthError::BadSignature)
        );
    }
}
