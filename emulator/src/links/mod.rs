//! Incoming attaches: each is routed by its address to the node that serves it.
//!
//! - `producer.rs`: links that send events to a hub or a partition (batches, keys, idempotence);
//! - `consumer.rs`: links that read a partition from a start position (`filter.rs`);
//! - `requests.rs`: the request and reply links of `$cbs` and `$management`;
//! - `context.rs`: what they share: the connection, refusals, authorization.

use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::types::definitions::Role;
use fe2o3_amqp::types::performatives::Attach;

use self::context::attach_address;
use self::requests::{accept_reply_link, accept_request_link};
use crate::entities::routing::{parse_entity_address, EntityAddress};

pub(crate) mod consumer;
pub(crate) mod context;
pub mod filter;
pub(crate) mod producer;
mod requests;

pub(crate) use self::context::{LinkContext, LinkRefusal};

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
            producer::accept(session, attach, ctx, &address, hub, None).await
        }
        (Role::Sender, Some(EntityAddress::Partition { hub, partition })) => {
            producer::accept(session, attach, ctx, &address, hub, Some(partition)).await
        }
        (
            Role::Receiver,
            Some(EntityAddress::ConsumerPartition {
                hub,
                consumer_group,
                partition,
            }),
        ) => {
            consumer::accept(
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
