//! What one client connection holds: what the client announced in its `open`, the audiences
//! it authorized through `$cbs`, and where replies to `$cbs` / `$management` requests go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use fe2o3_amqp_types::messaging::{Body, Message};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The `open` of one client connection, as [`Emulator::client_opens`](crate::Emulator::client_opens)
/// returns it: read from the connection's first frames (fe2o3 keeps the peer's `open`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOpen {
    /// The client's container id.
    pub container_id: String,
    /// The host name the client asked for, if it named one.
    pub hostname: Option<String>,
    /// The properties whose values are strings or symbols, by name.
    pub properties: BTreeMap<String, String>,
    /// Whether the connection came over AMQP over WebSockets (the WebSocket port).
    pub websocket: bool,
}

/// A reply waiting to be sent on a request/response link.
pub(crate) type Reply = Message<Body<Value>>;

/// The entity path of an address or audience: no scheme, no host, no slashes at the ends,
/// lower case (entity names are case-insensitive in the service).
pub(crate) fn entity_path(address: &str) -> String {
    let without_scheme = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, path)| path).unwrap_or(""),
        None => address,
    };
    without_scheme.trim_matches('/').to_ascii_lowercase()
}

/// Whether `scope` is `path` or one of its ancestors, segment by segment.
pub(crate) fn path_covers(scope: &str, path: &str) -> bool {
    scope.is_empty()
        || path == scope
        || (path.starts_with(scope) && path.as_bytes().get(scope.len()) == Some(&b'/'))
}

#[derive(Debug)]
struct Grant {
    path: String,
    expires_at: Instant,
}

/// Per-connection state shared by its sessions and links.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    grants: Mutex<Vec<Grant>>,
    replies: Mutex<HashMap<String, mpsc::UnboundedSender<Reply>>>,
}

impl Default for ConnectionState {
    fn default() -> Self {
        Self {
            grants: Mutex::new(Vec::new()),
            replies: Mutex::new(HashMap::new()),
        }
    }
}

impl ConnectionState {
    /// Records that the connection may use `audience` until `expires_at`.
    pub(crate) fn grant(&self, audience: &str, expires_at: Instant) {
        let path = entity_path(audience);
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.retain(|g| g.path != path);
        grants.push(Grant { path, expires_at });
    }

    /// Until when the connection may use the entity at `address`, if it may at all now.
    pub(crate) fn authorized_until(&self, address: &str) -> Option<Instant> {
        let path = entity_path(address);
        let now = Instant::now();
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants
            .iter()
            .filter(|g| g.expires_at > now && path_covers(&g.path, &path))
            .map(|g| g.expires_at)
            .max()
    }

    /// Registers a link that replies may be sent on, under each name a request may use for it.
    pub(crate) fn add_reply_route(&self, names: &[String], tx: mpsc::UnboundedSender<Reply>) {
        let mut routes = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        for name in names {
            routes.insert(name.clone(), tx.clone());
        }
    }

    /// Sends a reply to the route named `to`; false when there is no such live route.
    pub(crate) fn send_reply(&self, to: &str, reply: Reply) -> bool {
        let mut routes = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        match routes.get(to) {
            Some(tx) if tx.send(reply).is_ok() => true,
            Some(_) => {
                routes.remove(to);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entity_paths_drop_scheme_host_and_case() {
        assert_eq!(
            entity_path("amqps://ns.example/Hub/Partitions/0"),
            "hub/partitions/0"
        );
        assert_eq!(entity_path("/hub/"), "hub");
        assert_eq!(entity_path("sb://127.0.0.1:5672/"), "");
        assert_eq!(entity_path("hub"), "hub");
    }

    #[test]
    fn scopes_cover_whole_segments_only() {
        assert!(path_covers("hub", "hub/partitions/0"));
        assert!(path_covers("", "anything"));
        assert!(!path_covers("hub", "hub2"));
        assert!(!path_covers("hub/partitions/1", "hub/partitions/10"));
    }

    #[tokio::test(start_paused = true)]
    async fn grants_expire_and_renew() {
        let state = ConnectionState::default();
        assert!(state.authorized_until("hub/Partitions/0").is_none());
        state.grant("sb://h/hub", Instant::now() + Duration::from_secs(10));
        assert!(state
            .authorized_until("amqp://h/hub/Partitions/0")
            .is_some());
        assert!(state.authorized_until("other").is_none());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(state.authorized_until("hub").is_none());
        state.grant("sb://h/hub", Instant::now() + Duration::from_secs(10));
        assert!(state.authorized_until("hub").is_some());
    }
}
