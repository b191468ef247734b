//! The service nodes clients send requests to: `$cbs` put-token (`cbs.rs`) and `$management`
//! reads of hub and partition properties (`management.rs`), with the refusals both answer
//! with (`refusal.rs`).

pub(crate) mod cbs;
pub(crate) mod management;
pub(crate) mod refusal;
