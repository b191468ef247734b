//! The connection-string parser (and the credential parsers a connection string feeds) on
//! arbitrary text.
//!
//! Beyond "no panic", it checks what the module promises:
//! - a parsed string has a host, a port in 1..=65535 if any, and exactly one credential;
//! - parsing is stable: the parsed value, written back as a connection string, parses to itself;
//! - secrets never show: the outcome, the `Debug` of the parsed value and the text of the error
//!   are the same when every `SharedAccessKey` value, the `sig` of every
//!   `SharedAccessSignature`, and every segment that is not a `Key=Value` pair (which may be a
//!   secret that lost its key) are replaced by other text, so none of them can depend on a
//!   secret;
//! - a token signed for the endpoint parses back with its expiry and resource.
#![no_main]

use eventhubs_buffered::auth::sas::generate_sas_token;
use eventhubs_buffered::auth::{SharedAccessKey, SharedAccessSignature};
use eventhubs_buffered::{ConnectionString, ErrorKind};
use libfuzzer_sys::fuzz_target;

const KNOWN_KEYS: [&str; 6] = [
    "Endpoint",
    "SharedAccessKeyName",
    "SharedAccessKey",
    "SharedAccessSignature",
    "EntityPath",
    "UseDevelopmentEmulator",
];
const MASK: &str = "masked-by-the-fuzz-target";

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 arrives as replacement characters, as a lossy reader would give it.
    let text = String::from_utf8_lossy(data);
    check(&text);
});

fn check(text: &str) {
    let parsed = ConnectionString::parse(text);
    let via_from_str = text.parse::<ConnectionString>();
    assert_eq!(
        parsed.as_ref().ok(),
        via_from_str.as_ref().ok(),
        "parse and FromStr disagree"
    );

    let masked = mask_secrets(text);
    let parsed_masked = ConnectionString::parse(&masked);
    match (&parsed, &parsed_masked) {
        (Ok(cs), Ok(cs_masked)) => {
            assert_eq!(
                format!("{cs:?} {cs:#?}"),
                format!("{cs_masked:?} {cs_masked:#?}"),
                "Debug depends on a secret"
            );
            check_parsed(cs);
        }
        (Err(error), Err(error_masked)) => {
            assert_eq!(error.kind(), ErrorKind::InvalidConnectionString);
            assert_eq!(
                format!("{error} {error:?}"),
                format!("{error_masked} {error_masked:?}"),
                "the error depends on a secret"
            );
        }
        _ => panic!("the outcome depends on a secret: {masked:?}"),
    }
}

fn check_parsed(cs: &ConnectionString) {
    let endpoint = cs.endpoint();
    assert!(!endpoint.host().is_empty());
    assert_eq!(endpoint.fully_qualified_namespace(), endpoint.host());
    assert_ne!(endpoint.port(), Some(0));
    assert_eq!(
        cs.shared_access_key_name().is_some(),
        cs.shared_access_key().is_some()
    );
    assert_ne!(
        cs.shared_access_key().is_some(),
        cs.shared_access_signature().is_some()
    );
    for value in [
        cs.eventhub_name(),
        cs.shared_access_key_name(),
        cs.shared_access_key(),
        cs.shared_access_signature(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!value.is_empty() && value.trim() == value && !value.contains(';'));
    }

    let rewritten = write_back(cs);
    match ConnectionString::parse(&rewritten) {
        Ok(again) => assert_eq!(&again, cs, "{rewritten:?} parses differently"),
        Err(error) => panic!("{rewritten:?} does not parse again: {error}"),
    }

    match (cs.eventhub_name(), cs.resolve_eventhub_name(None)) {
        (Some(name), Ok(resolved)) => assert_eq!(name, resolved),
        (None, Err(error)) => assert_eq!(error.kind(), ErrorKind::InvalidArgument),
        (name, resolved) => panic!("resolve_eventhub_name(None) = {resolved:?} for {name:?}"),
    }
    if let Some(name) = cs.eventhub_name() {
        let upper = name.to_ascii_uppercase();
        assert_eq!(
            cs.resolve_eventhub_name(Some(&upper)).ok().as_deref(),
            Some(name)
        );
    }

    if let (Some(name), Some(key)) = (cs.shared_access_key_name(), cs.shared_access_key()) {
        let key = match SharedAccessKey::new(name, key) {
            Ok(key) => key,
            Err(error) => panic!("a parsed key is refused: {error}"),
        };
        let shown = format!("{key:?}");
        let masked = SharedAccessKey::new(name, MASK).map(|k| format!("{k:?}"));
        assert_eq!(Ok(shown), masked.map_err(|e| e.to_string()));
        check_token_round_trip(cs, &key);
    }
    if let Some(signature) = cs.shared_access_signature() {
        check_signature(signature);
    }
}

/// A token the client signs for this endpoint must parse back to what was signed.
fn check_token_round_trip(cs: &ConnectionString, key: &SharedAccessKey) {
    let host = cs.endpoint().host();
    let resource = match cs.eventhub_name() {
        Some(hub) => format!("amqps://{host}/{hub}"),
        None => format!("amqps://{host}/"),
    };
    let expiry = u64::from(host.len() as u32) * 1_000_003;
    let token = generate_sas_token(&resource, key, expiry);
    match SharedAccessSignature::parse(&token) {
        Ok(parsed) => {
            assert_eq!(parsed.expires_at_unix(), expiry);
            assert_eq!(parsed.resource(), Some(resource.to_ascii_lowercase()));
            assert_eq!(parsed.token(), token);
        }
        Err(error) => panic!("a generated token does not parse: {error}"),
    }
}

/// The client's parser of ready-made signatures: its outcome, `Debug` and error text must not
/// depend on the `sig` value.
fn check_signature(signature: &str) {
    let parsed = SharedAccessSignature::parse(signature);
    let masked = mask_signature(signature);
    let parsed_masked = SharedAccessSignature::parse(&masked);
    match (parsed, parsed_masked) {
        (Ok(a), Ok(b)) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert_eq!(a.token(), signature.trim());
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.kind(), ErrorKind::InvalidArgument);
            assert_eq!(format!("{a} {a:?}"), format!("{b} {b:?}"));
        }
        _ => panic!("the outcome depends on the signature: {masked:?}"),
    }
}

/// Scrambles the `sig` value of a token (the field named exactly `sig`; on the first field the
/// name follows the prefix).
fn mask_signature(token: &str) -> String {
    token
        .split('&')
        .enumerate()
        .map(|(index, field)| match field.split_once('=') {
            Some((name, value)) => {
                let bare = if index == 0 {
                    name.trim_start()
                        .strip_prefix("SharedAccessSignature ")
                        .map(|rest| rest.trim_start_matches(' '))
                        .unwrap_or(name)
                } else {
                    name
                };
                if bare == "sig" {
                    format!("{name}={}", scramble(value))
                } else {
                    field.to_string()
                }
            }
            None => field.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Other text that every parser here treats alike: each non-whitespace character becomes an
/// `x` (or a `y` where it was an `x`), so the text differs everywhere but stays as (non-)empty
/// after trimming and holds no separator.
fn scramble(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_whitespace() => c,
            'x' => 'y',
            _ => 'x',
        })
        .collect()
}

/// Scrambles the values of secret keys, and segments that are not `Key=Value` pairs (unless
/// they name a known key, which the error then names).
fn mask_secrets(text: &str) -> String {
    text.split(';')
        .map(|segment| match segment.split_once('=') {
            None if KNOWN_KEYS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(segment.trim())) =>
            {
                segment.to_string()
            }
            None => scramble(segment),
            Some((key, value)) if key.trim().eq_ignore_ascii_case("SharedAccessKey") => {
                format!("{key}={}", scramble(value))
            }
            // A ready-made signature is checked for its shape when the connection string is
            // parsed, and errors name the field at fault: only its `sig` is the secret.
            Some((key, value)) if key.trim().eq_ignore_ascii_case("SharedAccessSignature") => {
                format!("{key}={}", mask_signature(value))
            }
            Some(_) => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The parsed value written back as a connection string.
fn write_back(cs: &ConnectionString) -> String {
    let endpoint = cs.endpoint();
    let host = if endpoint.host().contains(':') {
        format!("[{}]", endpoint.host())
    } else {
        endpoint.host().to_string()
    };
    let mut out = match endpoint.port() {
        Some(port) => format!("Endpoint=sb://{host}:{port}/"),
        None => format!("Endpoint=sb://{host}/"),
    };
    let fields = [
        ("SharedAccessKeyName", cs.shared_access_key_name()),
        ("SharedAccessKey", cs.shared_access_key()),
        ("SharedAccessSignature", cs.shared_access_signature()),
        ("EntityPath", cs.eventhub_name()),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            out.push_str(&format!(";{key}={value}"));
        }
    }
    if cs.use_development_emulator() {
        out.push_str(";UseDevelopmentEmulator=true");
    }
    out
}
