//! The links of the `$cbs` and `$management` nodes: requests arrive on the client's sending
//! link and are answered by the services; replies leave on the client's receiving link.

use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::messaging::{Body, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::Value;
use tokio::sync::mpsc;

use super::context::{LinkContext, LinkRefusal};
use crate::connection::Reply;
use crate::message::reply_to;
use crate::services::{cbs, management};

pub(super) type AttachResult = Result<(), (Attach, LinkRefusal)>;

/// `$cbs` and `$management` links announce no size limit (max-message-size 2^64-1), as the
/// service does, and no properties.
type DefaultAcceptor = LinkAcceptor<
    fn(fe2o3_amqp::types::messaging::Source) -> Option<fe2o3_amqp::types::messaging::Source>,
    fn(fe2o3_amqp::types::messaging::Target) -> Option<fe2o3_amqp::types::messaging::Target>,
>;

fn request_link_acceptor() -> DefaultAcceptor {
    LinkAcceptor::builder().max_message_size(u64::MAX).build()
}

async fn accept_receiver(session: &mut ListenerSessionHandle, attach: Attach) -> Option<Receiver> {
    match request_link_acceptor()
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
pub(super) async fn accept_request_link(
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
            "$cbs" => cbs::handle(&ctx.ns, &ctx.conn, request),
            _ => management::handle(&ctx.ns, &ctx.conn, request),
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
pub(super) async fn accept_reply_link(
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
    let sender = match request_link_acceptor()
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
