//! `$cbs` put-token: authorizes an audience on the connection with a token.

use fe2o3_amqp::types::messaging::{AmqpValue, Body};
use fe2o3_amqp::types::primitives::{SimpleValue, Timestamp, Value};

use super::errors::Failure;
use super::request_response::RequestResponseLink;
use crate::auth::{Token, TokenType};
use crate::error::ErrorKind;

/// Puts `token` for `audience`; Ok once the service answered 202 (or 200).
pub(crate) async fn put_token(
    link: &mut RequestResponseLink,
    audience: &str,
    token: &Token,
) -> Result<(), Failure> {
    let token_type = match token.token_type {
        TokenType::SharedAccessSignature => "servicebus.windows.net:sastoken",
        TokenType::Jwt => "jwt",
    };
    let expiration = token
        .expires_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let properties = vec![
        ("operation", SimpleValue::String("put-token".into())),
        ("type", SimpleValue::String(token_type.into())),
        ("name", SimpleValue::String(audience.into())),
        (
            "expiration",
            SimpleValue::Timestamp(Timestamp::from_milliseconds(expiration)),
        ),
    ];
    let body = Body::Value(AmqpValue(Value::String(token.value.clone())));
    let response = link.call(properties, body).await?;
    if response.status == 200 || response.status == 202 {
        return Ok(());
    }
    let mut error = response
        .require(202, "put-token")
        .err()
        .unwrap_or_else(|| crate::Error::new(ErrorKind::Unauthorized, "put-token was refused"));
    if error.kind() == ErrorKind::ServiceError {
        error = crate::Error::new(ErrorKind::Unauthorized, error.message().to_string());
    }
    Err(Failure::new(error, super::errors::Broken::Nothing))
}
