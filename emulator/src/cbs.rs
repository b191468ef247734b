//! `$cbs` put-token: checks a token and records the audience it authorizes on the connection.

use std::time::Duration;

use fe2o3_amqp_types::messaging::{Body, Message};
use fe2o3_amqp_types::primitives::Value;
use tokio::time::Instant;

use crate::connection::{entity_path, ConnectionState, Reply};
use crate::message::{body_text, reply, text_property};
use crate::namespace::Namespace;
use crate::sas::{resource_covers, validate_sas_token};

const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
const JWT_TOKEN_TYPE: &str = "jwt";
/// How long a JWT is taken to be valid when the request gives no expiration.
const DEFAULT_JWT_LIFETIME: Duration = Duration::from_secs(3600);

pub(crate) const UNAUTHORIZED: &str = "amqp:unauthorized-access";
pub(crate) const NOT_FOUND: &str = "amqp:not-found";

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The instant a token that expires at `unix_seconds` stops being valid.
fn instant_of_unix(unix_seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(unix_seconds.saturating_sub(now_unix()))
}

/// Answers one `$cbs` request.
pub(crate) fn handle(
    ns: &Namespace,
    conn: &ConnectionState,
    request: &Message<Body<Value>>,
) -> Reply {
    match authorize(ns, request) {
        Ok((audience, expires_at)) => {
            conn.grant(&audience, expires_at);
            reply(request, 202, "Accepted", None, Body::Empty)
        }
        Err(refusal) => reply(
            request,
            refusal.status,
            &refusal.description,
            Some(refusal.condition),
            Body::Empty,
        ),
    }
}

pub(crate) struct Refusal {
    pub status: i32,
    pub condition: &'static str,
    pub description: String,
}

impl Refusal {
    pub(crate) fn unauthorized(description: impl Into<String>) -> Self {
        Self {
            status: 401,
            condition: UNAUTHORIZED,
            description: description.into(),
        }
    }

    fn bad_request(description: impl Into<String>) -> Self {
        Self {
            status: 400,
            condition: "com.microsoft:argument-error",
            description: description.into(),
        }
    }
}

fn authorize(ns: &Namespace, request: &Message<Body<Value>>) -> Result<(String, Instant), Refusal> {
    let operation = text_property(request, "operation").unwrap_or_default();
    if operation != "put-token" {
        return Err(Refusal::bad_request(format!(
            "unsupported $cbs operation '{operation}'"
        )));
    }
    let audience = text_property(request, "name")
        .ok_or_else(|| Refusal::bad_request("put-token without a 'name' (audience)"))?;
    let token_type = text_property(request, "type")
        .ok_or_else(|| Refusal::bad_request("put-token without a 'type'"))?;
    let token = body_text(&request.body)
        .ok_or_else(|| Refusal::bad_request("put-token without a token in its body"))?;
    if ns.faults.tokens_rejected() {
        return Err(Refusal::unauthorized("token rejected (fault injection)"));
    }
    check_audience(ns, &audience)?;
    let expires_at = match token_type.as_str() {
        SAS_TOKEN_TYPE => check_sas(ns, &token, &audience)?,
        JWT_TOKEN_TYPE if ns.settings.accept_jwt => jwt_expiry(request),
        JWT_TOKEN_TYPE => return Err(Refusal::unauthorized("JWT tokens are not accepted here")),
        other => {
            return Err(Refusal::unauthorized(format!(
                "unknown token type '{other}'"
            )))
        }
    };
    Ok((audience, expires_at))
}

/// The audience must name this namespace or one of its hubs.
fn check_audience(ns: &Namespace, audience: &str) -> Result<(), Refusal> {
    let path = entity_path(audience);
    let hub = path.split('/').next().unwrap_or_default();
    if hub.is_empty() || ns.hub(hub).is_some() {
        return Ok(());
    }
    Err(Refusal {
        status: 404,
        condition: NOT_FOUND,
        description: format!("The messaging entity '{hub}' could not be found."),
    })
}

/// Validates a SAS token for `audience`; returns when it expires.
pub(crate) fn check_sas(ns: &Namespace, token: &str, audience: &str) -> Result<Instant, Refusal> {
    let sas = validate_sas_token(token, &ns.settings.keys, now_unix())
        .map_err(|e| Refusal::unauthorized(format!("invalid shared access signature: {e}")))?;
    if !resource_covers(&sas.resource, audience) {
        return Err(Refusal::unauthorized(format!(
            "the token's resource does not cover the audience '{audience}'"
        )));
    }
    Ok(instant_of_unix(sas.expires_at_unix))
}

fn jwt_expiry(request: &Message<Body<Value>>) -> Instant {
    let expiration = request
        .application_properties
        .as_ref()
        .and_then(|p| p.0.get("expiration"))
        .and_then(|v| match v {
            fe2o3_amqp_types::primitives::SimpleValue::Timestamp(t) => Some(t.milliseconds()),
            _ => None,
        });
    match expiration {
        Some(ms) => instant_of_unix((ms.max(0) / 1000) as u64),
        None => Instant::now() + DEFAULT_JWT_LIFETIME,
    }
}
