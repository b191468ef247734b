//! Microsoft's Event Hubs emulator configuration file (`Config.json`), read so that a project
//! that runs Microsoft's emulator in Docker can run this one instead with the same file.
//!
//! The parts that matter here: `UserConfig.NamespaceConfig[]` (of `Type` `EventHub`), each with
//! `Entities[]` carrying `Name`, `PartitionCount` (a string in Microsoft's samples, a number is
//! accepted too) and `ConsumerGroups[].Name`. Everything else in the file (the namespace's
//! name, `LoggingConfig`) is accepted and ignored.

use serde::Deserialize;

use crate::error::EmulatorError;

/// The key value Microsoft's emulator documents for its connection string
/// (`SharedAccessKey=SAS_KEY_VALUE`); the emulator serves it when started from a Config.json
/// without a key of its own.
pub const MICROSOFT_EMULATOR_KEY: &str = "SAS_KEY_VALUE";

/// One event hub of a Config.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredHub {
    /// The hub's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: usize,
    /// Its consumer groups besides `$Default`.
    pub consumer_groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Root {
    user_config: UserConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserConfig {
    #[serde(default)]
    namespace_config: Vec<NamespaceConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamespaceConfig {
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(default)]
    entities: Vec<Entity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entity {
    name: String,
    partition_count: PartitionCount,
    #[serde(default)]
    consumer_groups: Vec<ConsumerGroup>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PartitionCount {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsumerGroup {
    name: String,
}

/// The event hubs a Config.json describes, in file order.
///
/// # Errors
///
/// [`EmulatorError::InvalidConfig`] naming what is wrong: not JSON of that shape, a partition
/// count that is not a number, no event hub at all.
pub fn parse_microsoft_config(json: &str) -> Result<Vec<ConfiguredHub>, EmulatorError> {
    let root: Root = serde_json::from_str(json)
        .map_err(|e| EmulatorError::InvalidConfig(format!("Config.json: {e}")))?;
    let mut hubs = Vec::new();
    for namespace in root.user_config.namespace_config {
        if namespace
            .kind
            .as_deref()
            .is_some_and(|kind| !kind.eq_ignore_ascii_case("EventHub"))
        {
            continue;
        }
        for entity in namespace.entities {
            let partitions = match &entity.partition_count {
                PartitionCount::Number(n) => usize::try_from(*n).ok(),
                PartitionCount::Text(text) => text.trim().parse().ok(),
            }
            .ok_or_else(|| {
                EmulatorError::InvalidConfig(format!(
                    "Config.json: the PartitionCount of '{}' is not a number",
                    entity.name
                ))
            })?;
            hubs.push(ConfiguredHub {
                name: entity.name,
                partitions,
                consumer_groups: entity
                    .consumer_groups
                    .into_iter()
                    .map(|group| group.name)
                    .filter(|name| !name.eq_ignore_ascii_case("$Default"))
                    .collect(),
            });
        }
    }
    if hubs.is_empty() {
        return Err(EmulatorError::InvalidConfig(
            "Config.json: no event hub (UserConfig.NamespaceConfig[].Entities[] is empty)".into(),
        ));
    }
    Ok(hubs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "UserConfig": {
        "NamespaceConfig": [
          {
            "Type": "EventHub",
            "Name": "emulatorNs1",
            "Entities": [
              { "Name": "eh1", "PartitionCount": "2",
                "ConsumerGroups": [ { "Name": "cg1" }, { "Name": "$Default" } ] },
              { "Name": "eh2", "PartitionCount": 4, "ConsumerGroups": [] }
            ]
          }
        ],
        "LoggingConfig": { "Type": "File" }
      }
    }"#;

    #[test]
    fn microsofts_sample_shape_is_read() {
        let hubs = parse_microsoft_config(SAMPLE).unwrap();
        assert_eq!(
            hubs,
            vec![
                ConfiguredHub {
                    name: "eh1".into(),
                    partitions: 2,
                    consumer_groups: vec!["cg1".into()],
                },
                ConfiguredHub {
                    name: "eh2".into(),
                    partitions: 4,
                    consumer_groups: vec![],
                },
            ]
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let not_a_number = SAMPLE.replace("\"2\"", "\"two\"");
        let err = parse_microsoft_config(&not_a_number).unwrap_err();
        assert!(err.to_string().contains("PartitionCount of 'eh1'"), "{err}");
        let err = parse_microsoft_config("{}").unwrap_err();
        assert!(err.to_string().contains("UserConfig"), "{err}");
        let empty = r#"{"UserConfig":{"NamespaceConfig":[]}}"#;
        let err = parse_microsoft_config(empty).unwrap_err();
        assert!(err.to_string().contains("no event hub"), "{err}");
    }
}
