//! The one error type of the crate: what went wrong ([`ErrorKind`]), whether trying again can
//! help ([`Error::is_transient`]), and the service's AMQP condition when there is one.

use std::fmt;

/// What kind of failure an [`Error`] is. Match on this, not on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection string is malformed or lacks a required part.
    InvalidConnectionString,
    /// An argument or option is out of range or inconsistent (also `com.microsoft:argument-error`).
    InvalidArgument,
    /// The credential was refused (`amqp:unauthorized-access`, including a rejected put-token).
    Unauthorized,
    /// The event hub, partition or consumer group does not exist (`amqp:not-found`).
    NotFound,
    /// An event or batch is larger than the link allows (`amqp:link:message-size-exceeded`).
    MessageTooLarge,
    /// A namespace quota was exceeded (`amqp:resource-limit-exceeded`).
    QuotaExceeded,
    /// The service is busy (`com.microsoft:server-busy`); transient.
    ServerBusy,
    /// An operation or try did not complete in time (`com.microsoft:timeout`); transient.
    Timeout,
    /// The service failed internally or answered unexpectedly (`amqp:internal-error`); transient.
    ServiceError,
    /// The connection was lost, refused or closed by the service; transient (reconnects).
    ConnectionLost,
    /// The link was detached by the service (`amqp:link:detach-forced`); transient.
    LinkDetached,
    /// An idempotent publication did not continue the sequence
    /// (`com.microsoft:out-of-order-sequence`).
    OutOfOrderSequence,
    /// Another producer took this idempotent producer's partition
    /// (`com.microsoft:producer-epoch-stolen`).
    ProducerEpochStolen,
    /// The credential could not produce a token (e.g. an identity provider error).
    Credential,
    /// TLS could not be set up (bad certificate, bad server name).
    Tls,
    /// The client was closed; nothing more can be done with it.
    Closed,
    /// An event was abandoned unsent because the producer was closed without flushing.
    Abandoned,
}

impl ErrorKind {
    /// Whether an operation that failed this way may succeed if tried again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::ServerBusy
                | Self::Timeout
                | Self::ServiceError
                | Self::ConnectionLost
                | Self::LinkDetached
        )
    }

    /// The kind the service means by an AMQP error condition.
    ///
    /// Conditions this crate does not know are taken as a service problem (transient, bounded
    /// by the retry policy), as the official .NET client does.
    pub fn from_condition(condition: &str) -> Self {
        match condition {
            "com.microsoft:server-busy" => Self::ServerBusy,
            "com.microsoft:timeout" | "amqp:timeout" => Self::Timeout,
            "amqp:resource-limit-exceeded" => Self::QuotaExceeded,
            "amqp:link:message-size-exceeded" => Self::MessageTooLarge,
            "amqp:not-found" | "com.microsoft:entity-disabled" => Self::NotFound,
            "amqp:unauthorized-access" | "com.microsoft:auth-failed" => Self::Unauthorized,
            "com.microsoft:argument-error"
            | "com.microsoft:argument-out-of-range"
            | "amqp:invalid-field"
            | "amqp:decode-error"
            | "amqp:not-implemented"
            | "amqp:precondition-failed"
            | "com.microsoft:precondition-failed" => Self::InvalidArgument,
            "com.microsoft:out-of-order-sequence" => Self::OutOfOrderSequence,
            "com.microsoft:producer-epoch-stolen" => Self::ProducerEpochStolen,
            "amqp:connection:forced"
            | "amqp:connection:framing-error"
            | "amqp:connection:redirect" => Self::ConnectionLost,
            "amqp:link:detach-forced" | "amqp:link:redirect" | "amqp:link:stolen" => {
                Self::LinkDetached
            }
            _ => Self::ServiceError,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::InvalidConnectionString => "invalid connection string",
            Self::InvalidArgument => "invalid argument",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not found",
            Self::MessageTooLarge => "message too large",
            Self::QuotaExceeded => "quota exceeded",
            Self::ServerBusy => "server busy",
            Self::Timeout => "timed out",
            Self::ServiceError => "service error",
            Self::ConnectionLost => "connection lost",
            Self::LinkDetached => "link detached",
            Self::OutOfOrderSequence => "out-of-order sequence",
            Self::ProducerEpochStolen => "producer epoch stolen",
            Self::Credential => "credential error",
            Self::Tls => "TLS error",
            Self::Closed => "client closed",
            Self::Abandoned => "abandoned",
        };
        f.write_str(text)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of this crate. Cheap to move; share it with `Arc` where several events fail as one.
///
/// Its text never contains a key or a token.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}{}", condition_suffix(.condition))]
pub struct Error {
    kind: ErrorKind,
    message: String,
    condition: Option<String>,
    #[source]
    source: Option<Source>,
}

fn condition_suffix(condition: &Option<String>) -> String {
    condition
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

impl Error {
    /// An error of `kind` with a message saying what happened.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            condition: None,
            source: None,
        }
    }

    /// An error for an AMQP error condition sent by the service.
    pub fn from_condition(condition: &str, description: Option<&str>) -> Self {
        Self {
            kind: ErrorKind::from_condition(condition),
            message: description
                .unwrap_or("the service refused the operation")
                .to_string(),
            condition: Some(condition.to_string()),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Adds what is known of the consequences to the message.
    pub(crate) fn with_context(mut self, context: &str) -> Self {
        self.message.push_str(context);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the operation may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The AMQP error condition the service sent, if this error came from one.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_deref()
    }

    /// The message, without kind or condition.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds_are_the_ones_a_retry_can_fix() {
        for condition in [
            "com.microsoft:server-busy",
            "com.microsoft:timeout",
            "amqp:internal-error",
            "amqp:connection:forced",
            "amqp:link:detach-forced",
            "com.microsoft:something-new",
        ] {
            assert!(
                ErrorKind::from_condition(condition).is_transient(),
                "{condition}"
            );
        }
        for condition in [
            "amqp:resource-limit-exceeded",
            "amqp:link:message-size-exceeded",
            "com.microsoft:argument-error",
            "com.microsoft:argument-out-of-range",
            "amqp:not-found",
            "amqp:unauthorized-access",
            "com.microsoft:out-of-order-sequence",
            "com.microsoft:producer-epoch-stolen",
        ] {
            assert!(
                !ErrorKind::from_condition(condition).is_transient(),
                "{condition}"
            );
        }
    }

    #[test]
    fn display_names_kind_message_and_condition() {
        let e = Error::from_condition("com.microsoft:server-busy", Some("try later"));
        assert_eq!(
            e.to_string(),
            "server busy: try later (com.microsoft:server-busy)"
        );
        assert_eq!(e.kind(), ErrorKind::ServerBusy);
        assert_eq!(e.condition(), Some("com.microsoft:server-busy"));
        let e = Error::new(ErrorKind::Closed, "the producer is closed");
        assert_eq!(e.to_string(), "client closed: the producer is closed");
    }
}
