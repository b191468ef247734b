//! Incoming attaches: each is routed by its address to the node that serves it.

use std::sync::Arc;

use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition, Role};
use fe2o3_amqp::types::messaging::{Body, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use tokio::sync::mpsc;

use crate::connection::{ConnectionState, Reply};
use crate::faults::FaultCondition;
use crate::message::reply_to;
use crate::namespace::Namespace;
use crate::routing::{parse_entity_address, EntityAddress};

/// Everything a link task needs from its connection.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub ns: Arc<Namespace>,
    pub conn: Arc<ConnectionState>,
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

/// Accepts (or refuses) one attach and starts the task that serves the link.
pub(crate) async fn dispatch(
    session: &mut ListenerSessionHandle,
    attach: Attach,
    ctx: &LinkContext,
) {
    let address = attach_address(&attach).unwrap_or_default();
    let parsed = parse_entity_address(&address);
    let result = match (&attach.role, parsed) {
        (Role::Sender, Some(EntityAddress::Cbs)) => {
            accept_request_link(session, attach, ctx, "$cbs").await
        }
        (Role::Sender, Some(EntityAddress::Management)) => {
            accept_request_link(session, attach, ctx, "$management").await
        }
        (Role::Receiver, Some(EntityAddress::Cbs)) => {
            accept_reply_link(session, attach, ctx, "$cbs").await
        }
        (Role::Receiver, Some(EntityAddress::Management)) => {
            accept_reply_link(session, attach, ctx, "$management").await
        }
        (Role::Sender, Some(EntityAddress::Hub { hub })) => {
            crate::producer::accept(session, attach, ctx, &address, hub, None).await
        }
        (Role::Sender, Some(EntityAddress::Partition { hub, partition })) => {
            crate::producer::accept(session, attach, ctx, &address, hub, Some(partition)).await
        }
        (
            Role::Receiver,
            Some(EntityAddress::ConsumerPartition {
                hub,
                consumer_group,
                partition,
            }),
        ) => {
            crate::consumer::accept(
                session,
                attach,
                ctx,
                &address,
                hub,
                consumer_group,
                partition,
            )
            .await
        }
        _ => Err((
            attach,
            LinkRefusal::not_found(if address.is_empty() {
                "(no address)"
            } else {
                &address
            }),
        )),
    };
    if let Err((attach, refusal)) = result {
        refuse(session, attach, &refusal).await;
    }
}

/// Completes the attach and detaches at once with the refusal's error, as AMQP prescribes for
/// a link the peer cannot have.
pub(crate) async fn refuse(
    session: &mut ListenerSessionHandle,
    attach: Attach,
    refusal: &LinkRefusal,
) {
    tracing::debug!(condition = %refusal.condition, description = %refusal.description, "refusing link");
    match LinkAcceptor::new()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(LinkEndpoint::Receiver(receiver)) => {
            let _ = receiver.close_with_error(refusal.to_amqp()).await;
        }
        Ok(LinkEndpoint::Sender(sender)) => {
            let _ = sender.close_with_error(refusal.to_amqp()).await;
        }
        Err(e) => tracing::debug!(error = %e, "refused link did not attach"),
    }
}

type AttachResult = Result<(), (Attach, LinkRefusal)>;

async fn accept_receiver(session: &mut ListenerSessionHandle, attach: Attach) -> Option<Receiver> {
    match LinkAcceptor::new()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(LinkEndpoint::Receiver(r)) => Some(r),
        Ok(LinkEndpoint::Sender(s)) => {
            let _ = s.close().await;
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "attach failed");
            None
        }
    }
}

/// A client's sending link to `$cbs` or `$management`: requests arrive here.
async fn accept_request_link(
    session: &mut ListenerSessionHandle,
    attach: Attach,
    ctx: &LinkContext,
    node: &'static str,
) -> AttachResult {
    let Some(receiver) = accept_receiver(session, attach).await else {
        return Ok(());
    };
    tokio::spawn(serve_requests(receiver, ctx.clone(), node));
    Ok(())
}

async fn serve_requests(mut receiver: Receiver, ctx: LinkContext, node: &'static str) {
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        let _ = receiver.accept(&delivery).await;
        let request = delivery.message();
        let answer = match node {
            "$cbs" => crate::cbs::handle(&ctx.ns, &ctx.conn, request),
            _ => crate::management::handle(&ctx.ns, &ctx.conn, request),
        };
        // Without reply-to (Microsoft's Python client) the reply goes to the node's receiving link.
        let route = reply_to(request).unwrap_or_else(|| node.to_string());
        if !ctx.conn.send_reply(&route, answer) {
            tracing::warn!(%route, node, "no link to send the reply on");
        }
    }
    let _ = receiver.close().await;
}

/// A client's receiving link from `$cbs` or `$management`: replies leave here.
async fn accept_reply_link(
    session: &mut ListenerSessionHandle,
    attach: Attach,
    ctx: &LinkContext,
    node: &'static str,
) -> AttachResult {
    let mut names = vec![attach.name.clone(), node.to_string()];
    if let Some(TargetArchetype::Target(t)) = attach.target.as_deref() {
        names.extend(t.address.clone());
    }
    // The route exists before the client hears its attach answered: a request it sends at once
    // may be served (on another thread) before this task resumes after the attach. Replies
    // queue in the channel until the link is up; a route whose link failed is dropped on use.
    let (tx, rx) = mpsc::unbounded_channel();
    ctx.conn.add_reply_route(&names, tx);
    let sender = match LinkAcceptor::new()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(LinkEndpoint::Sender(s)) => s,
        Ok(LinkEndpoint::Receiver(r)) => {
            let _ = r.close().await;
            return Ok(());
        }
        Err(e) => {
            tracing::debug!(error = %e, "reply link attach failed");
            return Ok(());
        }
    };
    tokio::spawn(send_replies(sender, rx));
    Ok(())
}

async fn send_replies(mut sender: Sender, mut replies: mpsc::UnboundedReceiver<Reply>) {
    while let Some(reply) = replies.recv().await {
        // The outcome of a reply does not matter to the emulator, and waiting for it would hold
        // up the next reply behind a client that settles late.
        if sender.send_batchable(reply).await.is_err() {
            break;
        }
    }
    let _ = sender.close().await;
}

/// Sleeps until the deadline, or forever when there is none.
pub(crate) async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
