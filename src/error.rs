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
    /// The connection was lost or closed by the service after it was open; transient
    /// (reconnects).
    ConnectionLost,
    /// No connection could be made: refused, unreachable, or the handshake timed out;
    /// transient. A wrong port or a service that is down looks like this.
    ConnectionFailed,
    /// The host name does not resolve (DNS). Not transient: it is not retried, as a typo in
    /// the namespace or endpoint is the usual cause.
    HostNotFound,
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
    /// An event was abandoned unsent: the producer was closed without flushing, or
    /// [`clear`](crate::BufferedProducerClient::clear) was called.
    Abandoned,
    /// The buffer had no room and the call does not wait
    /// ([`try_enqueue_event`](crate::BufferedProducerClient::try_enqueue_event)); transient.
    BufferFull,
    /// The ordering guard paused the partition after a batch of it failed: enqueues to it are
    /// refused until [`resume_partition`](crate::BufferedProducerClient::resume_partition).
    /// [`Error::partition_id`] names the partition.
    PartitionPaused,
}

impl ErrorKind {
    /// A stable, low-cardinality identifier of the kind in snake case (`"server_busy"`,
    /// `"timeout"`, ...), for metric attributes and log fields; the metrics and spans of the
    /// `opentelemetry` feature carry it as `error.type`. Identifiers never change once
    /// released; new kinds get new ones.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidConnectionString => "invalid_connection_string",
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MessageTooLarge => "message_too_large",
            Self::QuotaExceeded => "quota_exceeded",
            Self::ServerBusy => "server_busy",
            Self::Timeout => "timeout",
            Self::ServiceError => "service_error",
            Self::ConnectionLost => "connection_lost",
            Self::ConnectionFailed => "connection_failed",
            Self::HostNotFound => "host_not_found",
            Self::LinkDetached => "link_detached",
            Self::OutOfOrderSequence => "out_of_order_sequence",
            Self::ProducerEpochStolen => "producer_epoch_stolen",
            Self::Credential => "credential",
            Self::Tls => "tls",
            Self::Closed => "closed",
            Self::Abandoned => "abandoned",
            Self::BufferFull => "buffer_full",
            Self::PartitionPaused => "partition_paused",
        }
    }

    /// Whether an operation that failed this way may succeed if tried again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::ServerBusy
                | Self::Timeout
                | Self::ServiceError
                | Self::ConnectionLost
                | Self::ConnectionFailed
                | Self::LinkDetached
                | Self::BufferFull
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
            Self::ConnectionFailed => "could not connect",
            Self::HostNotFound => "host not found",
            Self::LinkDetached => "link detached",
            Self::OutOfOrderSequence => "out-of-order sequence",
            Self::ProducerEpochStolen => "producer epoch stolen",
            Self::Credential => "credential error",
            Self::Tls => "TLS error",
            Self::Closed => "client closed",
            Self::Abandoned => "abandoned",
            Self::BufferFull => "buffer full",
            Self::PartitionPaused => "partition paused",
        };
        f.write_str(text)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of this crate. Cheap to move; share it with `Arc` where several events fail as one.
///
/// What a caller branches on is typed: [`kind`](Self::kind),
/// [`is_transient`](Self::is_transient), [`may_have_been_published`](Self::may_have_been_published),
/// [`condition`](Self::condition) and [`partition_id`](Self::partition_id). The message is for
/// people. Its text never contains a key or a token.
pub struct Error(Box<Inner>);

/// The facts of an [`Error`], boxed so that results carrying one stay small.
#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    condition: Option<String>,
    publication: Publication,
    partition_id: Option<String>,
    source: Option<Source>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.0;
        write!(
            f,
            "{}: {}{}{}",
            inner.kind,
            inner.message,
            publication_suffix(inner.publication),
            condition_suffix(&inner.condition)
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// What is known of whether the events a failed send carried were stored after all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Publication {
    /// Nothing says they reached the service (the usual case of a refusal).
    #[default]
    NotKnownToHaveReachedTheService,
    /// A try may have reached the service before its outcome was lost (a timeout, a lost
    /// connection, a detached link, a batch cut off at close): they may have been stored.
    MayHaveBeenPublished,
    /// The service confirmed they were not stored (idempotent settling).
    ConfirmedNotPublished,
}

fn condition_suffix(condition: &Option<String>) -> String {
    condition
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn publication_suffix(publication: Publication) -> &'static str {
    match publication {
        Publication::NotKnownToHaveReachedTheService => "",
        Publication::MayHaveBeenPublished => "; the events may or may not have been published",
        Publication::ConfirmedNotPublished => "; the service confirmed they were not published",
    }
}

impl Error {
    /// An error of `kind` with a message saying what happened.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            condition: None,
            publication: Publication::default(),
            partition_id: None,
            source: None,
        }))
    }

    /// An error for an AMQP error condition sent by the service.
    pub fn from_condition(condition: &str, description: Option<&str>) -> Self {
        let mut error = Self::new(
            ErrorKind::from_condition(condition),
            description.unwrap_or("the service refused the operation"),
        );
        error.0.condition = Some(condition.to_string());
        error
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// The same error (kind, condition and the other facts kept) told in other words.
    pub(crate) fn reworded(mut self, message: impl Into<String>) -> Self {
        self.0.message = message.into();
        self
    }

    /// Marks the events of the failed operation as possibly stored by the service.
    pub(crate) fn may_have_reached_the_service(mut self) -> Self {
        if self.0.publication != Publication::ConfirmedNotPublished {
            self.0.publication = Publication::MayHaveBeenPublished;
        }
        self
    }

    /// Marks the events of the failed operation as confirmed not stored.
    pub(crate) fn settled_as_not_published(mut self) -> Self {
        self.0.publication = Publication::ConfirmedNotPublished;
        self
    }

    /// Names the partition the error is about.
    pub(crate) fn for_partition(mut self, partition_id: impl Into<String>) -> Self {
        self.0.partition_id = Some(partition_id.into());
        self
    }

    /// The same error again, without its source (errors are not `Clone`; a source is not).
    pub(crate) fn copy(&self) -> Self {
        let inner = &self.0;
        Self(Box::new(Inner {
            kind: inner.kind,
            message: inner.message.clone(),
            condition: inner.condition.clone(),
            publication: inner.publication,
            partition_id: inner.partition_id.clone(),
            source: None,
        }))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Whether the operation may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        self.0.kind.is_transient()
    }

    /// Whether the events of a failed send may have been stored by the service although the
    /// send failed: a try may have reached the service before its outcome was lost (a
    /// timeout, a lost connection, a detached link, a batch cut off by `close_abandoning`).
    /// Re-sending such events can store them twice, unless idempotent retries are on (they
    /// settle such batches with the service before reporting them). False when nothing
    /// suggests the events reached the service, and when the service confirmed they did not.
    pub fn may_have_been_published(&self) -> bool {
        self.0.publication == Publication::MayHaveBeenPublished
    }

    /// Whether the service confirmed that the events of a failed send were not stored (an
    /// idempotent producer settles every batch that fails for good; see
    /// [`BufferedProducerOptions::enable_idempotent_retries`](crate::BufferedProducerOptions::enable_idempotent_retries)).
    pub fn confirmed_not_published(&self) -> bool {
        self.0.publication == Publication::ConfirmedNotPublished
    }

    /// The AMQP error condition the service sent, if this error came from one.
    pub fn condition(&self) -> Option<&str> {
        self.0.condition.as_deref()
    }

    /// The partition this error is about, where one is known (a paused partition, a
    /// partition that does not exist).
    pub fn partition_id(&self) -> Option<&str> {
        self.0.partition_id.as_deref()
    }

    /// The message, without kind or condition.
    pub fn message(&self) -> &str {
        &self.0.message
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

    #[test]
    fn publication_is_a_typed_fact_said_once() {
        let e = Error::new(ErrorKind::Timeout, "no answer");
        assert!(!e.may_have_been_published());
        let e = e
            .may_have_reached_the_service()
            .may_have_reached_the_service();
        assert!(e.may_have_been_published());
        assert_eq!(
            e.to_string(),
            "timed out: no answer; the events may or may not have been published"
        );
        let settled = e.copy().settled_as_not_published();
        assert!(!settled.may_have_been_published() && settled.confirmed_not_published());
        assert!(!settled
            .may_have_reached_the_service()
            .may_have_been_published());
        let paused = Error::new(ErrorKind::PartitionPaused, "paused").for_partition("3");
        assert_eq!(paused.partition_id(), Some("3"));
        assert!(!paused.is_transient());
    }

    #[test]
    fn an_error_is_one_pointer_wide_and_keeps_its_source() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
        let io = std::io::Error::other("inner");
        let e = Error::new(ErrorKind::ConnectionFailed, "outer").with_source(io);
        let source = std::error::Error::source(&e).expect("source");
        assert_eq!(source.to_string(), "inner");
    }
}
