//! A request/response pair of links to a node (`$cbs`, `$management`): requests carry a
//! message id and a reply-to; the reply with the matching correlation id is the answer.

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};

use super::errors::{
    from_attach_error, from_link_state, from_outcome, from_receiver_attach_error, from_send_error,
    Broken, Failure,
};
use crate::error::{Error, ErrorKind};

/// The answer to a request: status, description, error condition and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: i32,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub body: Body<Value>,
}

impl Response {
    /// The response as an error when its status is not `expected`.
    pub(crate) fn require(self, expected: i32, operation: &str) -> Result<Body<Value>, Error> {
        if self.status == expected {
            return Ok(self.body);
        }
        let description = format!(
            "{operation} answered {}: {}",
            self.status,
            self.description.as_deref().unwrap_or("no description")
        );
        Err(match self.condition.as_deref() {
            Some(condition) => Error::from_condition(condition, Some(&description)),
            None => Error::new(kind_for_status(self.status), description),
        })
    }
}

/// The kind an HTTP-like status code stands for, when the reply names no condition.
fn kind_for_status(status: i32) -> ErrorKind {
    match status {
        400 => ErrorKind::InvalidArgument,
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        503 => ErrorKind::ServerBusy,
        _ => ErrorKind::ServiceError,
    }
}

pub(crate) struct RequestResponseLink {
    sender: Sender,
    receiver: Receiver,
    reply_to: String,
    next_id: u64,
}

fn text(properties: &ApplicationProperties, name: &str) -> Option<String> {
    match properties.0.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn status_code(properties: &ApplicationProperties) -> Option<i32> {
    let value = properties
        .0
        .get("status-code")
        .or_else(|| properties.0.get("statusCode"))?;
    match value {
        SimpleValue::Int(v) => Some(*v),
        SimpleValue::Long(v) => i32::try_from(*v).ok(),
        SimpleValue::Uint(v) => i32::try_from(*v).ok(),
        SimpleValue::Short(v) => Some(i32::from(*v)),
        _ => None,
    }
}

impl RequestResponseLink {
    /// Attaches both links to `node` on the session.
    pub(crate) async fn attach(
        session: &mut SessionHandle<()>,
        node: &str,
        client_id: &str,
    ) -> Result<Self, Failure> {
        let reply_to = format!("{client_id}-{}-replies", node.trim_start_matches('$'));
        let sender = Sender::builder()
            .name(format!("{client_id}-{node}-requests"))
            .target(node)
            .attach(session)
            .await
            .map_err(|e| from_attach_error(&e))?;
        let receiver = Receiver::builder()
            .name(format!("{client_id}-{node}-responses"))
            .source(node)
            .target(reply_to.as_str())
            .attach(session)
            .await
            .map_err(|e| from_receiver_attach_error(&e))?;
        Ok(Self {
            sender,
            receiver,
            reply_to,
            next_id: 0,
        })
    }

    /// Sends one request and waits for its response.
    pub(crate) async fn call(
        &mut self,
        properties: Vec<(&str, SimpleValue)>,
        body: Body<Value>,
    ) -> Result<Response, Failure> {
        self.next_id += 1;
        let id = MessageId::Ulong(self.next_id);
        let mut builder = ApplicationProperties::builder();
        for (name, value) in properties {
            builder = builder.insert(name.to_string(), value);
        }
        let request = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(id.clone()),
                reply_to: Some(self.reply_to.clone()),
                ..Default::default()
            }),
            application_properties: Some(builder.build()),
            body,
            footer: None,
        };
        let outcome = self
            .sender
            .send(request)
            .await
            .map_err(|e| from_send_error(&e))?;
        from_outcome(outcome)?;
        loop {
            let delivery = self
                .receiver
                .recv::<Body<Value>>()
                .await
                .map_err(|e| match e {
                    fe2o3_amqp::link::RecvError::LinkStateError(s) => from_link_state(&s),
                    other => Failure::new(
                        Error::new(
                            ErrorKind::ServiceError,
                            format!("reading a response failed: {other}"),
                        ),
                        Broken::Connection,
                    ),
                })?;
            let _ = self.receiver.accept(&delivery).await;
            let message = delivery.into_message();
            let correlation = message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone());
            if correlation.as_ref().is_some_and(|c| *c != id) {
                // A late answer to an earlier request that timed out: skip it.
                continue;
            }
            let Some(props) = message.application_properties.as_ref() else {
                return Err(Failure::new(
                    Error::new(
                        ErrorKind::ServiceError,
                        "a response without application properties",
                    ),
                    Broken::Nothing,
                ));
            };
            return Ok(Response {
                status: status_code(props).unwrap_or(500),
                description: text(props, "status-description")
                    .or_else(|| text(props, "statusDescription")),
                condition: text(props, "error-condition").or_else(|| text(props, "errorCondition")),
                body: message.body,
            });
        }
    }

    pub(crate) async fn close(self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
    }
}
