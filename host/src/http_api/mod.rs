//! The Pusher HTTP API (summary §11): publish, batch publish, channel queries, presence users
//! and terminate connections, each signed with the app's secret.

mod handlers;
mod signature;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::Metrics;
use crate::server::State;

/// Errors an API caller sees; each maps to one status and a JSON `{"error": ...}` body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        json_response(self.status(), body)
    }
}

pub fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// The routes under `/apps/{app_id}/`, parsed from the path's segments.
enum Route {
    Events,
    BatchEvents,
    Channels,
    Channel(String),
    ChannelUsers(String),
    TerminateUser(String),
}

fn decode_segment(s: &str) -> Result<String, ApiError> {
    percent_decode(s).ok_or_else(|| ApiError::BadRequest("path segment is not valid UTF-8".into()))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() && s.is_char_boundary(i + 3) {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn route(rest: &[&str]) -> Result<Route, ApiError> {
    Ok(match rest {
        ["events"] => Route::Events,
        ["batch_events"] => Route::BatchEvents,
        ["channels"] => Route::Channels,
        ["channels", name] => Route::Channel(decode_segment(name)?),
        ["channels", name, "users"] => Route::ChannelUsers(decode_segment(name)?),
        ["users", user, "terminate_connections"] => Route::TerminateUser(decode_segment(user)?),
        _ => return Err(ApiError::NotFound("no such API endpoint".into())),
    })
}

/// Handles a request whose path starts with `/apps/`.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let metrics = state.hub.metrics.clone();
    let response = match serve(&state, req).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => {
            tracing::debug!(error = %e, "HTTP API request refused");
            e.into_response()
        }
    };
    let counter = match response.status().as_u16() {
        200..=299 => &metrics.http_ok,
        400..=499 => &metrics.http_client_error,
        _ => &metrics.http_server_error,
    };
    Metrics::inc(counter);
    response
}

async fn serve(state: &State, req: Request<Incoming>) -> Result<String, ApiError> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (app_id, rest) = match segments.as_slice() {
        ["apps", id, rest @ ..] if !rest.is_empty() => (decode_segment(id)?, rest),
        _ => return Err(ApiError::NotFound("no such API endpoint".into())),
    };
    let route = route(rest)?;
    let app = state
        .hub
        .by_id(&app_id)
        .ok_or_else(|| ApiError::NotFound(format!("app {app_id:?} does not exist")))?
        .clone();

    let limit = state.config.server.max_request_bytes;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::TooLarge(format!(
                "request body exceeds {limit} bytes"
            )))
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "could not read the body: {e}"
            )))
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    signature::verify(
        &app.config.key,
        &app.config.secret,
        method.as_str(),
        &path,
        &query,
        &body,
        now,
    )?;
    if !app.config.enabled {
        return Err(ApiError::Forbidden("app is disabled"));
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let api = handlers::Api {
        app: &app,
        hub: &state.hub,
        cluster: state.cluster.as_ref(),
    };
    match (method, route) {
        (Method::POST, Route::Events) => api.events(&body).await,
        (Method::POST, Route::BatchEvents) => api.batch_events(&body).await,
        (Method::GET, Route::Channels) => {
            api.channels(param("filter_by_prefix"), param("info")).await
        }
        (Method::GET, Route::Channel(name)) => api.channel(&name, param("info")).await,
        (Method::GET, Route::ChannelUsers(name)) => api.users(&name),
        (Method::POST, Route::TerminateUser(user)) => api.terminate(&user),
        _ => Err(ApiError::MethodNotAllowed),
    }
}
