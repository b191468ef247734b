//! What every link handler shares: the connection and namespace a link serves, how a link is
//! refused, the address an attach names, and the authorization check.

use std::sync::Arc;

use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition, Role};
use fe2o3_amqp::types::messaging::TargetArchetype;
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{OrderedMap, Symbol, Value};
use tokio::time::Instant;

use crate::connection::ConnectionState;
use crate::entities::namespace::Namespace;
use crate::faults::FaultCondition;

/// Everything a link task needs from its connection.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub ns: Arc<Namespace>,
    pub conn: Arc<ConnectionState>,
}

/// The attach-answer property the service uses to name a link in its logs.
pub(crate) const TRACKING_ID: &str = "com.microsoft:tracking-id";

impl LinkContext {
    /// The properties of an attach answer for an entity link: a fresh tracking id, as the
    /// service sends (fe2o3 adds the client's own properties, e.g. `com.microsoft:timeout`).
    pub(crate) fn answer_properties(&self) -> OrderedMap<Symbol, Value> {
        let mut properties = OrderedMap::new();
        properties.insert(
            Symbol::from(TRACKING_ID),
            Value::String(self.ns.tracking_id()),
        );
        properties
    }
}

/// A link the emulator refuses: the condition and a description for the client.
#[derive(Debug, Clone)]
pub(crate) struct LinkRefusal {
    pub condition: String,
    pub description: String,
}

impl LinkRefusal {
    pub(crate) fn new(condition: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            condition: condition.into(),
            description: description.into(),
        }
    }

    pub(crate) fn not_found(entity: &str) -> Self {
        Self::new(
            FaultCondition::NotFound.symbol(),
            format!("The messaging entity '{entity}' could not be found."),
        )
    }

    pub(crate) fn to_amqp(&self) -> AmqpError {
        amqp_error(&self.condition, &self.description)
    }
}

pub(crate) fn amqp_error(condition: &str, description: &str) -> AmqpError {
    AmqpError::new(
        ErrorCondition::Custom(Symbol::from(condition)),
        Some(description.to_string()),
        None,
    )
}

/// The address a client's attach names: the target when it sends, the source when it receives.
pub(crate) fn attach_address(attach: &Attach) -> Option<String> {
    match attach.role {
        Role::Sender => match attach.target.as_deref()? {
            TargetArchetype::Target(t) => t.address.clone(),
            #[allow(unreachable_patterns)]
            _ => None,
        },
        Role::Receiver => attach.source.as_ref()?.address.clone(),
    }
}

/// When authorization is required, the connection must hold a grant covering the address.
pub(crate) fn check_authorization(
    ctx: &LinkContext,
    address: &str,
) -> Result<Option<Instant>, LinkRefusal> {
    if !ctx.ns.settings.require_authorization {
        return Ok(None);
    }
    match ctx.conn.authorized_until(address) {
        Some(until) => Ok(Some(until)),
        None => Err(LinkRefusal::new(
            FaultCondition::Unauthorized.symbol(),
            format!("Unauthorized access to '{address}': put a token on $cbs for it first."),
        )),
    }
}

/// Sleeps until the deadline, or forever when there is none.
pub(crate) async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
