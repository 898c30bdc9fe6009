//! HTTP API request signatures (summary §11.1): `auth_signature` over method, path and the
//! sorted, unescaped query; `body_md5` over the raw body; a ±600 s timestamp window.

use md5::{Digest, Md5};

use super::ApiError;
use crate::protocol::auth;

/// How far `auth_timestamp` may be from the server's clock.
pub const TIMESTAMP_WINDOW_SECS: i64 = 600;

/// Checks a request against the app's credentials. `query` is the raw query string.
pub fn verify(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), ApiError> {
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let given_key = get("auth_key").ok_or(ApiError::Unauthorized("missing auth_key"))?;
    let signature = get("auth_signature")
        .ok_or(ApiError::Unauthorized("missing auth_signature"))?
        .to_owned();
    let ts = get("auth_timestamp").ok_or(ApiError::Unauthorized("missing auth_timestamp"))?;
    if get("auth_version").is_none() {
        return Err(ApiError::Unauthorized("missing auth_version"));
    }
    if given_key != key {
        return Err(ApiError::Unauthorized("auth_key does not match the app"));
    }
    let ts: i64 = ts
        .parse()
        .map_err(|_| ApiError::Unauthorized("auth_timestamp is not a number"))?;
    if (now_secs - ts).abs() > TIMESTAMP_WINDOW_SECS {
        return Err(ApiError::Unauthorized(
            "auth_timestamp is more than 600 seconds from server time",
        ));
    }
    if !body.is_empty() {
        let expected = hex::encode(Md5::digest(body));
        match get("body_md5") {
            Some(md5) if md5.eq_ignore_ascii_case(&expected) => {}
            Some(_) => return Err(ApiError::Unauthorized("body_md5 does not match the body")),
            None => {
                return Err(ApiError::Unauthorized(
                    "missing body_md5 for a non-empty body",
                ))
            }
        }
    }
    params.retain(|(k, _)| k != "auth_signature");
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let to_sign = format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        query.join("&")
    );
    if auth::verify_hex(secret, to_sign.as_bytes(), &signature) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("invalid auth_signature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of the protocol summary §11.1.
    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const QUERY: &str = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn documented_vector_verifies() {
        verify(
            KEY,
            SECRET,
            "POST",
            "/apps/3/events",
            QUERY,
            BODY.as_bytes(),
            1353088179,
        )
        .unwrap();
    }

    #[test]
    fn tampering_fails() {
        let now = 1353088179;
        let err = |q: &str, body: &str, now: i64| {
            verify(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                q,
                body.as_bytes(),
                now,
            )
        };
        assert!(
            err(QUERY, &BODY.replace("foo", "bar"), now).is_err(),
            "body changed"
        );
        assert!(err(QUERY, BODY, now + 601).is_err(), "stale timestamp");
        assert!(
            err(&QUERY.replace("da4548", "da4549"), BODY, now).is_err(),
            "signature changed"
        );
        assert!(err(&QUERY.replace("auth_key=278d", "auth_key=999d"), BODY, now).is_err());
        assert!(
            verify(
                KEY,
                SECRET,
                "POST",
                "/apps/4/events",
                QUERY,
                BODY.as_bytes(),
                now
            )
            .is_err(),
            "path is signed"
        );
        let no_md5 = QUERY.replace("body_md5=ec365a775a4cd0599faeb73354201b6f&", "");
        assert!(err(&no_md5, BODY, now).is_err());
    }
}
