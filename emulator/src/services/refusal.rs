//! What `$cbs` and `$management` answer when they refuse a request: status code, AMQP error
//! condition and description; and the clock both read.

pub(crate) const UNAUTHORIZED: &str = "amqp:unauthorized-access";
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

    pub(crate) fn bad_request(description: impl Into<String>) -> Self {
        Self {
            status: 400,
            condition: "com.microsoft:argument-error",
            description: description.into(),
        }
    }
}
