//! `$management` READ: event hub and partition properties.

use fe2o3_amqp_types::messaging::{AmqpValue, Body, Message};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, Timestamp, Value};

use super::refusal::{now_unix, Refusal, NOT_FOUND};
use crate::connection::{entity_path, path_covers, ConnectionState, Reply};
use crate::entities::namespace::{Hub, Namespace};
use crate::message::{reply, text_property};
use crate::sas::validate_sas_token;

const EVENTHUB_TYPE: &str = "com.microsoft:eventhub";
const PARTITION_TYPE: &str = "com.microsoft:partition";

/// Answers one `$management` request.
pub(crate) fn handle(
    ns: &Namespace,
    conn: &ConnectionState,
    request: &Message<Body<Value>>,
) -> Reply {
    match read(ns, conn, request) {
        Ok(map) => reply(
            request,
            200,
            None,
            None,
            Body::Value(AmqpValue(Value::Map(map))),
        ),
        Err(r) => reply(
            request,
            r.status,
            Some(&r.description),
            Some(r.condition),
            Body::Empty,
        ),
    }
}

fn read(
    ns: &Namespace,
    conn: &ConnectionState,
    request: &Message<Body<Value>>,
) -> Result<OrderedMap<Value, Value>, Refusal> {
    let operation = text_property(request, "operation").unwrap_or_default();
    if operation != "READ" {
        return Err(Refusal {
            status: 400,
            condition: "com.microsoft:argument-error",
            description: format!("unsupported $management operation '{operation}'"),
        });
    }
    let name = text_property(request, "name").unwrap_or_default();
    let hub = ns.hub(&name).ok_or_else(|| Refusal {
        status: 404,
        condition: NOT_FOUND,
        description: format!("The messaging entity '{name}' could not be found."),
    })?;
    check_access(ns, conn, request, &hub)?;
    match text_property(request, "type").as_deref() {
        Some(EVENTHUB_TYPE) => Ok(hub_properties(&hub)),
        Some(PARTITION_TYPE) => {
            let id = text_property(request, "partition").unwrap_or_default();
            partition_properties(&hub, &id)
        }
        other => Err(Refusal {
            status: 400,
            condition: "com.microsoft:argument-error",
            description: format!("unsupported $management type '{}'", other.unwrap_or("")),
        }),
    }
}

/// A request may carry its own `security_token`; otherwise the connection must hold a grant.
fn check_access(
    ns: &Namespace,
    conn: &ConnectionState,
    request: &Message<Body<Value>>,
    hub: &Hub,
) -> Result<(), Refusal> {
    if !ns.settings.require_authorization || conn.authorized_until(&hub.name).is_some() {
        return Ok(());
    }
    match text_property(request, "security_token") {
        Some(token) if token.starts_with("SharedAccessSignature") => {
            let sas = validate_sas_token(&token, &ns.settings.keys, now_unix()).map_err(|e| {
                Refusal::unauthorized(format!("invalid shared access signature: {e}"))
            })?;
            if path_covers(&entity_path(&sas.resource), &hub.name.to_ascii_lowercase()) {
                Ok(())
            } else {
                Err(Refusal::unauthorized(
                    "the security token does not cover this event hub",
                ))
            }
        }
        Some(_) if ns.settings.accept_jwt => Ok(()),
        _ => Err(Refusal::unauthorized(format!(
            "no authorization for '{}' on this connection",
            hub.name
        ))),
    }
}

fn entry(map: &mut OrderedMap<Value, Value>, key: &str, value: Value) {
    map.insert(Value::String(key.to_string()), value);
}

fn timestamp(time: std::time::SystemTime) -> Value {
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    Value::Timestamp(Timestamp::from_milliseconds(ms))
}

fn hub_properties(hub: &Hub) -> OrderedMap<Value, Value> {
    let ids = hub.partition_ids();
    let mut map = OrderedMap::new();
    entry(&mut map, "name", Value::String(hub.name.clone()));
    entry(&mut map, "type", Value::String(EVENTHUB_TYPE.into()));
    entry(&mut map, "created_at", timestamp(hub.created_at));
    entry(&mut map, "partition_count", Value::Int(ids.len() as i32));
    entry(
        &mut map,
        "partition_ids",
        Value::Array(Array(ids.into_iter().map(Value::String).collect())),
    );
    // One region: the emulator has no geo-replication.
    entry(&mut map, "georeplication_factor", Value::Int(1));
    map
}

fn partition_properties(hub: &Hub, id: &str) -> Result<OrderedMap<Value, Value>, Refusal> {
    let partition = hub.partition(id).ok_or_else(|| Refusal {
        status: 400,
        condition: "com.microsoft:argument-out-of-range",
        description: format!(
            "The specified partition '{id}' is invalid for event hub '{}'.",
            hub.name
        ),
    })?;
    let s = partition.summary();
    let mut map = OrderedMap::new();
    entry(&mut map, "name", Value::String(hub.name.clone()));
    entry(&mut map, "partition", Value::String(partition.id.clone()));
    entry(&mut map, "type", Value::String(PARTITION_TYPE.into()));
    entry(
        &mut map,
        "begin_sequence_number",
        Value::Long(s.begin_sequence_number),
    );
    entry(
        &mut map,
        "last_enqueued_sequence_number",
        Value::Long(s.last_sequence_number),
    );
    entry(
        &mut map,
        "last_enqueued_offset",
        Value::String(s.last_offset.to_string()),
    );
    entry(
        &mut map,
        "last_enqueued_time_utc",
        Value::Timestamp(Timestamp::from_milliseconds(s.last_enqueued_time_ms)),
    );
    entry(&mut map, "is_partition_empty", Value::Bool(s.is_empty));
    entry(
        &mut map,
        "last_enqueued_sequence_number_epoch",
        Value::Long(0),
    );
    Ok(map)
}
