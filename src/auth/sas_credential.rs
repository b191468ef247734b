//! A shared access signature the application can replace while the client runs (as Azure's
//! `AzureSasCredential`): each token put on the connection, first or renewed, is the one the
//! credential holds at that moment.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::sas::SharedAccessSignature;
use crate::error::Result;

/// A shared access signature that can be updated before it expires. Clones share the token:
/// update one and every client made with it uses the new token from its next renewal, which
/// comes before the old token expires (at the latest when half its remaining time is left).
///
/// `Debug` shows the expiry, never the token.
///
/// ```no_run
/// # async fn demo(first_token: &str, fetch_new_token: impl Fn() -> String) -> eventhubs_buffered::Result<()> {
/// use eventhubs_buffered::auth::SasCredential;
/// use eventhubs_buffered::BufferedProducerClient;
///
/// let credential = SasCredential::new(first_token)?;
/// let producer = BufferedProducerClient::with_sas_credential(
///     "my-namespace.servicebus.windows.net",
///     "telemetry",
///     credential.clone(),
/// )
/// .on_send_failed(|context| async move { eprintln!("not published: {}", context.error) })
/// .build()?;
/// // Later, before the first token expires:
/// credential.update(&fetch_new_token())?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SasCredential {
    current: Arc<RwLock<SharedAccessSignature>>,
}

impl SasCredential {
    /// A credential holding `token` (`SharedAccessSignature sr=…&sig=…&se=…`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming what is wrong
    /// with the token (never its value), as [`SharedAccessSignature::parse`] says.
    pub fn new(token: &str) -> Result<Self> {
        Ok(Self::from_signature(SharedAccessSignature::parse(token)?))
    }

    /// A credential holding an already parsed signature.
    pub fn from_signature(signature: SharedAccessSignature) -> Self {
        Self {
            current: Arc::new(RwLock::new(signature)),
        }
    }

    /// Replaces the token; the clients using this credential put it on their connection at
    /// their next renewal (and for every link attached from now on).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); the credential keeps its token then.
    pub fn update(&self, token: &str) -> Result<()> {
        let signature = SharedAccessSignature::parse(token)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = signature;
        Ok(())
    }

    /// The signature held now.
    pub fn signature(&self) -> SharedAccessSignature {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When the token held now expires, in Unix seconds.
    pub fn expires_at_unix(&self) -> u64 {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .expires_at_unix()
    }
}

impl fmt::Debug for SasCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasCredential")
            .field("expires_at_unix", &self.expires_at_unix())
            .finish_non_exhaustive()
    }
}

/// `2026-12-02 19:50:07 UTC` for a time in Unix seconds (the proleptic Gregorian calendar).
pub(crate) fn utc_text(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let seconds_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    )
}

/// The (year, month, day) of the day `days` after 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Count in 400-year eras starting on 0000-03-01, so that the leap day ends each year.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str =
        "SharedAccessSignature sr=amqps%3A%2F%2Fns%2Fhub&sig=c2lnbmF0dXJl&se=1700000000&skn=send";

    #[test]
    fn dates_are_written_in_utc() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(utc_text(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn clones_share_updates_and_a_bad_update_keeps_the_token() {
        let credential = SasCredential::new(TOKEN).unwrap();
        let clone = credential.clone();
        clone
            .update(&TOKEN.replace("1700000000", "1800000000"))
            .unwrap();
        assert_eq!(credential.expires_at_unix(), 1_800_000_000);
        let refused = credential
            .update("SharedAccessSignature sig=x")
            .unwrap_err();
        assert_eq!(refused.kind(), crate::ErrorKind::InvalidArgument);
        assert_eq!(clone.expires_at_unix(), 1_800_000_000);
        assert!(!format!("{credential:?}").contains("c2lnbmF0dXJl"));
    }
}
