//! How failed operations are tried again: the public [`RetryOptions`] and the crate's
//! [`RetryPolicy`], which bounds every try by a timeout and waits between tries.
//!
//! # Delay between tries
//!
//! For retry number `n` (1 is the first retry, made after the first try failed) with a jitter
//! factor `j` drawn once per delay from `[0, 1)`:
//!
//! * `base` is `delay * 2^(n-1)` in [`RetryMode::Exponential`] (saturating) and `delay` in
//!   [`RetryMode::Fixed`], in both cases capped at `max_delay`;
//! * the pause is `min(base + base * j / 10, max_delay)`, i.e. up to 10 % of random jitter, never
//!   more than `max_delay`;
//! * when the failed try ended in [`ErrorKind::ServerBusy`], an extra `4 s + 4 s * j` is added,
//!   as the service asks busy clients to stay away for a few seconds, and the sum is capped at
//!   `max_delay` too: no pause is ever longer than the `max_delay` you set.
//!
//! Durations are computed in whole nanoseconds, jitter rounded to the nearest one.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// The largest [`RetryOptions::max_retries`] accepted.
const MAX_RETRIES_LIMIT: u32 = 100;
/// The largest [`RetryOptions::delay`] accepted.
const DELAY_LIMIT: Duration = Duration::from_secs(5 * 60);
/// The largest [`RetryOptions::max_delay`] and [`RetryOptions::try_timeout`] accepted.
const HOUR: Duration = Duration::from_secs(60 * 60);
/// The fixed part of the extra pause after a server-busy error.
const SERVER_BUSY_BASE: Duration = Duration::from_secs(4);
/// The most random jitter added to the extra pause after a server-busy error.
const SERVER_BUSY_JITTER: Duration = Duration::from_secs(4);

/// How the pause between tries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryMode {
    /// The pause doubles with every retry, from [`RetryOptions::delay`] up to
    /// [`RetryOptions::max_delay`]. The default.
    #[default]
    Exponential,
    /// Every pause is [`RetryOptions::delay`].
    Fixed,
}

/// How often and how patiently the client tries an operation that failed transiently
/// (see [`Error::is_transient`]). Errors that are not transient are never retried.
///
/// Bounds: an operation takes at most `(max_retries + 1) × try_timeout + max_retries ×
/// max_delay` before it fails for good. A server-busy answer pauses 4 to 8 s (the service asks
/// busy clients to stay away), never more than `max_delay`; so a partition whose sends keep
/// hearing server-busy is held at most that bound per batch (about 4 min 12 s with the
/// defaults in the worst case, 24 s of pauses when the service answers at once), then its
/// batch is reported failed and the next one starts over.
///
/// Start from [`RetryOptions::default`] and change fields with the `with_*` setters, then
/// check them with [`RetryOptions::validate`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryOptions {
    /// How the pause between tries grows. Default: [`RetryMode::Exponential`].
    pub mode: RetryMode,
    /// How many times a transiently failed operation is tried again, so at most
    /// `max_retries + 1` tries in all; 0 disables retries. At most 100. Default: 3.
    pub max_retries: u32,
    /// The pause before the first retry, and every pause in [`RetryMode::Fixed`]. More than zero
    /// and at most 5 minutes. Default: 800 ms.
    pub delay: Duration,
    /// The longest pause between tries, server-busy pauses included. At least
    /// `delay` and at most 1 hour. Default: 60 s.
    pub max_delay: Duration,
    /// How long a single try may take before it is abandoned as a (transient)
    /// [`ErrorKind::Timeout`]. More than zero and at most 1 hour. Default: 60 s.
    pub try_timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            mode: RetryMode::Exponential,
            max_retries: 3,
            delay: Duration::from_millis(800),
            max_delay: Duration::from_secs(60),
            try_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryOptions {
    /// Sets [`RetryOptions::mode`].
    pub fn with_mode(mut self, mode: RetryMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`RetryOptions::max_retries`].
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets [`RetryOptions::delay`].
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets [`RetryOptions::max_delay`].
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets [`RetryOptions::try_timeout`].
    pub fn with_try_timeout(mut self, try_timeout: Duration) -> Self {
        self.try_timeout = try_timeout;
        self
    }

    /// The longest an operation takes under these options before it fails for good:
    /// `(max_retries + 1) × try_timeout + max_retries × max_delay` (7 min with the defaults).
    pub fn bound(&self) -> Duration {
        let tries = self.max_retries.saturating_add(1);
        self.try_timeout
            .saturating_mul(tries)
            .saturating_add(self.max_delay.saturating_mul(self.max_retries))
    }

    /// Checks that every field is within its documented range.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidArgument`] error naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.max_retries > MAX_RETRIES_LIMIT {
            return Err(invalid(format!(
                "max_retries must be at most {MAX_RETRIES_LIMIT}, got {}",
                self.max_retries
            )));
        }
        if self.delay.is_zero() || self.delay > DELAY_LIMIT {
            return Err(invalid(format!(
                "delay must be more than zero and at most {DELAY_LIMIT:?}, got {:?}",
                self.delay
            )));
        }
        if self.max_delay > HOUR {
            return Err(invalid(format!(
                "max_delay must be at most {HOUR:?}, got {:?}",
                self.max_delay
            )));
        }
        if self.max_delay < self.delay {
            return Err(invalid(format!(
                "max_delay ({:?}) must not be less than delay ({:?})",
                self.max_delay, self.delay
            )));
        }
        if self.try_timeout.is_zero() || self.try_timeout > HOUR {
            return Err(invalid(format!(
                "try_timeout must be more than zero and at most {HOUR:?}, got {:?}",
                self.try_timeout
            )));
        }
        Ok(())
    }
}

fn invalid(message: String) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("retry options: {message}"),
    )
}

/// A source of jitter factors in `[0, 1)`.
pub(crate) type Jitter = fn() -> f64;

fn random_jitter() -> f64 {
    rand::random::<f64>()
}

/// Runs operations under [`RetryOptions`]: each try bounded by the try timeout, transient
/// failures tried again after the pause described in the module documentation.
// The connection layer and the producer, which use this, land separately.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    options: RetryOptions,
    jitter: Jitter,
}

impl RetryPolicy {
    /// A policy for `options`, with random jitter. The options are taken as given; call
    /// [`RetryOptions::validate`] first where they come from a user.
    pub(crate) fn new(options: RetryOptions) -> Self {
        Self {
            options,
            jitter: random_jitter,
        }
    }

    /// Replaces the jitter source, e.g. with a constant so that pauses are predictable in tests.
    #[cfg(test)]
    /// Factors outside `[0, 1]` are clamped into it; NaN counts as 0.
    pub(crate) fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The options this policy follows.
    pub(crate) fn options(&self) -> &RetryOptions {
        &self.options
    }

    /// The pause before retry number `attempt` (1 for the first retry; 0 is taken as 1) after a
    /// try failed with `error`. See the module documentation for the formula.
    pub(crate) fn delay_for(&self, attempt: u32, error: &Error) -> Duration {
        let factor = self.jitter_factor();
        let RetryOptions {
            mode,
            delay,
            max_delay,
            ..
        } = self.options;
        let base = match mode {
            RetryMode::Exponential => 1u32
                .checked_shl(attempt.max(1) - 1)
                .and_then(|multiplier| delay.checked_mul(multiplier))
                .unwrap_or(Duration::MAX),
            RetryMode::Fixed => delay,
        }
        .min(max_delay);
        let mut pause = base
            .saturating_add(scale(base, factor / 10.0))
            .min(max_delay);
        if error.kind() == ErrorKind::ServerBusy {
            pause = pause
                .saturating_add(SERVER_BUSY_BASE)
                .saturating_add(scale(SERVER_BUSY_JITTER, factor))
                .min(max_delay);
        }
        pause
    }

    /// Runs `attempt` (called with the try number, from 1) until it succeeds, fails with an
    /// error that is not transient, or has been tried `max_retries + 1` times.
    ///
    /// Each try that takes longer than `try_timeout` is dropped and counts as a transient
    /// [`ErrorKind::Timeout`] naming `operation`. Every retry is logged as a warning.
    ///
    /// # Errors
    ///
    /// The error of the last try, unchanged (kind, condition and source kept).
    pub(crate) async fn run<T, F, Fut>(&self, operation: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let try_timeout = self.options.try_timeout;
        let mut try_number: u32 = 1;
        loop {
            let error = match tokio::time::timeout(try_timeout, attempt(try_number)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_elapsed) => Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{operation}: try {try_number} did not complete within {try_timeout:?}"
                    ),
                ),
            };
            if !error.is_transient() || try_number > self.options.max_retries {
                return Err(error);
            }
            let delay = self.delay_for(try_number, &error);
            crate::telemetry::retrying(try_number, &error);
            tracing::warn!(
                operation,
                try_number,
                ?delay,
                error = %error,
                "try failed transiently; retrying"
            );
            tokio::time::sleep(delay).await;
            try_number = try_number.saturating_add(1);
        }
    }

    /// One factor from the jitter source, forced into `[0, 1]`.
    fn jitter_factor(&self) -> f64 {
        let factor = (self.jitter)();
        if factor.is_nan() {
            0.0
        } else {
            factor.clamp(0.0, 1.0)
        }
    }
}

/// `duration * factor` for `factor` in `[0, 1]`, rounded to the nearest nanosecond.
fn scale(duration: Duration, factor: f64) -> Duration {
    // `as` saturates, so even a duration beyond u64 nanoseconds cannot panic here.
    let nanos = (duration.as_nanos() as f64 * factor).round() as u64;
    Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn zero() -> f64 {
        0.0
    }

    fn half() -> f64 {
        0.5
    }

    fn policy(options: RetryOptions, jitter: Jitter) -> RetryPolicy {
        RetryPolicy::new(options).with_jitter(jitter)
    }

    fn transient() -> Error {
        Error::new(ErrorKind::ConnectionLost, "connection reset")
    }

    fn busy() -> Error {
        Error::from_condition("com.microsoft:server-busy", Some("slow down"))
    }

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let options = RetryOptions::default();
        assert_eq!(options.mode, RetryMode::Exponential);
        assert_eq!(RetryMode::default(), RetryMode::Exponential);
        assert_eq!(options.max_retries, 3);
        assert_eq!(options.delay, 800 * MS);
        assert_eq!(options.max_delay, Duration::from_secs(60));
        assert_eq!(options.try_timeout, Duration::from_secs(60));
        assert_eq!(options.bound(), Duration::from_secs(7 * 60));
        assert!(options.validate().is_ok());
    }

    #[test]
    fn setters_set_each_field() {
        let options = RetryOptions::default()
            .with_mode(RetryMode::Fixed)
            .with_max_retries(7)
            .with_delay(2 * MS)
            .with_max_delay(3 * MS)
            .with_try_timeout(4 * MS);
        assert_eq!(options.mode, RetryMode::Fixed);
        assert_eq!(options.max_retries, 7);
        assert_eq!(options.delay, 2 * MS);
        assert_eq!(options.max_delay, 3 * MS);
        assert_eq!(options.try_timeout, 4 * MS);
        assert!(options.validate().is_ok());
        assert_eq!(RetryPolicy::new(options.clone()).options(), &options);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let d = RetryOptions::default;
        let cases = [
            (d().with_max_retries(101), "max_retries"),
            (d().with_delay(Duration::ZERO), "delay"),
            (
                d().with_delay(DELAY_LIMIT + MS).with_max_delay(HOUR),
                "delay",
            ),
            (d().with_max_delay(HOUR + MS), "max_delay"),
            (
                d().with_delay(Duration::from_secs(2))
                    .with_max_delay(Duration::from_secs(1)),
                "max_delay",
            ),
            (d().with_try_timeout(Duration::ZERO), "try_timeout"),
            (d().with_try_timeout(HOUR + MS), "try_timeout"),
        ];
        for (options, field) in cases {
            let error = options.validate().expect_err(field);
            assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{field}");
            assert!(
                error
                    .message()
                    .starts_with(&format!("retry options: {field} ")),
                "{field}: {error}"
            );
        }
    }

    #[test]
    fn validate_accepts_the_limits() {
        let options = RetryOptions::default()
            .with_max_retries(0)
            .with_delay(DELAY_LIMIT)
            .with_max_delay(DELAY_LIMIT)
            .with_try_timeout(HOUR);
        assert!(options.validate().is_ok());
        let options = RetryOptions::default()
            .with_max_retries(100)
            .with_delay(Duration::from_nanos(1))
            .with_max_delay(HOUR)
            .with_try_timeout(MS);
        assert!(options.validate().is_ok());
    }

    #[test]
    fn exponential_doubles_then_caps_at_max_delay() {
        let options = RetryOptions::default()
            .with_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(5));
        let p = policy(options.clone(), zero);
        let secs: Vec<Duration> = (1..=5).map(|n| p.delay_for(n, &transient())).collect();
        assert_eq!(
            secs,
            [1, 2, 4, 5, 5].map(Duration::from_secs).to_vec(),
            "no jitter"
        );
        assert_eq!(p.delay_for(0, &transient()), Duration::from_secs(1));
        assert_eq!(p.delay_for(u32::MAX, &transient()), Duration::from_secs(5));

        let p = policy(options, half);
        assert_eq!(p.delay_for(1, &transient()), 1050 * MS);
        assert_eq!(p.delay_for(2, &transient()), 2100 * MS);
        // 4 s + 5 % would be 4.2 s, under the cap; 8 s + 5 % is capped.
        assert_eq!(p.delay_for(3, &transient()), 4200 * MS);
        assert_eq!(p.delay_for(4, &transient()), Duration::from_secs(5));
        assert_eq!(p.delay_for(40, &transient()), Duration::from_secs(5));
    }

    #[test]
    fn fixed_mode_is_constant() {
        let options = RetryOptions::default().with_mode(RetryMode::Fixed);
        let p = policy(options.clone(), zero);
        for n in [1, 2, 3, 50, u32::MAX] {
            assert_eq!(p.delay_for(n, &transient()), 800 * MS);
        }
        let p = policy(options, half);
        for n in [1, 2, 3, 50] {
            assert_eq!(p.delay_for(n, &transient()), 840 * MS);
        }
    }

    #[test]
    fn server_busy_adds_an_extra_pause_within_max_delay() {
        let p = policy(RetryOptions::default(), zero);
        assert_eq!(p.delay_for(1, &busy()), 4800 * MS);
        let p = policy(RetryOptions::default(), half);
        assert_eq!(p.delay_for(1, &busy()), 840 * MS + Duration::from_secs(6));
        assert_eq!(
            p.delay_for(30, &busy()),
            Duration::from_secs(60),
            "never above max_delay"
        );
        let short = RetryOptions::default()
            .with_delay(10 * MS)
            .with_max_delay(50 * MS);
        assert_eq!(
            policy(short, half).delay_for(1, &busy()),
            50 * MS,
            "a short max_delay bounds server-busy pauses too"
        );
    }

    #[test]
    fn odd_jitter_is_clamped_and_never_panics() {
        fn nan() -> f64 {
            f64::NAN
        }
        fn big() -> f64 {
            7.0
        }
        fn negative() -> f64 {
            -3.0
        }
        let options = RetryOptions::default();
        assert_eq!(
            policy(options.clone(), nan).delay_for(1, &transient()),
            800 * MS
        );
        assert_eq!(
            policy(options.clone(), negative).delay_for(1, &transient()),
            800 * MS
        );
        assert_eq!(
            policy(options.clone(), big).delay_for(1, &transient()),
            880 * MS
        );
        assert_eq!(
            policy(options, big).delay_for(1, &busy()),
            880 * MS + Duration::from_secs(8)
        );
        // Unvalidated extremes saturate instead of overflowing.
        let huge = RetryOptions::default()
            .with_delay(Duration::MAX)
            .with_max_delay(Duration::MAX);
        assert_eq!(
            policy(huge.clone(), big).delay_for(u32::MAX, &busy()),
            Duration::MAX
        );
        assert_eq!(
            RetryPolicy::new(huge).delay_for(3, &transient()),
            Duration::MAX
        );
    }

    #[test]
    fn random_jitter_stays_within_ten_percent() {
        let p = RetryPolicy::new(RetryOptions::default());
        for n in 1..=4 {
            let base = 800 * MS * (1 << (n - 1));
            for _ in 0..100 {
                let pause = p.delay_for(n, &transient());
                assert!(pause >= base && pause <= base + base / 10, "{pause:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn success_on_the_first_try_does_not_wait() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let result = policy(RetryOptions::default(), zero)
            .run("send", |n| {
                calls.set(calls.get() + 1);
                async move { Ok::<_, Error>(n) }
            })
            .await;
        assert_eq!(result.ok(), Some(1));
        assert_eq!(calls.get(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_twice_then_success() {
        let tries = std::cell::RefCell::new(Vec::new());
        let start = Instant::now();
        let result = policy(RetryOptions::default(), zero)
            .run("send", |n| {
                tries.borrow_mut().push(n);
                async move {
                    if n < 3 {
                        Err(transient())
                    } else {
                        Ok("sent")
                    }
                }
            })
            .await;
        assert_eq!(result.ok(), Some("sent"));
        assert_eq!(*tries.borrow(), [1, 2, 3]);
        assert_eq!(start.elapsed(), 800 * MS + 1600 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_twice_then_success_with_jitter() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let result = policy(RetryOptions::default(), half)
            .run("send", |n| {
                calls.set(calls.get() + 1);
                async move {
                    if n < 3 {
                        Err(transient())
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(calls.get(), 3);
        assert_eq!(start.elapsed(), 840 * MS + 1680 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn non_transient_error_is_returned_at_once() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let result: Result<()> = policy(RetryOptions::default(), zero)
            .run("send", |_| {
                calls.set(calls.get() + 1);
                async { Err(Error::from_condition("amqp:unauthorized-access", None)) }
            })
            .await;
        let error = result.expect_err("unauthorized");
        assert_eq!(error.kind(), ErrorKind::Unauthorized);
        assert_eq!(error.condition(), Some("amqp:unauthorized-access"));
        assert_eq!(calls.get(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn always_transient_makes_max_retries_plus_one_tries() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let result: Result<()> = policy(RetryOptions::default(), zero)
            .run("send", |n| {
                calls.set(calls.get() + 1);
                async move {
                    // The last try fails differently, to show which error comes back.
                    if n < 4 {
                        Err(transient())
                    } else {
                        Err(Error::from_condition(
                            "amqp:link:detach-forced",
                            Some("last"),
                        ))
                    }
                }
            })
            .await;
        let error = result.expect_err("exhausted");
        assert_eq!(calls.get(), 4);
        assert_eq!(error.kind(), ErrorKind::LinkDetached);
        assert_eq!(error.message(), "last");
        assert_eq!(start.elapsed(), (800 + 1600 + 3200) * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn max_retries_zero_tries_once() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let result: Result<()> = policy(RetryOptions::default().with_max_retries(0), zero)
            .run("send", |_| {
                calls.set(calls.get() + 1);
                async { Err(transient()) }
            })
            .await;
        assert_eq!(
            result.expect_err("one try").kind(),
            ErrorKind::ConnectionLost
        );
        assert_eq!(calls.get(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn server_busy_waits_the_extra_pause() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let result = policy(RetryOptions::default(), half)
            .run("send", |n| {
                calls.set(calls.get() + 1);
                async move {
                    if n == 1 {
                        Err(busy())
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(calls.get(), 2);
        assert_eq!(start.elapsed(), 840 * MS + Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_try_times_out_and_is_retried() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let options = RetryOptions::default().with_try_timeout(Duration::from_secs(2));
        let result = policy(options, zero)
            .run("send", |n| {
                calls.set(calls.get() + 1);
                async move {
                    if n == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok(n)
                }
            })
            .await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(calls.get(), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(2) + 800 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn always_hanging_ends_in_a_timeout_naming_the_operation() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let options = RetryOptions::default()
            .with_mode(RetryMode::Fixed)
            .with_max_retries(2)
            .with_try_timeout(Duration::from_secs(1));
        let result: Result<()> = policy(options, zero)
            .run("get partition properties", |_| {
                calls.set(calls.get() + 1);
                std::future::pending()
            })
            .await;
        let error = result.expect_err("timed out");
        assert_eq!(error.kind(), ErrorKind::Timeout);
        assert!(error.is_transient());
        assert_eq!(
            error.message(),
            "get partition properties: try 3 did not complete within 1s"
        );
        assert_eq!(calls.get(), 3);
        assert_eq!(start.elapsed(), Duration::from_secs(3) + 2 * 800 * MS);
    }
}
