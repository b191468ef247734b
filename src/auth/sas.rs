//! Shared access signatures (SAS): the token Event Hubs accepts on the `$cbs` link, made from a
//! shared access key or supplied ready-made.
//!
//! A token reads
//! `SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>&skn=<key name>`, where the
//! signature is the base64 HMAC-SHA256, keyed with the UTF-8 bytes of the key, of the encoded
//! resource, a newline and the expiry in Unix seconds.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// How long a token made from a shared access key is valid: one hour, as in the official Rust
/// and Python clients.
pub const DEFAULT_TOKEN_VALIDITY: Duration = Duration::from_secs(60 * 60);

/// What a token starts with.
const TOKEN_PREFIX: &str = "SharedAccessSignature ";

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A named shared access key (a namespace or event hub authorization rule).
///
/// `Debug` shows the name, never the key.
#[derive(Clone)]
pub struct SharedAccessKey {
    name: String,
    key: String,
}

impl SharedAccessKey {
    /// A key called `name` (the `SharedAccessKeyName`) with the secret `key` (the
    /// `SharedAccessKey`, used as it is, not base64-decoded).
    ///
    /// Fails with [`ErrorKind::InvalidArgument`] if either is empty.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let key = key.into();
        if name.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the shared access key name is empty",
            ));
        }
        if key.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the shared access key is empty",
            ));
        }
        Ok(Self { name, key })
    }

    /// The key's name (`skn` in the tokens it signs).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for SharedAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAccessKey")
            .field("name", &self.name)
            .field("key", &Redacted)
            .finish()
    }
}

/// Makes a token for `resource` (e.g. `amqps://<namespace>/<event hub>`) signed with `key` and
/// valid until `expires_at_unix` (Unix seconds).
///
/// The resource is encoded as the official Rust client does it: every byte other than an ASCII
/// letter, digit or `-_.~` is percent-encoded and the result is lowercased, so
/// `amqps://ns.servicebus.windows.net/hub` becomes
/// `amqps%3a%2f%2fns.servicebus.windows.net%2fhub`. The service checks the signature against the
/// `sr` value it receives, so any consistent encoding is accepted.
pub fn generate_sas_token(resource: &str, key: &SharedAccessKey, expires_at_unix: u64) -> String {
    let encoded_resource = percent_encode(resource).to_ascii_lowercase();
    let string_to_sign = format!("{encoded_resource}\n{expires_at_unix}");
    let signature = BASE64.encode(hmac_sha256(key.key.as_bytes(), string_to_sign.as_bytes()));
    format!(
        "{TOKEN_PREFIX}sr={encoded_resource}&sig={}&se={expires_at_unix}&skn={}",
        percent_encode(&signature),
        percent_encode(&key.name)
    )
}

/// HMAC-SHA256 of `message` keyed with `key`, for keys of any length.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC replaces a key longer than the hash's 64-byte block by its digest and pads a shorter
    // one with zeros (RFC 2104, section 2). Doing that here gives a block-sized key, which the
    // fixed-size constructor takes without a length check that could fail.
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        for (slot, byte) in block.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
    } else {
        for (slot, byte) in block.iter_mut().zip(key.iter()) {
            *slot = *byte;
        }
    }
    let mut mac = <Hmac<Sha256> as Mac>::new(&block.into());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Every byte but an ASCII letter, digit or `-_.~` (RFC 3986's unreserved characters).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes every byte other than an ASCII letter, digit or `-_.~`, with uppercase hex.
fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// Undoes percent-encoding (either case of hex) and reads `+` as a space, as Python's
/// `quote_plus` writes it; `None` if an escape is malformed or the bytes are not UTF-8.
/// Written here rather than with `percent_encoding::percent_decode_str`, which passes
/// malformed escapes through unchanged and keeps `+`: a token with a malformed escape must be
/// refused, and Python's client writes spaces as `+`.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(byte) = rest.next() {
        if byte == b'%' {
            let high = hex_value(rest.next()?)?;
            let low = hex_value(rest.next()?)?;
            bytes.push(high << 4 | low);
        } else if byte == b'+' {
            bytes.push(b' ');
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// A ready-made shared access signature, as given in a connection string's
/// `SharedAccessSignature` or by the application.
///
/// `Debug` shows the expiry, never the token.
#[derive(Clone)]
pub struct SharedAccessSignature {
    token: String,
    expires_at_unix: u64,
}

impl SharedAccessSignature {
    /// Reads a token of the form `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` (surrounding
    /// whitespace is ignored; fields may come in any order).
    ///
    /// Fails with [`ErrorKind::InvalidArgument`] if the prefix is missing, `sr` or `sig` is
    /// missing or empty, `se` is missing or not a number of seconds, or a field appears twice.
    /// The error names the field, never the token.
    pub fn parse(token: &str) -> Result<Self> {
        let token = token.trim();
        let fields = fields_of(token).ok_or_else(|| {
            invalid("a shared access signature must start with `SharedAccessSignature `")
        })?;
        let mut resource = None;
        let mut signature = None;
        let mut expiry = None;
        for field in fields.split('&').filter(|field| !field.is_empty()) {
            let (name, value) = field.split_once('=').unwrap_or((field, ""));
            let slot = match name {
                "sr" => &mut resource,
                "sig" => &mut signature,
                "se" => &mut expiry,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(invalid(format!(
                    "the shared access signature has `{name}` more than once"
                )));
            }
        }
        for (name, value) in [("sr", resource), ("sig", signature)] {
            if value.is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "the shared access signature has no `{name}` (its {})",
                    if name == "sr" {
                        "resource"
                    } else {
                        "signature"
                    }
                )));
            }
        }
        let expiry = expiry.ok_or_else(|| {
            invalid("the shared access signature has no `se` (its expiry in Unix seconds)")
        })?;
        if expiry.is_empty() || !expiry.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid(
                "the shared access signature's `se` is not a number of Unix seconds",
            ));
        }
        let expires_at_unix = expiry.parse().map_err(|_| {
            invalid("the shared access signature's `se` is too large for Unix seconds")
        })?;
        Ok(Self {
            token: token.to_string(),
            expires_at_unix,
        })
    }

    /// The whole token, to send to the service. Secret.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the token expires, in Unix seconds (its `se`).
    pub fn expires_at_unix(&self) -> u64 {
        self.expires_at_unix
    }

    /// The resource the token is for (its `sr`, percent-decoded), or `None` if `sr` is not
    /// valid percent-encoded UTF-8.
    pub fn resource(&self) -> Option<String> {
        let encoded = fields_of(&self.token)?
            .split('&')
            .find_map(|field| field.strip_prefix("sr="))?;
        percent_decode(encoded)
    }
}

impl fmt::Debug for SharedAccessSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAccessSignature")
            .field("token", &Redacted)
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

/// The `&`-separated fields after the prefix (and any further spaces), or `None` without the
/// prefix.
fn fields_of(token: &str) -> Option<&str> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .map(|fields| fields.trim_start_matches(' '))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTOR: &str = "SharedAccessSignature sr=amqps%3a%2f%2fexample.servicebus.windows.net%2fmyhub&sig=SgJoMn7K6nWDCF6e1%2BfsxrmJLsorqPeZ3B8N1uQ31dc%3D&se=1700000000&skn=RootManageSharedAccessKey";

    /// An HMAC through the hmac crate's own key handling, to check the block-key shortcut.
    fn reference_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    fn field<'a>(token: &'a str, name: &str) -> &'a str {
        token
            .strip_prefix(TOKEN_PREFIX)
            .unwrap()
            .split('&')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap()
    }

    #[test]
    fn reproduces_the_published_vector() {
        let key = SharedAccessKey::new("RootManageSharedAccessKey", "mykey").unwrap();
        let token = generate_sas_token(
            "amqps://example.servicebus.windows.net/myhub",
            &key,
            1_700_000_000,
        );
        assert_eq!(token, VECTOR);
    }

    #[test]
    fn second_vector_matches_an_independent_computation() {
        // Mixed case, a port, a space and a non-ASCII letter in the resource; `+`, `/` and `=`
        // are likely in the signature; the key name needs encoding too.
        let resource = "amqps://My-NS.servicebus.windows.net:5671/Hub Ü";
        let key = SharedAccessKey::new("send policy", "c2VjcmV0K2tleS8=").unwrap();
        let token = generate_sas_token(resource, &key, 1_234_567_890);

        let sr = "amqps%3a%2f%2fmy-ns.servicebus.windows.net%3a5671%2fhub%20%c3%9c";
        let mac = reference_hmac(b"c2VjcmV0K2tleS8=", format!("{sr}\n1234567890").as_bytes());
        let sig = BASE64
            .encode(mac)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(
            token,
            format!("SharedAccessSignature sr={sr}&sig={sig}&se=1234567890&skn=send%20policy")
        );
        // The same token as computed by Python's hmac, base64 and urllib.parse.quote.
        assert_eq!(
            token,
            "SharedAccessSignature sr=amqps%3a%2f%2fmy-ns.servicebus.windows.net%3a5671%2fhub%20%c3%9c&sig=lxT%2FSPYigXLdmtJUC%2FWbszbOINOSWEdFpUzWZZr13uU%3D&se=1234567890&skn=send%20policy"
        );
    }

    #[test]
    fn long_keys_are_hashed_as_hmac_requires() {
        let long = "k".repeat(200);
        assert_eq!(
            hmac_sha256(long.as_bytes(), b"message").to_vec(),
            reference_hmac(long.as_bytes(), b"message")
        );
        let exact = "b".repeat(64);
        assert_eq!(
            hmac_sha256(exact.as_bytes(), b"m").to_vec(),
            reference_hmac(exact.as_bytes(), b"m")
        );
    }

    #[test]
    fn generated_tokens_parse_back() {
        let key = SharedAccessKey::new("name", "secret").unwrap();
        let resource = "sb://ns.servicebus.windows.net/hub";
        let sas = SharedAccessSignature::parse(&generate_sas_token(resource, &key, 42)).unwrap();
        assert_eq!(sas.expires_at_unix(), 42);
        assert_eq!(sas.resource().as_deref(), Some(resource));
        assert!(sas.token().starts_with("SharedAccessSignature sr=sb%3a"));
    }

    #[test]
    fn parses_tokens_from_other_clients() {
        let sas = SharedAccessSignature::parse(VECTOR).unwrap();
        assert_eq!(sas.expires_at_unix(), 1_700_000_000);
        assert_eq!(sas.token(), VECTOR);
        assert_eq!(
            sas.resource().as_deref(),
            Some("amqps://example.servicebus.windows.net/myhub")
        );

        // .NET style: uppercase hex, fields in another order, no skn, extra whitespace.
        let sas = SharedAccessSignature::parse(
            "  SharedAccessSignature   se=99&sig=abc%3D&sr=sb%3A%2F%2Fns.example%2Fhub  ",
        )
        .unwrap();
        assert_eq!(sas.expires_at_unix(), 99);
        assert_eq!(sas.resource().as_deref(), Some("sb://ns.example/hub"));
        assert!(sas.token().starts_with("SharedAccessSignature   se=99"));

        // Python style: `quote_plus`, so a space in the resource is a `+`.
        let sas = SharedAccessSignature::parse(
            "SharedAccessSignature sr=sb%3A%2F%2Fns%2Fmy+hub&sig=x&se=1",
        )
        .unwrap();
        assert_eq!(sas.resource().as_deref(), Some("sb://ns/my hub"));

        // A malformed escape in sr still parses; only the decoded resource is unavailable.
        let sas = SharedAccessSignature::parse("SharedAccessSignature sr=a%zz&sig=x&se=1").unwrap();
        assert_eq!(sas.resource(), None);
    }

    #[test]
    fn rejects_malformed_tokens_naming_the_field() {
        let cases = [
            ("sr=a&sig=SECRETSIG&se=1", "SharedAccessSignature"),
            (
                "sharedaccesssignature sr=a&sig=SECRETSIG&se=1",
                "SharedAccessSignature",
            ),
            ("SharedAccessSignature sig=SECRETSIG&se=1", "`sr`"),
            ("SharedAccessSignature sr=&sig=SECRETSIG&se=1", "`sr`"),
            ("SharedAccessSignature sr=a&se=1&skn=n", "`sig`"),
            ("SharedAccessSignature sr=a&sig&se=1", "`sig`"),
            ("SharedAccessSignature sr=a&sig=SECRETSIG", "`se`"),
            ("SharedAccessSignature sr=a&sig=SECRETSIG&se=", "`se`"),
            ("SharedAccessSignature sr=a&sig=SECRETSIG&se=-1", "`se`"),
            ("SharedAccessSignature sr=a&sig=SECRETSIG&se=1.5", "`se`"),
            (
                "SharedAccessSignature sr=a&sig=SECRETSIG&se=99999999999999999999999",
                "`se`",
            ),
            ("SharedAccessSignature sr=a&sig=SECRETSIG&se=1&se=2", "`se`"),
            (
                "SharedAccessSignature sr=a&sig=SECRETSIG&sig=SECRETSIG&se=1",
                "`sig`",
            ),
            ("", "SharedAccessSignature"),
        ];
        for (token, named) in cases {
            let error = SharedAccessSignature::parse(token).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{token}");
            let text = error.to_string();
            assert!(text.contains(named), "{token}: {text}");
            assert!(!text.contains("SECRETSIG"), "{token}: {text}");
            assert!(!format!("{error:?}").contains("SECRETSIG"), "{token}");
        }
    }

    #[test]
    fn key_requires_a_name_and_a_key() {
        let error = SharedAccessKey::new("", "secret").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(error.to_string().contains("name"));
        let error = SharedAccessKey::new("name", "").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert_eq!(SharedAccessKey::new("n", "k").unwrap().name(), "n");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let key = SharedAccessKey::new("RootManageSharedAccessKey", "TOPSECRETKEY").unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains("TOPSECRETKEY"), "{shown}");
        assert!(shown.contains("RootManageSharedAccessKey"));
        assert!(shown.contains("<redacted>"));

        let sas = SharedAccessSignature::parse(VECTOR).unwrap();
        let shown = format!("{sas:?} {sas:#?}");
        assert!(!shown.contains("SgJoMn7K6nWDCF6e1"), "{shown}");
        assert!(!shown.contains("example.servicebus"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains("1700000000"));
    }

    #[test]
    fn default_validity_is_one_hour() {
        assert_eq!(DEFAULT_TOKEN_VALIDITY, Duration::from_secs(3600));
    }

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_encode("a-_.~Z9 /+=é"), "a-_.~Z9%20%2F%2B%3D%C3%A9");
        assert_eq!(
            percent_decode("a%2fb%2F%C3%a9+%2B").as_deref(),
            Some("a/b/é +")
        );
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(token in any::<String>()) {
            let _ = SharedAccessSignature::parse(&token).map(|sas| sas.resource());
        }

        #[test]
        fn parse_never_panics_on_plausible_tokens(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("SharedAccessSignature ".to_string()),
                    Just("sr=".to_string()),
                    Just("sig=".to_string()),
                    Just("se=".to_string()),
                    Just("skn=".to_string()),
                    Just("&".to_string()),
                    Just("%".to_string()),
                    "[0-9]{0,25}",
                    "%[0-9a-fA-F]{0,2}",
                    any::<String>(),
                ],
                0..12,
            )
        ) {
            let token = parts.concat();
            if let Ok(sas) = SharedAccessSignature::parse(&token) {
                let _ = sas.resource();
                prop_assert_eq!(sas.token(), token.trim());
            }
        }

        #[test]
        fn generated_tokens_match_the_hmac_crate(
            resource in ".+",
            name in ".+",
            secret in ".+",
            expiry in any::<u64>(),
        ) {
            let key = SharedAccessKey::new(name.clone(), secret.clone()).unwrap();
            let token = generate_sas_token(&resource, &key, expiry);
            let sr = field(&token, "sr");
            let mac = reference_hmac(secret.as_bytes(), format!("{sr}\n{expiry}").as_bytes());
            prop_assert_eq!(percent_decode(field(&token, "sig")), Some(BASE64.encode(mac)));
            prop_assert_eq!(percent_decode(field(&token, "skn")), Some(name));
            prop_assert_eq!(percent_decode(sr), Some(resource.to_ascii_lowercase()));
            let sas = SharedAccessSignature::parse(&token).unwrap();
            prop_assert_eq!(sas.expires_at_unix(), expiry);
        }
    }
}
