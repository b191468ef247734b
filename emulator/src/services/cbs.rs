//! `$cbs` put-token: checks a token and records the audience it authorizes on the connection.

use std::time::Duration;

use fe2o3_amqp_types::messaging::{Body, Message};
use fe2o3_amqp_types::primitives::Value;
use tokio::time::Instant;

use super::refusal::{now_unix, Refusal, NOT_FOUND};
use crate::connection::{entity_path, ConnectionState, Reply};
use crate::entities::namespace::Namespace;
use crate::message::{body_text, reply, text_property};
use crate::sas::{resource_covers, validate_sas_token, SasError};

const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
const JWT_TOKEN_TYPE: &str = "jwt";
/// How long a JWT is taken to be valid when the request gives no expiration.
const DEFAULT_JWT_LIFETIME: Duration = Duration::from_secs(3600);

/// Grants last at most this long: a token's expiry is the client's choice, and adding an
/// unbounded one to the clock would overflow it (a panic). Tokio caps its own far-future
/// timers at 30 years too.
const MAX_GRANT: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// The instant a token that expires at `unix_seconds` stops being valid (to the sub-second:
/// a grant counted from the whole second would outlive its token by up to a second).
fn instant_of_unix(unix_seconds: u64) -> Instant {
    let now = Instant::now();
    // A time past what the clock can hold is as good as the longest grant.
    let lifetime = std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(unix_seconds))
        .map_or(MAX_GRANT, |expires_at| {
            expires_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        })
        .min(MAX_GRANT);
    // With the cap this cannot fail on any real clock; an already-expired grant is the safe
    // answer if it ever did.
    now.checked_add(lifetime).unwrap_or(now)
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
            reply(request, 202, Some("Accepted"), None, Body::Empty)
        }
        Err(refusal) => reply(
            request,
            refusal.status,
            Some(&refusal.description),
            Some(refusal.condition),
            Body::Empty,
        ),
    }
}

fn authorize(ns: &Namespace, request: &Message<Body<Value>>) -> Result<(String, Instant), Refusal> {
    let operation = text_property(request, "operation").unwrap_or_default();
    if operation != "put-token" {
        return Err(Refusal::bad_request(format!(
            "unsupported $cbs operation '{operation}'"
        )));
    }
    let audience = text_property(request, "name").ok_or_else(|| bad_property("name"))?;
    let token_type = text_property(request, "type").ok_or_else(|| bad_property("type"))?;
    let token = body_text(&request.body)
        .ok_or_else(|| Refusal::bad_request("put-token without a token in its body"))?;
    if ns.faults.tokens_rejected() {
        return Err(Refusal::auth_failed(format!(
            "{INVALID_SIGNATURE} (fault injection)"
        )));
    }
    check_audience(ns, &audience)?;
    let expires_at =
        match token_type.as_str() {
            SAS_TOKEN_TYPE => check_sas(ns, &token, &audience)?,
            JWT_TOKEN_TYPE if ns.settings.accept_jwt => jwt_expiry(request)?,
            JWT_TOKEN_TYPE => return Err(Refusal::auth_failed(
                "InvalidIssuer: JWT tokens are not accepted by this emulator (accept_jwt is off).",
            )),
            _ => return Err(bad_property("type")),
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

/// The service's answer to a put-token whose `property` is absent or not understood (400).
fn bad_property(property: &str) -> Refusal {
    Refusal::bad_request(format!(
        "Property '{property}' in the 'application-properties' section is either missing, has \
         the wrong type, or has an unexpected value."
    ))
}

const INVALID_SIGNATURE: &str = "InvalidSignature: The token has an invalid signature.";

/// The `status-description` the service gives for a refused SAS token. The texts of an
/// invalid signature, an expired token and an unknown key name are the service's; the service
/// has no text of its own for a token it cannot parse that we know of.
fn sas_refusal(error: &SasError) -> String {
    match error {
        SasError::BadSignature => INVALID_SIGNATURE.to_string(),
        SasError::UnknownKeyName => "InvalidIssuer: Token issuer is invalid.".to_string(),
        SasError::Expired { expires_at_unix } => format!(
            "ExpiredToken: The token is expired. Expiration time: '{}'",
            utc_text(*expires_at_unix)
        ),
        SasError::Malformed(what) => format!("MalformedToken: {what}."),
    }
}

/// `2021-02-01 06:19:27Z`, the service's way of writing an expiry.
fn utc_text(unix_seconds: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{unix_seconds} seconds after 1970-01-01"))
}

/// Validates a SAS token for `audience`; returns when it expires.
pub(crate) fn check_sas(ns: &Namespace, token: &str, audience: &str) -> Result<Instant, Refusal> {
    let sas = validate_sas_token(token, &ns.settings.keys, now_unix())
        .map_err(|e| Refusal::auth_failed(sas_refusal(&e)))?;
    if !resource_covers(&sas.resource, audience) {
        return Err(Refusal::auth_failed(format!(
            "InvalidAudience: The token's audience '{}' does not cover '{audience}'.",
            sas.resource
        )));
    }
    Ok(instant_of_unix(sas.expires_at_unix))
}

/// When a JWT stops being valid: its request's `expiration`, or an hour from now without one.
/// An expiration that has passed is refused, as an expired SAS token is.
fn jwt_expiry(request: &Message<Body<Value>>) -> Result<Instant, Refusal> {
    let expiration = request
        .application_properties
        .as_ref()
        .and_then(|p| p.0.get("expiration"))
        .and_then(|v| match v {
            fe2o3_amqp_types::primitives::SimpleValue::Timestamp(t) => Some(t.milliseconds()),
            _ => None,
        });
    match expiration {
        Some(ms) if ms.max(0) / 1000 <= now_unix() as i64 => Err(Refusal::auth_failed(format!(
            "ExpiredToken: The token is expired. Expiration time: '{}'",
            utc_text((ms.max(0) / 1000) as u64)
        ))),
        Some(ms) => Ok(instant_of_unix((ms.max(0) / 1000) as u64)),
        None => Ok(Instant::now() + DEFAULT_JWT_LIFETIME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::namespace::Settings;
    use crate::sas::{generate_sas_token, SasKey};
    use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties};
    use fe2o3_amqp_types::primitives::{SimpleValue, Timestamp};

    fn key() -> SasKey {
        SasKey {
            name: "RootManageSharedAccessKey".into(),
            key: "secret".into(),
        }
    }

    fn namespace() -> Namespace {
        let settings = Settings {
            keys: vec![key()],
            require_authorization: true,
            accept_jwt: true,
            consumer_groups: vec!["$Default".into()],
            hub_consumer_groups: Default::default(),
            retention: None,
            idle_timeout: crate::entities::namespace::SERVICE_IDLE_TIMEOUT,
        };
        Namespace::new(settings, vec![("hub".into(), 2)], 1024)
    }

    fn put_token(
        token_type: &str,
        token: &str,
        expiration_ms: Option<i64>,
    ) -> Message<Body<Value>> {
        let mut props = ApplicationProperties::builder()
            .insert("operation", SimpleValue::String("put-token".into()))
            .insert("name", SimpleValue::String("sb://ns.example/hub".into()))
            .insert("type", SimpleValue::String(token_type.into()));
        if let Some(ms) = expiration_ms {
            props = props.insert(
                "expiration",
                SimpleValue::Timestamp(Timestamp::from_milliseconds(ms)),
            );
        }
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: Some(props.build()),
            body: Body::Value(AmqpValue(Value::String(token.into()))),
            footer: None,
        }
    }

    fn status(reply: &Reply) -> Option<i32> {
        match reply
            .application_properties
            .as_ref()?
            .0
            .get("status-code")?
        {
            SimpleValue::Int(code) => Some(*code),
            _ => None,
        }
    }

    /// A validly signed token whose expiry is beyond what the clock can represent made
    /// `Instant + Duration` overflow and panic (the `emulator_request` fuzz target signs its
    /// tokens so that it reaches this).
    #[test]
    fn far_future_expiries_are_granted_without_overflow() {
        let ns = namespace();
        let conn = ConnectionState::default();
        for expiry in [u64::MAX, u64::MAX / 2, i64::MAX as u64 + 1] {
            let token = generate_sas_token("sb://ns.example/hub", &key(), expiry);
            let request = put_token(SAS_TOKEN_TYPE, &token, None);
            assert_eq!(status(&handle(&ns, &conn, &request)), Some(202), "{expiry}");
            assert!(conn.authorized_until("hub").is_some());
        }
        let request = put_token(JWT_TOKEN_TYPE, "a.b.c", Some(i64::MAX));
        assert_eq!(status(&handle(&ns, &conn, &request)), Some(202));
    }

    /// Found by the `emulator_request` fuzz target: a JWT put-token whose expiration had
    /// passed was answered 202 although it authorized nothing.
    #[test]
    fn jwt_tokens_that_expired_are_refused() {
        let ns = namespace();
        let conn = ConnectionState::default();
        let past_ms = (now_unix() as i64 - 60) * 1000;
        for expiration in [past_ms, 0, i64::MIN] {
            let request = put_token(JWT_TOKEN_TYPE, "a.b.c", Some(expiration));
            let reply = handle(&ns, &conn, &request);
            assert_eq!(status(&reply), Some(401), "{expiration}");
        }
        assert!(conn.authorized_until("hub").is_none());
        let future_ms = (now_unix() as i64 + 600) * 1000;
        let request = put_token(JWT_TOKEN_TYPE, "a.b.c", Some(future_ms));
        assert_eq!(status(&handle(&ns, &conn, &request)), Some(202));
        assert!(conn.authorized_until("hub").is_some());
    }
}
