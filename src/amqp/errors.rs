//! fe2o3-amqp's errors, mapped once to the crate's [`Error`], with what they broke.

use fe2o3_amqp::connection::ConnectionStopReason;
use fe2o3_amqp::link::{
    DetachError, LinkStateError, ReceiverAttachError, SendError, SenderAttachError,
    SessionStopReason,
};
use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::types::primitives::Value;

use crate::error::{Error, ErrorKind};

/// What a failure leaves unusable, so the caller knows what to rebuild before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Broken {
    /// Only this operation failed; the link is fine.
    Nothing,
    /// The link is gone: attach a new one.
    Link,
    /// The session or connection is gone: reconnect.
    Connection,
}

/// A mapped failure.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: Error,
    pub broken: Broken,
}

impl Failure {
    pub(crate) fn new(error: Error, broken: Broken) -> Self {
        Self { error, broken }
    }
}

/// The symbol of an AMQP error condition.
pub(crate) fn condition_symbol(condition: &ErrorCondition) -> String {
    match serde_amqp::to_value(condition) {
        Ok(Value::Symbol(s)) => s.as_str().to_string(),
        Ok(Value::String(s)) => s,
        _ => "amqp:internal-error".to_string(),
    }
}

/// The crate error for an AMQP error sent by the service.
pub(crate) fn from_amqp_error(error: &AmqpError) -> Error {
    Error::from_condition(
        &condition_symbol(&error.condition),
        error.description.as_deref(),
    )
}

fn connection_lost(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::ConnectionLost,
        format!("the connection was lost: {what}"),
    )
}

pub(crate) fn from_connection_stop(reason: &ConnectionStopReason) -> Error {
    match reason {
        ConnectionStopReason::ClosedWithError(e)
        | ConnectionStopReason::RemoteClosedWithError(e) => {
            let mapped = from_amqp_error(e);
            // Whatever the condition, the connection is gone; unauthorized and similar keep
            // their kind so they are not retried.
            if mapped.kind() == ErrorKind::ServiceError {
                connection_lost(mapped)
            } else {
                mapped
            }
        }
        ConnectionStopReason::Closed | ConnectionStopReason::RemoteClosed => {
            connection_lost("closed")
        }
    }
}

pub(crate) fn from_session_stop(reason: &SessionStopReason) -> Failure {
    let error = match reason {
        SessionStopReason::ConnectionStopped(c) => from_connection_stop(c),
        SessionStopReason::EndedWithError(e) | SessionStopReason::RemoteEndedWithError(e) => {
            let mapped = from_amqp_error(e);
            if mapped.kind() == ErrorKind::ServiceError {
                connection_lost(mapped)
            } else {
                mapped
            }
        }
        SessionStopReason::Ended | SessionStopReason::RemoteEnded => {
            connection_lost("the session ended")
        }
    };
    Failure::new(error, Broken::Connection)
}

/// A detach the service sent: its condition, and the link is gone.
fn detached(error: Option<&AmqpError>) -> Failure {
    let error = match error {
        Some(e) => from_amqp_error(e),
        None => Error::new(ErrorKind::LinkDetached, "the service detached the link"),
    };
    Failure::new(error, Broken::Link)
}

pub(crate) fn from_detach_error(error: &DetachError) -> Failure {
    match error {
        DetachError::SessionStopped(reason) => from_session_stop(reason),
        DetachError::RemoteDetachedWithError(e) | DetachError::RemoteClosedWithError(e) => {
            detached(Some(e))
        }
        other => {
            let _ = other;
            detached(None)
        }
    }
}

pub(crate) fn from_link_state(error: &LinkStateError) -> Failure {
    match error {
        LinkStateError::SessionStopped(reason) => from_session_stop(reason),
        LinkStateError::RemoteDetachedWithError(e) | LinkStateError::RemoteClosedWithError(e) => {
            detached(Some(e))
        }
        _ => detached(None),
    }
}

pub(crate) fn from_send_error(error: &SendError) -> Failure {
    match error {
        SendError::LinkStateError(e) => from_link_state(e),
        SendError::Detached(e) => from_detach_error(e),
        SendError::MessageSizeExceeded(e) => Failure::new(
            Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "the delivery ({} bytes) exceeds the link's max-message-size ({} bytes)",
                    e.size, e.max_size
                ),
            ),
            Broken::Nothing,
        ),
        other => Failure::new(
            Error::new(ErrorKind::ServiceError, format!("the send failed: {other}")),
            Broken::Link,
        ),
    }
}

/// How an attach ended without a link, whichever side's attach it was.
enum AttachEnd<'a> {
    SessionStopped(&'a SessionStopReason),
    Refused(&'a AmqpError),
    SessionNotMapped,
    Other(&'a dyn std::fmt::Display),
}

/// A stopped session is a lost connection (whatever stage the attach was in); the service's
/// refusal keeps its condition.
fn from_attach_end(end: AttachEnd<'_>) -> Failure {
    match end {
        AttachEnd::SessionStopped(reason) => from_session_stop(reason),
        AttachEnd::Refused(e) => detached(Some(e)),
        AttachEnd::SessionNotMapped => Failure::new(
            connection_lost("the session is not usable"),
            Broken::Connection,
        ),
        AttachEnd::Other(other) => Failure::new(
            Error::new(
                ErrorKind::ServiceError,
                format!("the link could not attach: {other}"),
            ),
            Broken::Link,
        ),
    }
}

pub(crate) fn from_attach_error(error: &SenderAttachError) -> Failure {
    from_attach_end(match error {
        SenderAttachError::SessionStopped(reason) => AttachEnd::SessionStopped(reason),
        SenderAttachError::RemoteClosedWithError(e) => AttachEnd::Refused(e),
        SenderAttachError::SessionNotMapped => AttachEnd::SessionNotMapped,
        other => AttachEnd::Other(other),
    })
}

/// A receiving link that could not attach (the reply link of `$cbs` or `$management`).
pub(crate) fn from_receiver_attach_error(error: &ReceiverAttachError) -> Failure {
    from_attach_end(match error {
        ReceiverAttachError::SessionStopped(reason) => AttachEnd::SessionStopped(reason),
        ReceiverAttachError::RemoteClosedWithError(e) => AttachEnd::Refused(e),
        ReceiverAttachError::SessionNotMapped => AttachEnd::SessionNotMapped,
        other => AttachEnd::Other(other),
    })
}

/// The failure of an operation whose connection ended while it waited, whatever the stage.
pub(crate) fn lost_during(stage: &str) -> Failure {
    Failure::new(
        connection_lost(format_args!("the connection ended during {stage}")),
        Broken::Connection,
    )
}

/// The result of a delivery's outcome: accepted, or the service's reason.
pub(crate) fn from_outcome(outcome: Outcome) -> Result<(), Failure> {
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        Outcome::Rejected(rejected) => {
            let error = match &rejected.error {
                Some(e) => from_amqp_error(e),
                None => Error::new(
                    ErrorKind::ServiceError,
                    "the service rejected the delivery without a reason",
                ),
            };
            // Refused for its size although within the size the link announced: the service
            // lowered its limit, and a new link learns the new one.
            let broken = if error.kind() == ErrorKind::MessageTooLarge {
                Broken::Link
            } else {
                Broken::Nothing
            };
            Err(Failure::new(error, broken))
        }
        Outcome::Released(_) => Err(Failure::new(
            Error::new(
                ErrorKind::ServiceError,
                "the service released the delivery unprocessed",
            ),
            Broken::Nothing,
        )),
        Outcome::Modified(_) => Err(Failure::new(
            Error::new(
                ErrorKind::ServiceError,
                "the service returned the delivery modified",
            ),
            Broken::Nothing,
        )),
        #[allow(unreachable_patterns)]
        _ => Err(Failure::new(
            Error::new(ErrorKind::ServiceError, "unexpected delivery outcome"),
            Broken::Nothing,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{AmqpError as AmqpErrorCondition, LinkError};
    use fe2o3_amqp::types::primitives::Symbol;

    #[test]
    fn conditions_keep_their_symbols() {
        assert_eq!(
            condition_symbol(&ErrorCondition::AmqpError(
                AmqpErrorCondition::UnauthorizedAccess
            )),
            "amqp:unauthorized-access"
        );
        assert_eq!(
            condition_symbol(&ErrorCondition::LinkError(LinkError::DetachForced)),
            "amqp:link:detach-forced"
        );
        assert_eq!(
            condition_symbol(&ErrorCondition::Custom(Symbol::from(
                "com.microsoft:server-busy"
            ))),
            "com.microsoft:server-busy"
        );
    }

    #[test]
    fn rejected_outcome_maps_its_condition() {
        let rejected = fe2o3_amqp::types::messaging::Rejected {
            error: Some(AmqpError::new(
                ErrorCondition::Custom(Symbol::from("com.microsoft:server-busy")),
                Some("busy".to_string()),
                None,
            )),
        };
        let failure = from_outcome(Outcome::Rejected(rejected)).unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::ServerBusy);
        assert_eq!(failure.broken, Broken::Nothing);
        let too_large = fe2o3_amqp::types::messaging::Rejected {
            error: Some(AmqpError::new(
                ErrorCondition::LinkError(LinkError::MessageSizeExceeded),
                None,
                None,
            )),
        };
        let failure = from_outcome(Outcome::Rejected(too_large)).unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::MessageTooLarge);
        assert_eq!(
            failure.broken,
            Broken::Link,
            "a new link learns the new limit"
        );
    }

    #[test]
    fn forced_connection_close_is_transient_and_breaks_the_connection() {
        let reason = SessionStopReason::ConnectionStopped(
            ConnectionStopReason::RemoteClosedWithError(AmqpError::new(
                ErrorCondition::Custom(Symbol::from("amqp:connection:forced")),
                None,
                None,
            )),
        );
        let failure = from_session_stop(&reason);
        assert_eq!(failure.broken, Broken::Connection);
        assert!(failure.error.is_transient());
    }
}
