//! What `$cbs` and `$management` answer when they refuse a request: status code, AMQP error
//! condition and description; and the clock both read.

pub(crate) const UNAUTHORIZED: &str = "amqp:unauthorized-access";
/// The condition the service puts on a refused `$cbs` token.
pub(crate) const AUTH_FAILED: &str = "com.microsoft:auth-failed";
pub(crate) const NOT_FOUND: &str = "amqp:not-found";

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
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

    /// A token `$cbs` refuses, answered as the service does: 401 and `com.microsoft:auth-failed`.
    pub(crate) fn auth_failed(description: impl Into<String>) -> Self {
        Self {
            status: 401,
            condition: AUTH_FAILED,
            description: description.into(),
        }
    }

    pub(crate) fn bad_request(description: impl Into<String>) -> Self {
        Self {
            status: 400,
            condition: "com.microsoft:argument-error",
            description: description.into(),
        }
    }
}
