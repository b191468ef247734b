//! Credentials and the tokens they produce for `$cbs` put-token.

pub mod sas;
mod sas_credential;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;

use crate::error::{Error, ErrorKind, Result};
pub use sas::{SharedAccessKey, SharedAccessSignature};
pub use sas_credential::SasCredential;

/// The scope Event Hubs tokens are requested for.
pub const EVENTHUBS_SCOPE: &str = "https://eventhubs.azure.net/.default";

/// How a token is presented to `$cbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    SharedAccessSignature,
    Jwt,
}

/// A token for one audience. Its value is a secret: Debug does not show it.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub token_type: TokenType,
    pub expires_at: SystemTime,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where tokens come from.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A shared access key: tokens are signed here, for any audience, as needed.
    Key(SharedAccessKey),
    /// A ready-made shared access signature, which the application may replace: the one held
    /// at each put-token is used, until it expires.
    Signature(SasCredential),
    /// An Entra ID credential (azure_identity or any `TokenCredential`).
    Identity(Arc<dyn TokenCredential>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => f.debug_tuple("Key").field(key).finish(),
            Self::Signature(sas) => f.debug_tuple("Signature").field(sas).finish(),
            Self::Identity(_) => f.write_str("Identity(..)"),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Credential {
    /// Why the service refuses this credential's tokens, when it is a shared access signature
    /// that expired: said in the words of [`Credential::token`] (the service only says the
    /// link's token expired).
    pub(crate) fn expired(&self) -> Option<Error> {
        match self {
            Self::Signature(credential) => {
                let expires_at = credential.expires_at_unix();
                (expires_at <= unix_now()).then(|| expired_signature(expires_at))
            }
            Self::Key(_) | Self::Identity(_) => None,
        }
    }

    /// A token for `audience`, valid for about `validity` when this side signs it.
    pub(crate) async fn token(&self, audience: &str, validity: Duration) -> Result<Token> {
        match self {
            Self::Key(key) => {
                let expires = unix_now() + validity.as_secs().max(1);
                Ok(Token {
                    value: sas::generate_sas_token(audience, key, expires),
                    token_type: TokenType::SharedAccessSignature,
                    expires_at: UNIX_EPOCH + Duration::from_secs(expires),
                })
            }
            Self::Signature(credential) => {
                let signature = credential.signature();
                if signature.expires_at_unix() <= unix_now() {
                    return Err(expired_signature(signature.expires_at_unix()));
                }
                Ok(Token {
                    value: signature.token().to_string(),
                    token_type: TokenType::SharedAccessSignature,
                    expires_at: UNIX_EPOCH + Duration::from_secs(signature.expires_at_unix()),
                })
            }
            Self::Identity(credential) => {
                let token = credential
                    .get_token(&[EVENTHUBS_SCOPE], None)
                    .await
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::Credential,
                            format!("the credential gave no token: {e}"),
                        )
                    })?;
                let expires = token.expires_on.unix_timestamp().max(0) as u64;
                Ok(Token {
                    value: token.token.secret().to_string(),
                    token_type: TokenType::Jwt,
                    expires_at: UNIX_EPOCH + Duration::from_secs(expires),
                })
            }
        }
    }
}

/// The error of a shared access signature that expired at `expires_at_unix`.
fn expired_signature(expires_at_unix: u64) -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        format!(
            "the shared access signature expired at {}; give the client a new one (SasCredential::update) before the old one expires",
            sas_credential::utc_text(expires_at_unix)
        ),
    )
}

/// How long before a token's expiry it is renewed: a tenth of its lifetime, but at least half
/// of it or five minutes, whichever is less. A one-hour token is renewed after 54 minutes.
pub(crate) fn renewal_delay(now: SystemTime, expires_at: SystemTime) -> Duration {
    let lifetime = expires_at.duration_since(now).unwrap_or_default();
    let margin = (lifetime / 10).max((lifetime / 2).min(Duration::from_secs(300)));
    lifetime.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_before_expiry() {
        let now = SystemTime::now();
        assert_eq!(
            renewal_delay(now, now + Duration::from_secs(3600)),
            Duration::from_secs(3240)
        );
        assert_eq!(
            renewal_delay(now, now + Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(
            renewal_delay(now, now - Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn key_tokens_are_signed_for_the_audience_and_redacted() {
        let key = SharedAccessKey::new("name", "secret-key").unwrap();
        let credential = Credential::Key(key);
        let token = credential
            .token("amqps://ns/hub", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(token.value.starts_with("SharedAccessSignature sr="));
        assert_eq!(token.token_type, TokenType::SharedAccessSignature);
        assert!(!format!("{token:?}").contains("sig="));
        assert!(!format!("{credential:?}").contains("secret-key"));
    }
}
