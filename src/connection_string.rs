//! Event Hubs connection strings, as the Azure portal and the local emulator give them:
//!
//! ```text
//! Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<name>;SharedAccessKey=<key>;EntityPath=<event hub>
//! ```
//!
//! Keys are matched without regard to case, whitespace around keys and values is ignored, and
//! keys this crate does not know are skipped. Error messages name the key at fault and never
//! contain a key or a signature.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

const ENDPOINT: &str = "Endpoint";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const ENTITY_PATH: &str = "EntityPath";
const USE_DEVELOPMENT_EMULATOR: &str = "UseDevelopmentEmulator";

/// The keys this crate reads, spelled as Azure spells them.
const KNOWN_KEYS: [&str; 6] = [
    ENDPOINT,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_SIGNATURE,
    ENTITY_PATH,
    USE_DEVELOPMENT_EMULATOR,
];

/// URL schemes accepted in `Endpoint`; all name the same AMQP endpoint.
const SCHEMES: [&str; 4] = ["sb", "amqps", "amqp", "https"];

/// Where the namespace is: the host of `Endpoint` and the port if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: Option<u16>,
}

impl Endpoint {
    /// The host name (or IP address, without brackets for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if `Endpoint` named one; otherwise the transport's default applies.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The fully qualified namespace, e.g. `my-namespace.servicebus.windows.net`: the host.
    pub fn fully_qualified_namespace(&self) -> &str {
        &self.host
    }
}

/// A parsed connection string.
///
/// `Debug` shows whether a key or a signature is present, never its value. Two strings are
/// equal when they say the same: ignored keys and the endpoint's spelling do not count.
#[derive(Clone)]
pub struct ConnectionString {
    endpoint: Endpoint,
    eventhub_name: Option<String>,
    shared_access_key_name: Option<String>,
    shared_access_key: Option<String>,
    shared_access_signature: Option<String>,
    use_development_emulator: bool,
    /// Keys this crate does not know, as written (their values are not kept).
    ignored_keys: Vec<String>,
    /// Whether `Endpoint` named its scheme (`sb://...`).
    endpoint_has_scheme: bool,
}

impl ConnectionString {
    /// Parses a connection string; the same as `s.parse::<ConnectionString>()`.
    ///
    /// Fails with [`ErrorKind::InvalidConnectionString`] if `Endpoint` is missing or malformed,
    /// a known key is repeated, empty or has no `=`, `EntityPath` is empty,
    /// `UseDevelopmentEmulator` is neither `true` nor `false`, the credentials are not
    /// exactly one of `SharedAccessKeyName` with `SharedAccessKey`, or `SharedAccessSignature`,
    /// or `SharedAccessSignature` is not a well-formed signature (prefix, `sr`, `sig`, `se`).
    pub fn parse(s: &str) -> Result<ConnectionString> {
        let mut values: [Option<&str>; KNOWN_KEYS.len()] = [None; KNOWN_KEYS.len()];
        let mut ignored_keys = Vec::new();
        for (index, segment) in s.split(';').enumerate() {
            let segment = segment.trim();
            if segment.is_empty() {
                continue;
            }
            let Some((key, value)) = segment.split_once('=') else {
                return Err(segment_without_value(segment, index));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(invalid(format!(
                    "segment {} has an empty key before `=`",
                    index + 1
                )));
            }
            let Some(slot) = KNOWN_KEYS
                .iter()
                .position(|known| known.eq_ignore_ascii_case(key))
                .and_then(|position| values.get_mut(position))
            else {
                // Unknown keys are ignored, as the official clients do (and named, so that a
                // misspelt key does not go unnoticed).
                ignored_keys.push(key.to_string());
                continue;
            };
            if slot.replace(value.trim()).is_some() {
                return Err(invalid(format!(
                    "`{}` appears more than once",
                    canonical(key)
                )));
            }
        }
        let [endpoint, key_name, key, signature, entity_path, emulator] = values;

        let endpoint_text = required(ENDPOINT, endpoint)?;
        let endpoint_has_scheme = endpoint_text.contains("://");
        let endpoint = parse_endpoint(endpoint_text)?;
        let shared_access_key_name = non_empty(SHARED_ACCESS_KEY_NAME, key_name)?;
        let shared_access_key = non_empty(SHARED_ACCESS_KEY, key)?;
        let shared_access_signature = non_empty(SHARED_ACCESS_SIGNATURE, signature)?;
        let eventhub_name = non_empty(ENTITY_PATH, entity_path)?;
        let use_development_emulator = match emulator {
            None => false,
            Some(value) if value.eq_ignore_ascii_case("true") => true,
            Some(value) if value.eq_ignore_ascii_case("false") => false,
            Some(_) => {
                return Err(invalid(format!(
                    "`{USE_DEVELOPMENT_EMULATOR}` must be `true` or `false`"
                )))
            }
        };

        match (
            &shared_access_key_name,
            &shared_access_key,
            &shared_access_signature,
        ) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (Some(_), None, None) => {
                return Err(invalid(format!(
                    "`{SHARED_ACCESS_KEY_NAME}` is given without `{SHARED_ACCESS_KEY}`"
                )))
            }
            (None, Some(_), None) => {
                return Err(invalid(format!(
                    "`{SHARED_ACCESS_KEY}` is given without `{SHARED_ACCESS_KEY_NAME}`"
                )))
            }
            (None, None, None) => {
                return Err(invalid(format!(
                    "credentials are missing: give `{SHARED_ACCESS_KEY_NAME}` and \
                     `{SHARED_ACCESS_KEY}`, or `{SHARED_ACCESS_SIGNATURE}`"
                )))
            }
            (_, _, Some(_)) => {
                return Err(invalid(format!(
                    "give either `{SHARED_ACCESS_SIGNATURE}` or `{SHARED_ACCESS_KEY_NAME}` and \
                     `{SHARED_ACCESS_KEY}`, not both"
                )))
            }
        }

        if let Some(signature) = &shared_access_signature {
            // The reasons name the signature's fields, never its value.
            crate::auth::SharedAccessSignature::parse(signature).map_err(|e| {
                invalid(format!(
                    "`{SHARED_ACCESS_SIGNATURE}` is not a valid shared access signature: {}",
                    e.message()
                ))
            })?;
        }

        Ok(ConnectionString {
            endpoint,
            eventhub_name,
            shared_access_key_name,
            shared_access_key,
            shared_access_signature,
            use_development_emulator,
            ignored_keys,
            endpoint_has_scheme,
        })
    }

    /// Keys of the string this crate does not know and ignored (as the official clients do),
    /// as written; a misspelt key shows up here. Their values are not kept.
    pub fn ignored_keys(&self) -> &[String] {
        &self.ignored_keys
    }

    /// Whether `Endpoint` named its scheme (`sb://host/`); without one, `sb://` is assumed.
    pub fn endpoint_has_scheme(&self) -> bool {
        self.endpoint_has_scheme
    }

    /// Logs a warning for each thing that was accepted but looks like a mistake: ignored keys
    /// (by name) and an `Endpoint` without scheme.
    pub(crate) fn warn_about_oddities(&self) {
        for key in &self.ignored_keys {
            tracing::warn!(key = %key, "the connection string's key `{key}` is not known and is ignored");
        }
        if !self.endpoint_has_scheme {
            tracing::warn!("the connection string's `Endpoint` has no scheme; sb:// is assumed");
        }
    }

    /// The namespace's endpoint (`Endpoint`).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The event hub the string is scoped to (`EntityPath`), if any.
    pub fn eventhub_name(&self) -> Option<&str> {
        self.eventhub_name.as_deref()
    }

    /// The name of the shared access key (`SharedAccessKeyName`), if any.
    pub fn shared_access_key_name(&self) -> Option<&str> {
        self.shared_access_key_name.as_deref()
    }

    /// The shared access key (`SharedAccessKey`), if any. Secret: do not log it.
    pub fn shared_access_key(&self) -> Option<&str> {
        self.shared_access_key.as_deref()
    }

    /// The ready-made shared access signature (`SharedAccessSignature`), if any. Secret: do not
    /// log it.
    pub fn shared_access_signature(&self) -> Option<&str> {
        self.shared_access_signature.as_deref()
    }

    /// Whether the string is for the local development emulator (`UseDevelopmentEmulator=true`).
    pub fn use_development_emulator(&self) -> bool {
        self.use_development_emulator
    }

    /// The event hub to use, from `EntityPath` and/or `argument` (the name given beside the
    /// connection string).
    ///
    /// When both are given they must agree (ignoring ASCII case, as event hub names do); the
    /// `EntityPath` spelling is returned. Fails with [`ErrorKind::InvalidArgument`] if they
    /// differ, if neither is given, or if `argument` is empty.
    pub fn resolve_eventhub_name(&self, argument: Option<&str>) -> Result<String> {
        if argument == Some("") {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the event hub name given is empty",
            ));
        }
        match (self.eventhub_name.as_deref(), argument) {
            (Some(entity_path), Some(argument)) if !entity_path.eq_ignore_ascii_case(argument) => {
                Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "the connection string's `{ENTITY_PATH}` is `{entity_path}` but the \
                         event hub name given is `{argument}`"
                    ),
                ))
            }
            (Some(name), _) | (None, Some(name)) => Ok(name.to_string()),
            (None, None) => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("no event hub name: give one, or `{ENTITY_PATH}` in the connection string"),
            )),
        }
    }
}

impl FromStr for ConnectionString {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl PartialEq for ConnectionString {
    fn eq(&self, other: &Self) -> bool {
        self.endpoint == other.endpoint
            && self.eventhub_name == other.eventhub_name
            && self.shared_access_key_name == other.shared_access_key_name
            && self.shared_access_key == other.shared_access_key
            && self.shared_access_signature == other.shared_access_signature
            && self.use_development_emulator == other.use_development_emulator
    }
}

impl Eq for ConnectionString {}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint)
            .field("eventhub_name", &self.eventhub_name)
            .field("shared_access_key_name", &self.shared_access_key_name)
            .field(
                "shared_access_key",
                &self.shared_access_key.as_ref().map(|_| Redacted),
            )
            .field(
                "shared_access_signature",
                &self.shared_access_signature.as_ref().map(|_| Redacted),
            )
            .field("use_development_emulator", &self.use_development_emulator)
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidConnectionString, message)
}

/// The Azure spelling of a known key matched without regard to case.
fn canonical(key: &str) -> &str {
    KNOWN_KEYS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(key))
        .copied()
        .unwrap_or(key)
}

/// The error for a segment with no `=`. The segment is named only when it is a known key:
/// anything else might be a secret that lost its key (e.g. a stray `;` inside a value).
fn segment_without_value(segment: &str, index: usize) -> Error {
    match KNOWN_KEYS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(segment))
    {
        Some(key) => invalid(format!("`{key}` has no value (expected `{key}=<value>`)")),
        None => invalid(format!(
            "segment {} is not a `Key=Value` pair (it has no `=`)",
            index + 1
        )),
    }
}

fn required<'a>(key: &str, value: Option<&'a str>) -> Result<&'a str> {
    match value {
        None => Err(invalid(format!("`{key}` is missing"))),
        Some("") => Err(invalid(format!("`{key}` is empty"))),
        Some(value) => Ok(value),
    }
}

fn non_empty(key: &str, value: Option<&str>) -> Result<Option<String>> {
    value
        .map(|value| required(key, Some(value)).map(str::to_string))
        .transpose()
}

/// Reads `sb://host[:port][/]` (or `amqps://`, `amqp://`, `https://`, or no scheme at all).
fn parse_endpoint(value: &str) -> Result<Endpoint> {
    let authority = match value.split_once("://") {
        Some((scheme, rest)) => {
            if !SCHEMES
                .iter()
                .any(|known| known.eq_ignore_ascii_case(scheme))
            {
                return Err(invalid(format!(
                    "`{ENDPOINT}` must start with sb://, amqps://, amqp:// or https://"
                )));
            }
            rest
        }
        None => value,
    };
    let authority = match authority.split_once('/') {
        Some((authority, "")) => authority,
        Some(_) => {
            return Err(invalid(format!(
                "`{ENDPOINT}` must not have a path (name the event hub with `{ENTITY_PATH}`)"
            )))
        }
        None => authority,
    };
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '?' | '#' | '\\'))
    {
        return Err(invalid(format!(
            "`{ENDPOINT}` must be a host with an optional port, with no user, query or spaces"
        )));
    }

    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:5672`.
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(invalid(format!("`{ENDPOINT}` has an unclosed `[`")));
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(invalid(format!(
                        "`{ENDPOINT}` has text after its IPv6 address"
                    )))
                }
            },
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(format!("`{ENDPOINT}` has no host")));
    }
    if host.contains(['[', ']']) || (!authority.starts_with('[') && host.contains(':')) {
        return Err(invalid(format!("`{ENDPOINT}` has a malformed host")));
    }
    let port = port.map(parse_port).transpose()?;
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

fn parse_port(port: &str) -> Result<u16> {
    let message = || invalid(format!("`{ENDPOINT}` has a port that is not 1 to 65535"));
    if port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(message());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(message()),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "Xq3kT9vP2mW8rL5nB7cJ4hF6dS1aG0eYzU+oI/wK=";
    const SAS: &str = "SharedAccessSignature sr=sb%3a%2f%2fns.servicebus.windows.net%2fhub&sig=Qm9vU2VjcmV0U2ln%3D&se=1700000000&skn=send";

    fn parse(s: &str) -> ConnectionString {
        match ConnectionString::parse(s) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{s:?} should parse: {error}"),
        }
    }

    /// Parses `s`, expecting failure; checks kind and that the message names `named`.
    fn reject(s: &str, named: &str) -> Error {
        let error = ConnectionString::parse(s).expect_err(s);
        assert_eq!(error.kind(), ErrorKind::InvalidConnectionString, "{s}");
        let text = error.to_string();
        assert!(
            text.contains(named),
            "{s:?}: {text:?} should name {named:?}"
        );
        error
    }

    #[test]
    fn parses_a_portal_string() {
        let s = format!(
            "Endpoint=sb://my-namespace.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"
        );
        let cs = parse(&s);
        assert_eq!(cs.endpoint().host(), "my-namespace.servicebus.windows.net");
        assert_eq!(
            cs.endpoint().fully_qualified_namespace(),
            "my-namespace.servicebus.windows.net"
        );
        assert_eq!(cs.endpoint().port(), None);
        assert_eq!(
            cs.shared_access_key_name(),
            Some("RootManageSharedAccessKey")
        );
        assert_eq!(cs.shared_access_key(), Some(KEY));
        assert_eq!(cs.shared_access_signature(), None);
        assert_eq!(cs.eventhub_name(), None);
        assert!(!cs.use_development_emulator());
        assert_eq!(s.parse::<ConnectionString>().unwrap(), cs);
    }

    #[test]
    fn parses_an_event_hub_scoped_string() {
        let cs = parse(&format!(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={KEY};EntityPath=telemetry"
        ));
        assert_eq!(cs.eventhub_name(), Some("telemetry"));
        assert_eq!(cs.shared_access_key_name(), Some("send"));
    }

    #[test]
    fn parses_the_emulator_string() {
        let cs = parse(
            "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=abc=;UseDevelopmentEmulator=true;EntityPath=hub",
        );
        assert_eq!(cs.endpoint().host(), "127.0.0.1");
        assert_eq!(cs.endpoint().port(), Some(5672));
        assert_eq!(cs.shared_access_key(), Some("abc="));
        assert!(cs.use_development_emulator());
        assert_eq!(cs.eventhub_name(), Some("hub"));

        let cs = parse(
            "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=FALSE;",
        );
        assert_eq!(cs.endpoint().host(), "localhost");
        assert!(!cs.use_development_emulator());
    }

    #[test]
    fn parses_a_shared_access_signature_with_equals_signs() {
        let cs = parse(&format!(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature={SAS};EntityPath=hub"
        ));
        assert_eq!(cs.shared_access_signature(), Some(SAS));
        assert_eq!(cs.shared_access_key_name(), None);
        assert_eq!(cs.shared_access_key(), None);
    }

    #[test]
    fn keys_ignore_case_and_whitespace_and_order() {
        let a = parse(&format!(
            "  endpoint = sb://ns.servicebus.windows.net/ ;\tSHAREDACCESSKEYNAME=name ; sharedAccessKey = {KEY} ;entitypath=hub;usedevelopmentemulator=True;;"
        ));
        let b = parse(&format!(
            "EntityPath=hub;UseDevelopmentEmulator=true;SharedAccessKey={KEY};SharedAccessKeyName=name;Endpoint=sb://ns.servicebus.windows.net/"
        ));
        assert_eq!(a, b);
        assert_eq!(a.shared_access_key(), Some(KEY));
        assert_eq!(a.shared_access_key_name(), Some("name"));
        assert!(a.use_development_emulator());
    }

    #[test]
    fn empty_segments_and_unknown_keys_are_ignored_and_named() {
        let cs = parse(
            ";;Endpoint=sb://ns.servicebus.windows.net/;;TransportType=Amqp;SharedAccessKeyName=n;SharedAccessKey=k;SharedAccesKey=typo-secret;  ;",
        );
        assert_eq!(cs.endpoint().host(), "ns.servicebus.windows.net");
        assert_eq!(cs.ignored_keys(), ["TransportType", "SharedAccesKey"]);
        assert!(cs.endpoint_has_scheme());
        assert!(!format!("{cs:?}").contains("typo-secret"));
        let bare = parse("Endpoint=ns.example;SharedAccessKeyName=n;SharedAccessKey=k");
        assert!(!bare.endpoint_has_scheme());
        assert!(bare.ignored_keys().is_empty());
    }

    #[test]
    fn accepts_endpoint_forms() {
        let cases = [
            ("sb://ns.example/", "ns.example", None),
            ("sb://ns.example", "ns.example", None),
            ("SB://ns.example:5671/", "ns.example", Some(5671)),
            ("amqps://ns.example:5671", "ns.example", Some(5671)),
            ("amqp://localhost:5672/", "localhost", Some(5672)),
            ("https://ns.example/", "ns.example", None),
            ("ns.example", "ns.example", None),
            ("ns.example:1", "ns.example", Some(1)),
            ("ns.example:65535/", "ns.example", Some(65535)),
            ("sb://[::1]:5672", "::1", Some(5672)),
            ("sb://[::1]/", "::1", None),
        ];
        for (endpoint, host, port) in cases {
            let cs = parse(&format!(
                "Endpoint={endpoint};SharedAccessKeyName=n;SharedAccessKey=k"
            ));
            assert_eq!(cs.endpoint().host(), host, "{endpoint}");
            assert_eq!(cs.endpoint().port(), port, "{endpoint}");
        }
    }

    #[test]
    fn rejects_bad_endpoints_naming_endpoint() {
        for endpoint in [
            "",
            "sb://",
            "sb:///",
            "sb://:5671",
            "sb://ns.example:",
            "sb://ns.example:0",
            "sb://ns.example:65536",
            "sb://ns.example:-1",
            "sb://ns.example:+5",
            "sb://ns.example:abc",
            "sb://ns.example/hub",
            "sb://ns.example//",
            "sb://ns.example?x=1",
            "sb://user@ns.example",
            "sb://ns example",
            "ftp://ns.example",
            "://ns.example",
            "sb://a:1:2",
            "sb://[::1",
            "sb://[::1]x",
            "sb://[]:5",
        ] {
            reject(
                &format!("Endpoint={endpoint};SharedAccessKeyName=n;SharedAccessKey=k"),
                "`Endpoint`",
            );
        }
        reject("SharedAccessKeyName=n;SharedAccessKey=k", "`Endpoint`");
    }

    #[test]
    fn rejects_missing_or_conflicting_credentials() {
        let endpoint = "Endpoint=sb://ns.example/";
        reject(
            &format!("{endpoint};SharedAccessKeyName=n"),
            "`SharedAccessKey`",
        );
        reject(
            &format!("{endpoint};SharedAccessKey={KEY}"),
            "`SharedAccessKeyName`",
        );
        let error = reject(endpoint, "`SharedAccessSignature`");
        assert!(error.to_string().contains("`SharedAccessKeyName`"));
        assert!(error.to_string().contains("`SharedAccessKey`"));
        for s in [
            format!("{endpoint};SharedAccessKeyName=n;SharedAccessKey={KEY};SharedAccessSignature={SAS}"),
            format!("{endpoint};SharedAccessKeyName=n;SharedAccessSignature={SAS}"),
            format!("{endpoint};SharedAccessKey={KEY};SharedAccessSignature={SAS}"),
        ] {
            reject(&s, "`SharedAccessSignature`");
        }
    }

    #[test]
    fn rejects_empty_values_naming_the_key() {
        let base = "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k";
        reject(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=;SharedAccessKey=k",
            "`SharedAccessKeyName`",
        );
        reject(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey= ",
            "`SharedAccessKey`",
        );
        reject(
            "Endpoint=sb://ns.example/;SharedAccessSignature=",
            "`SharedAccessSignature`",
        );
        reject(&format!("{base};EntityPath="), "`EntityPath`");
        reject(
            "Endpoint=;SharedAccessKeyName=n;SharedAccessKey=k",
            "`Endpoint`",
        );
    }

    #[test]
    fn rejects_malformed_signatures_naming_the_key_not_the_value() {
        for signature in [
            "TOPSECRET",
            "SharedAccessSignature sig=TOPSECRET&se=1",
            "SharedAccessSignature sr=x&se=1",
            "SharedAccessSignature sr=x&sig=TOPSECRET",
            "SharedAccessSignature sr=x&sig=TOPSECRET&se=later",
        ] {
            let error = reject(
                &format!("Endpoint=sb://ns.example/;SharedAccessSignature={signature}"),
                "`SharedAccessSignature` is not a valid shared access signature",
            );
            assert!(!error.to_string().contains("TOPSECRET"), "{error}");
        }
    }

    #[test]
    fn rejects_repeated_keys_naming_them() {
        let base = "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k";
        reject(
            &format!("{base};endpoint=sb://other.example/"),
            "`Endpoint`",
        );
        reject(&format!("{base};SHAREDACCESSKEY=k2"), "`SharedAccessKey`");
        reject(&format!("{base};EntityPath=a;EntityPath=a"), "`EntityPath`");
        reject(
            &format!("{base};UseDevelopmentEmulator=true;UseDevelopmentEmulator=true"),
            "`UseDevelopmentEmulator`",
        );
    }

    #[test]
    fn rejects_bad_emulator_flags() {
        let base = "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k";
        for value in ["yes", "1", "", "tru", "true false"] {
            reject(
                &format!("{base};UseDevelopmentEmulator={value}"),
                "`UseDevelopmentEmulator`",
            );
        }
        reject(
            &format!("{base};UseDevelopmentEmulator"),
            "`UseDevelopmentEmulator`",
        );
    }

    #[test]
    fn rejects_segments_without_equals() {
        reject(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=n;sharedaccesskey",
            "`SharedAccessKey`",
        );
        // Text that is not a known key is not echoed: it may be a secret.
        let error = reject(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k;TOPSECRET",
            "segment 4",
        );
        assert!(!error.to_string().contains("TOPSECRET"));
        let error = reject(
            "Endpoint=sb://ns.example/;=TOPSECRET;SharedAccessKeyName=n;SharedAccessKey=k",
            "segment 2",
        );
        assert!(!error.to_string().contains("TOPSECRET"));
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let secret_key = "TOPSECRETKEYVALUE0123456789abcdef=";
        let secret_sas = "SharedAccessSignature sr=x&sig=TOPSECRETSIGNATURE%3D&se=1&skn=n";
        let failing = [
            format!("Endpoint=sb://ns.example/;SharedAccessKey={secret_key}"),
            format!("Endpoint=sb://ns.example/;SharedAccessKey={secret_key};SharedAccessKey={secret_key};SharedAccessKeyName=n"),
            format!("Endpoint=sb://ns.example/hub;SharedAccessKeyName=n;SharedAccessKey={secret_key}"),
            format!("Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey={secret_key};SharedAccessSignature={secret_sas}"),
            format!("Endpoint=sb://ns.example/;SharedAccessKeyName=n;{secret_key}"),
            format!("Endpoint=sb://ns.example/;SharedAccessSignature={secret_sas};SharedAccessSignature={secret_sas}"),
            format!("Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey={secret_key};UseDevelopmentEmulator={secret_key}"),
        ];
        for s in &failing {
            let error = ConnectionString::parse(s).expect_err(s);
            let shown = format!("{error} {error:?} {error:#?}");
            assert!(!shown.contains("TOPSECRET"), "{s}: {shown}");
        }

        let with_key = parse(&format!(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey={secret_key}"
        ));
        let with_sas = parse(&format!(
            "Endpoint=sb://ns.example/;SharedAccessSignature={secret_sas}"
        ));
        for cs in [&with_key, &with_sas] {
            let shown = format!("{cs:?} {cs:#?}");
            assert!(!shown.contains("TOPSECRET"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(shown.contains("ns.example"), "{shown}");
        }
        assert!(format!("{with_key:?}").contains("shared_access_signature: None"));
    }

    #[test]
    fn resolves_the_event_hub_name() {
        let scoped = parse(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=orders",
        );
        let unscoped = parse("Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k");

        assert_eq!(scoped.resolve_eventhub_name(None).unwrap(), "orders");
        assert_eq!(
            scoped.resolve_eventhub_name(Some("orders")).unwrap(),
            "orders"
        );
        assert_eq!(
            scoped.resolve_eventhub_name(Some("ORDERS")).unwrap(),
            "orders"
        );
        assert_eq!(
            unscoped.resolve_eventhub_name(Some("billing")).unwrap(),
            "billing"
        );

        let error = scoped.resolve_eventhub_name(Some("billing")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        let text = error.to_string();
        assert!(
            text.contains("`EntityPath`") && text.contains("orders") && text.contains("billing"),
            "{text}"
        );

        let error = unscoped.resolve_eventhub_name(None).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(error.to_string().contains("`EntityPath`"));

        let error = unscoped.resolve_eventhub_name(Some("")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Endpoint".to_string()),
            Just("endpoint".to_string()),
            Just("SharedAccessKeyName".to_string()),
            Just("SharedAccessKey".to_string()),
            Just("SharedAccessSignature".to_string()),
            Just("EntityPath".to_string()),
            Just("UseDevelopmentEmulator".to_string()),
            Just("=".to_string()),
            Just(";".to_string()),
            Just(":".to_string()),
            Just("/".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(" ".to_string()),
            Just("sb://".to_string()),
            Just("amqps://".to_string()),
            Just("true".to_string()),
            Just("ns.servicebus.windows.net".to_string()),
            "[0-9]{0,7}",
            "[A-Za-z0-9+/=]{0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            if let Ok(cs) = ConnectionString::parse(&s) {
                let _ = format!("{cs:?}");
                let _ = cs.resolve_eventhub_name(None);
            }
        }

        #[test]
        fn plausible_strings_never_panic(parts in proptest::collection::vec(fragment(), 0..24)) {
            let s = parts.concat();
            match ConnectionString::parse(&s) {
                Ok(cs) => {
                    prop_assert!(!cs.endpoint().host().is_empty());
                    prop_assert_ne!(cs.endpoint().port(), Some(0));
                    prop_assert!(cs.shared_access_key().is_some() != cs.shared_access_signature().is_some());
                    let _ = cs.resolve_eventhub_name(Some("hub"));
                }
                Err(error) => prop_assert_eq!(error.kind(), ErrorKind::InvalidConnectionString),
            }
        }

        #[test]
        fn keys_with_equals_signs_survive(key in "[A-Za-z0-9+/]{1,60}={0,2}") {
            let cs = parse(&format!(
                "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey={key}"
            ));
            prop_assert_eq!(cs.shared_access_key(), Some(key.as_str()));
        }
    }
}
