//! `$management` READ: event hub and partition properties, mapped to typed structs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::types::messaging::{AmqpValue, Body};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};

use super::errors::{Broken, Failure};
use super::request_response::RequestResponseLink;
use crate::error::{Error, ErrorKind};
use crate::properties::{EventHubProperties, PartitionProperties};

fn read_properties<'a>(
    hub: &str,
    token: &str,
    entity_type: &'a str,
) -> Vec<(&'a str, SimpleValue)> {
    vec![
        ("operation", SimpleValue::String("READ".into())),
        ("type", SimpleValue::String(entity_type.into())),
        ("name", SimpleValue::String(hub.into())),
        ("security_token", SimpleValue::String(token.into())),
    ]
}

fn malformed(what: &str) -> Failure {
    Failure::new(
        Error::new(
            ErrorKind::ServiceError,
            format!("the management response has no valid '{what}'"),
        ),
        Broken::Nothing,
    )
}

fn response_map(body: Body<Value>) -> Result<OrderedMap<Value, Value>, Failure> {
    match body {
        Body::Value(AmqpValue(Value::Map(map))) => Ok(map),
        _ => Err(malformed("map body")),
    }
}

fn get<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    map.get(&Value::String(key.to_string()))
        .or_else(|| map.get(&Value::Symbol(key.into())))
}

fn string(map: &OrderedMap<Value, Value>, key: &str) -> Result<String, Failure> {
    match get(map, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Symbol(s)) => Ok(s.as_str().to_string()),
        _ => Err(malformed(key)),
    }
}

fn long(map: &OrderedMap<Value, Value>, key: &str) -> Result<i64, Failure> {
    match get(map, key) {
        Some(Value::Long(v)) => Ok(*v),
        Some(Value::Int(v)) => Ok(i64::from(*v)),
        Some(Value::String(s)) => s.parse().map_err(|_| malformed(key)),
        _ => Err(malformed(key)),
    }
}

fn time(map: &OrderedMap<Value, Value>, key: &str) -> Result<SystemTime, Failure> {
    match get(map, key) {
        Some(Value::Timestamp(t)) => {
            let ms = t.milliseconds();
            Ok(if ms >= 0 {
                UNIX_EPOCH + Duration::from_millis(ms as u64)
            } else {
                UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
            })
        }
        _ => Err(malformed(key)),
    }
}

fn strings(map: &OrderedMap<Value, Value>, key: &str) -> Result<Vec<String>, Failure> {
    let items = match get(map, key) {
        Some(Value::Array(a)) => a.0.clone(),
        Some(Value::List(l)) => l.clone(),
        _ => return Err(malformed(key)),
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(malformed(key)),
        })
        .collect()
}

fn status_error(error: Error) -> Failure {
    Failure::new(error, Broken::Nothing)
}

/// Reads the event hub's properties.
pub(crate) async fn eventhub_properties(
    link: &mut RequestResponseLink,
    hub: &str,
    token: &str,
) -> Result<EventHubProperties, Failure> {
    let response = link
        .call(
            read_properties(hub, token, "com.microsoft:eventhub"),
            Body::Empty,
        )
        .await?;
    let map = response_map(
        response
            .require(200, "reading the event hub's properties")
            .map_err(status_error)?,
    )?;
    Ok(EventHubProperties {
        name: string(&map, "name")?,
        created_at: time(&map, "created_at")?,
        partition_ids: strings(&map, "partition_ids")?,
    })
}

/// Reads one partition's properties.
pub(crate) async fn partition_properties(
    link: &mut RequestResponseLink,
    hub: &str,
    partition: &str,
    token: &str,
) -> Result<PartitionProperties, Failure> {
    let mut properties = read_properties(hub, token, "com.microsoft:partition");
    properties.push(("partition", SimpleValue::String(partition.into())));
    let response = link.call(properties, Body::Empty).await?;
    let map = response_map(
        response
            .require(200, "reading the partition's properties")
            .map_err(status_error)?,
    )?;
    Ok(PartitionProperties {
        eventhub_name: string(&map, "name")?,
        id: string(&map, "partition")?,
        beginning_sequence_number: long(&map, "begin_sequence_number")?,
        last_enqueued_sequence_number: long(&map, "last_enqueued_sequence_number")?,
        last_enqueued_offset: string(&map, "last_enqueued_offset")?,
        last_enqueued_time: time(&map, "last_enqueued_time_utc")?,
        is_empty: matches!(get(&map, "is_partition_empty"), Some(Value::Bool(true))),
    })
}
