//! Shared Access Signature (SAS) token validation.
//!
//! Clients authenticate by putting a token on the `$cbs` node:
//! `SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>&skn=<key name>`,
//! where the signature is HMAC-SHA256, keyed with the UTF-8 bytes of the
//! shared key, over `<sr>\n<se>`. SDKs disagree on how they percent-encode
//! `sr`, so the signature is always checked against the raw text from the
//! token and never against a re-encoding of the decoded resource.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_PREFIX: &str = "SharedAccessSignature ";

/// A named shared access key the emulator accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct SasKey {
    /// Key name, matched exactly against the token's `skn`.
    pub name: String,
    /// Key value; its UTF-8 bytes are the HMAC key.
    pub key: String,
}

impl fmt::Debug for SasKey {
    // Keys end up in logs via config dumps; never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The claims of a token whose signature and expiry checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSas {
    /// The percent-decoded `sr` resource URI the token is scoped to.
    pub resource: String,
    /// The name of the key that signed the token.
    pub key_name: String,
    /// Expiry (`se`) in seconds since the Unix epoch.
    pub expires_at_unix: u64,
}

/// Why a SAS token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SasError {
    /// The token is not well formed; the text says what is wrong. It never
    /// contains the token itself, so it is safe to log or send back.
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    /// `skn` names no configured key.
    #[error("SAS token key name is not recognised")]
    UnknownKeyName,
    /// The signature does not match the named key.
    #[error("SAS token signature is invalid")]
    BadSignature,
    /// `se` is not after the current time.
    #[error("SAS token has expired")]
    Expired {
        /// The token's `se`: when it expired, in seconds since the Unix epoch.
        expires_at_unix: u64,
    },
}

/// The four token fields, still exactly as they appear in the token.
struct RawFields<'a> {
    sr: &'a str,
    sig: &'a str,
    se: &'a str,
    skn: &'a str,
}

/// Validates a SAS token against the configured keys at time `now_unix`.
///
/// Checks, in order: shape (prefix, all of `sr`/`sig`/`se`/`skn`, numeric
/// `se`), key name, signature (constant-time), then expiry (`se > now`).
///
/// # Errors
///
/// Returns the [`SasError`] for the first check that fails.
pub fn validate_sas_token(
    token: &str,
    keys: &[SasKey],
    now_unix: u64,
) -> Result<ValidatedSas, SasError> {
    let fields = split_fields(token)?;
    let resource =
        percent_decode(fields.sr).ok_or(SasError::Malformed("sr is not valid percent-encoding"))?;
    let key_name = percent_decode(fields.skn)
        .ok_or(SasError::Malformed("skn is not valid percent-encoding"))?;
    let expires_at_unix = parse_expiry(fields.se)?;
    let signature = decode_signature(fields.sig)?;

    let key = keys
        .iter()
        .find(|key| key.name == key_name)
        .ok_or(SasError::UnknownKeyName)?;
    signer(&key.key, fields.sr, fields.se)
        .verify_slice(&signature)
        .map_err(|_| SasError::BadSignature)?;
    if expires_at_unix <= now_unix {
        return Err(SasError::Expired { expires_at_unix });
    }
    Ok(ValidatedSas {
        resource,
        key_name,
        expires_at_unix,
    })
}

/// Checks the prefix and splits the `&`-separated parameters, keeping each
/// value raw. Unknown parameters are ignored; repeated ones are rejected so
/// there is no ambiguity about which value was signed.
fn split_fields(token: &str) -> Result<RawFields<'_>, SasError> {
    let params = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(SasError::Malformed("missing SharedAccessSignature prefix"))?
        .trim_start_matches(' ');
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for param in params.split('&') {
        let (name, value) = param
            .split_once('=')
            .ok_or(SasError::Malformed("parameter without '='"))?;
        let slot = match name {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(SasError::Malformed("repeated parameter"));
        }
    }
    Ok(RawFields {
        sr: non_empty(sr, "missing sr")?,
        sig: non_empty(sig, "missing sig")?,
        se: non_empty(se, "missing se")?,
        skn: non_empty(skn, "missing skn")?,
    })
}

/// Requires a parameter to be present with a non-empty value.
fn non_empty<'a>(value: Option<&'a str>, what: &'static str) -> Result<&'a str, SasError> {
    value
        .filter(|value| !value.is_empty())
        .ok_or(SasError::Malformed(what))
}

/// Parses `se`, allowing only ASCII digits (no sign, no whitespace).
fn parse_expiry(se: &str) -> Result<u64, SasError> {
    if !se.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(SasError::Malformed("se is not a number"));
    }
    se.parse()
        .map_err(|_| SasError::Malformed("se is out of range"))
}

/// Percent-decodes and base64-decodes `sig`.
fn decode_signature(sig: &str) -> Result<Vec<u8>, SasError> {
    // Base64 never contains spaces, so a literal '+' here is a base64 '+'
    // from a client that did not encode it, not a form-encoded space.
    let text =
        decode_bytes(sig, false).ok_or(SasError::Malformed("sig is not valid percent-encoding"))?;
    BASE64
        .decode(text)
        .map_err(|_| SasError::Malformed("sig is not valid base64"))
}

/// Prepares an HMAC over the string to sign, `<sr>\n<se>`.
fn signer(key: &str, raw_sr: &str, raw_se: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never actually fails; fall
    // back to an empty key rather than panic to keep the function total.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
    mac.update(raw_sr.as_bytes());
    mac.update(b"\n");
    mac.update(raw_se.as_bytes());
    mac
}

/// Base64 signature for the given raw `sr` and `se` texts.
fn sign(key: &str, raw_sr: &str, raw_se: &str) -> String {
    BASE64.encode(signer(key, raw_sr, raw_se).finalize().into_bytes())
}

/// Decodes `%XX` escapes (either hex case) and `+` as space.
///
/// Returns `None` on a truncated or non-hex escape, or if the decoded bytes
/// are not valid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = decode_bytes(s, true)?;
    String::from_utf8(bytes).ok()
}

/// Percent-decodes to raw bytes, optionally mapping `+` to a space.
fn decode_bytes(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(byte) = bytes.next() {
        let decoded = match byte {
            b'%' => {
                let high = hex_value(bytes.next()?)?;
                let low = hex_value(bytes.next()?)?;
                (high << 4) | low
            }
            b'+' if plus_is_space => b' ',
            other => other,
        };
        out.push(decoded);
    }
    Some(out)
}

/// Value of one hex digit, either case.
fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Creates a token for `resource` signed with `key`, valid until
/// `expires_at_unix` (seconds since the Unix epoch).
///
/// `sr` and `sig` are percent-encoded with uppercase hex, leaving only ASCII
/// alphanumerics and `-_.~` unescaped.
pub fn generate_sas_token(resource: &str, key: &SasKey, expires_at_unix: u64) -> String {
    let sr = percent_encode(resource);
    let se = expires_at_unix.to_string();
    let sig = percent_encode(&sign(&key.key, &sr, &se));
    let skn = percent_encode(&key.name);
    format!("{TOKEN_PREFIX}sr={sr}&sig={sig}&se={se}&skn={skn}")
}

/// Percent-encodes every byte except unreserved URI characters.
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            // Nibbles are < 16, so these lookups cannot miss.
            for nibble in [byte >> 4, byte & 0x0f] {
                if let Some(&digit) = HEX.get(usize::from(nibble)) {
                    out.push(char::from(digit));
                }
            }
        }
    }
    out
}

/// Whether a token scoped to `resource` (already decoded) authorizes access
/// to the `audience` URL.
///
/// Schemes, ports, letter case and trailing `/` are ignored; the host names
/// must match and the resource path must be a whole-segment prefix of the
/// audience path. An empty resource path covers the whole namespace.
pub fn resource_covers(resource: &str, audience: &str) -> bool {
    let (Some((resource_host, resource_path)), Some((audience_host, audience_path))) =
        (split_url(resource), split_url(audience))
    else {
        return false;
    };
    if !resource_host.eq_ignore_ascii_case(audience_host) {
        return false;
    }
    let mut audience_segments = path_segments(audience_path);
    path_segments(resource_path).all(|expected| {
        audience_segments
            .next()
            .is_some_and(|actual| actual.eq_ignore_ascii_case(expected))
    })
}

/// Splits a URL (scheme optional) into host without port, and path.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    let host = strip_port(authority);
    (!host.is_empty()).then_some((host, path))
}

/// Drops a `:port` suffix, keeping bracketed IPv6 literals intact.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(literal, _)| literal);
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}

/// Non-empty `/`-separated path segments, so leading, trailing and doubled
/// slashes do not matter.
fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTOR_TOKEN: &str = "SharedAccessSignature sr=amqps%3a%2f%2fexample.servicebus.windows.net%2fmyhub&sig=SgJoMn7K6nWDCF6e1%2BfsxrmJLsorqPeZ3B8N1uQ31dc%3D&se=1700000000&skn=RootManageSharedAccessKey";

    fn key(name: &str, value: &str) -> SasKey {
        SasKey {
            name: name.into(),
            key: value.into(),
        }
    }

    fn root_key() -> Vec<SasKey> {
        vec![key("RootManageSharedAccessKey", "mykey")]
    }

    #[test]
    fn signature_matches_published_vector() {
        let sig = sign(
            "mykey",
            "amqps%3a%2f%2fexample.servicebus.windows.net%2fmyhub",
            "1700000000",
        );
        assert_eq!(sig, "SgJoMn7K6nWDCF6e1+fsxrmJLsorqPeZ3B8N1uQ31dc=");
        assert_eq!(
            percent_encode(&sig),
            "SgJoMn7K6nWDCF6e1%2BfsxrmJLsorqPeZ3B8N1uQ31dc%3D"
        );
    }

    #[test]
    fn published_token_validates_before_expiry() {
        let validated = validate_sas_token(VECTOR_TOKEN, &root_key(), 1_699_999_999).unwrap();
        assert_eq!(
            validated,
            ValidatedSas {
                resource: "amqps://example.servicebus.windows.net/myhub".into(),
                key_name: "RootManageSharedAccessKey".into(),
                expires_at_unix: 1_700_000_000,
            }
        );
    }

    #[test]
    fn published_token_expires_at_se() {
        assert_eq!(
            validate_sas_token(VECTOR_TOKEN, &root_key(), 1_700_000_000),
            Err(SasError::Expired {
                expires_at_unix: 1_700_000_000
            })
        );
    }

    #[test]
    fn other_key_value_is_bad_signature() {
        let keys = [key("RootManageSharedAccessKey", "otherkey")];
        assert_eq!(
            validate_sas_token(VECTOR_TOKEN, &keys, 0),
            Err(SasError::BadSignature)
        );
    }

    #[test]
    fn other_key_name_is_unknown() {
        let keys = [key("SomeOtherKey", "mykey")];
        assert_eq!(
            validate_sas_token(VECTOR_TOKEN, &keys, 0),
            Err(SasError::UnknownKeyName)
        );
    }

    #[test]
    fn parameter_order_and_extra_spaces_do_not_matter() {
        let token = "SharedAccessSignature   skn=RootManageSharedAccessKey&se=1700000000&sig=SgJoMn7K6nWDCF6e1%2BfsxrmJLsorqPeZ3B8N1uQ31dc%3D&sr=amqps%3a%2f%2fexample.servicebus.windows.net%2fmyhub";
        assert!(validate_sas_token(token, &root_key(), 0).is_ok());
    }

    #[test]
    fn unencoded_plus_in_signature_is_accepted() {
        let token = VECTOR_TOKEN.replace("%2B", "+");
        assert!(validate_sas_token(&token, &root_key(), 0).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let cases = [
            ("", "missing SharedAccessSignature prefix"),
            (
                "sharedaccesssignature sr=a&sig=AA%3D%3D&se=1&skn=k",
                "missing SharedAccessSignature prefix",
            ),
            (
                "SharedAccessSignature",
                "missing SharedAccessSignature prefix",
            ),
            ("SharedAccessSignature ", "parameter without '='"),
            (
                "SharedAccessSignature sig=AA%3D%3D&se=1&skn=k",
                "missing sr",
            ),
            ("SharedAccessSignature sr=a&se=1&skn=k", "missing sig"),
            (
                "SharedAccessSignature sr=a&sig=AA%3D%3D&skn=k",
                "missing se",
            ),
            (
                "SharedAccessSignature sr=a&sig=AA%3D%3D&se=1",
                "missing skn",
            ),
            (
                "SharedAccessSignature sr=&sig=AA%3D%3D&se=1&skn=k",
                "missing sr",
            ),
            (
                "SharedAccessSignature sr=a&sr=b&sig=AA%3D%3D&se=1&skn=k",
                "repeated parameter",
            ),
            (
                "SharedAccessSignature sr=a&sig=AA%3D%3D&se=soon&skn=k",
                "se is not a number",
            ),
            (
                "SharedAccessSignature sr=a&sig=AA%3D%3D&se=-1&skn=k",
                "se is not a number",
            ),
            (
                "SharedAccessSignature sr=a&sig=AA%3D%3D&se=99999999999999999999999&skn=k",
                "se is out of range",
            ),
            (
                "SharedAccessSignature sr=a%zz&sig=AA%3D%3D&se=1&skn=k",
                "sr is not valid percent-encoding",
            ),
            (
                "SharedAccessSignature sr=a&sig=%%%&se=1&skn=k",
                "sig is not valid percent-encoding",
            ),
            (
                "SharedAccessSignature sr=a&sig=not*base64&se=1&skn=k",
                "sig is not valid base64",
            ),
        ];
        for (token, what) in cases {
            assert_eq!(
                validate_sas_token(token, &root_key(), 0),
                Err(SasError::Malformed(what)),
                "token {token:?}"
            );
        }
    }

    #[test]
    fn generated_token_validates() {
        let key = key("sender", "s3cret/with+chars=");
        let resource = "sb://127.0.0.1:5672/hub";
        let token = generate_sas_token(resource, &key, 2_000);
        let validated = validate_sas_token(&token, &[key], 1_999).unwrap();
        assert_eq!(validated.resource, resource);
        assert_eq!(validated.key_name, "sender");
        assert_eq!(validated.expires_at_unix, 2_000);
    }

    #[test]
    fn generated_token_uses_uppercase_escapes() {
        let token = generate_sas_token("sb://h/x y", &key("k", "v"), 5);
        assert!(token.starts_with("SharedAccessSignature sr=sb%3A%2F%2Fh%2Fx%20y&sig="));
        assert!(token.ends_with("&se=5&skn=k"));
    }

    #[test]
    fn tampering_with_expiry_breaks_signature() {
        let key = key("sender", "secret");
        let token = generate_sas_token("sb://host/hub", &key, 2_000);
        let tampered = token.replace("se=2000", "se=9000");
        assert_eq!(
            validate_sas_token(&tampered, &[key], 0),
            Err(SasError::BadSignature)
        );
    }

    #[test]
    fn debug_redacts_key() {
        let printed = format!("{:?}", key("name", "top-secret"));
        assert!(printed.contains("name"));
        assert!(!printed.contains("top-secret"));
    }

    #[test]
    fn percent_decode_handles_escapes() {
        assert_eq!(percent_decode("a%2fb%2Fc").as_deref(), Some("a/b/c"));
        assert_eq!(percent_decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode(""), Some(String::new()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%g0"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn resource_covers_prefix_paths() {
        let resource = "sb://127.0.0.1:5672/hub";
        assert!(resource_covers(resource, "amqp://127.0.0.1:5672/hub"));
        assert!(resource_covers(resource, "amqp://127.0.0.1:5672/hub/"));
        assert!(resource_covers(
            resource,
            "amqp://127.0.0.1:5672/hub/Partitions/0"
        ));
        assert!(resource_covers(
            "SB://127.0.0.1/HUB/",
            "amqps://127.0.0.1:5671/hub/consumergroups/$default"
        ));
        assert!(!resource_covers(resource, "amqp://127.0.0.1:5672/hub2"));
        assert!(!resource_covers(resource, "amqp://127.0.0.1:5672/"));
        assert!(!resource_covers(resource, "amqp://localhost:5672/hub"));
    }

    #[test]
    fn namespace_resource_covers_everything_on_host() {
        assert!(resource_covers(
            "https://ns.servicebus.windows.net/",
            "amqps://NS.servicebus.windows.net/any/Partitions/1"
        ));
        assert!(resource_covers(
            "ns.servicebus.windows.net",
            "sb://ns.servicebus.windows.net/hub"
        ));
        assert!(!resource_covers(
            "sb://other.servicebus.windows.net/",
            "sb://ns.servicebus.windows.net/hub"
        ));
        assert!(!resource_covers("", "sb://ns/hub"));
        assert!(!resource_covers("sb://ns/hub", "sb:///hub"));
    }

    #[test]
    fn resource_covers_ipv6_hosts() {
        assert!(resource_covers("sb://[::1]:5672/hub", "amqp://[::1]/hub/x"));
        assert!(!resource_covers("sb://[::1]/hub", "amqp://[::2]/hub"));
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(token in any::<String>(), now in any::<u64>()) {
            let _ = validate_sas_token(&token, &root_key(), now);
        }

        #[test]
        fn arbitrary_parameters_never_panic(params in "[a-z=&%+0-9A-F ]{0,64}") {
            let token = format!("SharedAccessSignature {params}");
            let _ = validate_sas_token(&token, &root_key(), 0);
        }

        #[test]
        fn encode_then_decode_round_trips(text in any::<String>()) {
            prop_assert_eq!(percent_decode(&percent_encode(&text)), Some(text));
        }

        #[test]
        fn generated_tokens_validate(
            resource in ".+",
            name in ".+",
            secret in any::<String>(),
            expiry in 1u64..,
        ) {
            let key = SasKey { name, key: secret };
            let token = generate_sas_token(&resource, &key, expiry);
            let validated = validate_sas_token(&token, std::slice::from_ref(&key), expiry - 1);
            prop_assert_eq!(validated.map(|v| v.resource), Ok(resource));
        }

        #[test]
        fn resource_covers_never_panics(resource in any::<String>(), audience in any::<String>()) {
            let _ = resource_covers(&resource, &audience);
        }
    }
}
