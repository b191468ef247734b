//! Fault injection: the rules that change how deliveries, tokens and connections are answered.
//!
//! The rules live here; the links and connections consult them. A single flag keeps the
//! delivery hot path to one atomic load while no rule is set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// An error condition the emulator can answer with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultCondition {
    /// `com.microsoft:server-busy`
    ServerBusy,
    /// `amqp:resource-limit-exceeded`
    ResourceLimitExceeded,
    /// `com.microsoft:timeout`
    Timeout,
    /// `amqp:internal-error`
    InternalError,
    /// `amqp:unauthorized-access`
    Unauthorized,
    /// `amqp:not-found`
    NotFound,
    /// `amqp:link:detach-forced`
    DetachForced,
    /// `amqp:connection:forced`
    ConnectionForced,
    /// `amqp:link:message-size-exceeded`
    MessageSizeExceeded,
    /// `com.microsoft:argument-error`
    ArgumentError,
    /// Any other condition, by its symbol.
    Other(String),
}

impl FaultCondition {
    /// The AMQP symbol of the condition.
    pub fn symbol(&self) -> &str {
        match self {
            Self::ServerBusy => "com.microsoft:server-busy",
            Self::ResourceLimitExceeded => "amqp:resource-limit-exceeded",
            Self::Timeout => "com.microsoft:timeout",
            Self::InternalError => "amqp:internal-error",
            Self::Unauthorized => "amqp:unauthorized-access",
            Self::NotFound => "amqp:not-found",
            Self::DetachForced => "amqp:link:detach-forced",
            Self::ConnectionForced => "amqp:connection:forced",
            Self::MessageSizeExceeded => "amqp:link:message-size-exceeded",
            Self::ArgumentError => "com.microsoft:argument-error",
            Self::Other(symbol) => symbol,
        }
    }

    /// Parses a symbol or one of the short names used on the command line
    /// (`server-busy`, `timeout`, `internal-error`, `resource-limit-exceeded`, ...).
    pub fn parse(text: &str) -> Self {
        match text {
            "server-busy" | "com.microsoft:server-busy" => Self::ServerBusy,
            "resource-limit-exceeded" | "amqp:resource-limit-exceeded" => {
                Self::ResourceLimitExceeded
            }
            "timeout" | "com.microsoft:timeout" => Self::Timeout,
            "internal-error" | "amqp:internal-error" => Self::InternalError,
            "unauthorized" | "amqp:unauthorized-access" => Self::Unauthorized,
            "not-found" | "amqp:not-found" => Self::NotFound,
            "detach-forced" | "amqp:link:detach-forced" => Self::DetachForced,
            "connection-forced" | "amqp:connection:forced" => Self::ConnectionForced,
            "message-size-exceeded" | "amqp:link:message-size-exceeded" => {
                Self::MessageSizeExceeded
            }
            "argument-error" | "com.microsoft:argument-error" => Self::ArgumentError,
            other => Self::Other(other.to_string()),
        }
    }
}

/// Which deliveries a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultScope {
    /// Every delivery to any hub or partition.
    Any,
    /// Deliveries stored in one partition of one hub.
    Partition {
        /// The event hub.
        hub: String,
        /// The partition id.
        partition: String,
    },
}

impl FaultScope {
    /// Deliveries to one partition.
    pub fn partition(hub: impl Into<String>, partition: impl Into<String>) -> Self {
        Self::Partition {
            hub: hub.into(),
            partition: partition.into(),
        }
    }

    fn matches(&self, hub: &str, partition: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Partition {
                hub: h,
                partition: p,
            } => h.eq_ignore_ascii_case(hub) && p == partition,
        }
    }
}

#[derive(Debug)]
struct Rule<T> {
    scope: FaultScope,
    remaining: u64,
    what: T,
}

#[derive(Debug, Default)]
struct Rules {
    rejections: Vec<Rule<FaultCondition>>,
    withheld: Vec<Rule<()>>,
    disposition_delay: Duration,
    tokens_rejected_until: Option<Instant>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.rejections.is_empty()
            && self.withheld.is_empty()
            && self.disposition_delay.is_zero()
            && self.tokens_rejected_until.is_none()
    }
}

/// What a delivery gets instead of a prompt `accepted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryFault {
    /// Nothing: store and accept at once.
    None,
    /// Reject without storing.
    Reject(FaultCondition),
    /// Store, then accept after the delay.
    Delay(Duration),
    /// Store and never answer (a lost acknowledgement).
    Withhold,
}

/// The rules in force, shared by every connection of an emulator.
#[derive(Debug, Default)]
pub(crate) struct FaultRules {
    active: AtomicBool,
    rules: Mutex<Rules>,
    max_message_size: AtomicU64,
}

impl FaultRules {
    pub(crate) fn new(max_message_size: u64) -> Self {
        Self {
            max_message_size: AtomicU64::new(max_message_size),
            ..Default::default()
        }
    }

    fn update(&self, change: impl FnOnce(&mut Rules)) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut rules);
        self.active.store(!rules.is_empty(), Ordering::SeqCst);
    }

    pub(crate) fn reject_next(&self, count: u64, condition: FaultCondition, scope: FaultScope) {
        self.update(|r| {
            r.rejections.push(Rule {
                scope,
                remaining: count,
                what: condition,
            })
        });
    }

    pub(crate) fn withhold_next(&self, count: u64, scope: FaultScope) {
        self.update(|r| {
            r.withheld.push(Rule {
                scope,
                remaining: count,
                what: (),
            })
        });
    }

    pub(crate) fn delay_dispositions(&self, delay: Duration) {
        self.update(|r| r.disposition_delay = delay);
    }

    pub(crate) fn reject_tokens_for(&self, period: Duration) {
        self.update(|r| {
            r.tokens_rejected_until = (!period.is_zero()).then(|| Instant::now() + period);
        });
    }

    pub(crate) fn clear(&self) {
        self.update(|r| *r = Rules::default());
    }

    pub(crate) fn set_max_message_size(&self, size: u64) {
        self.max_message_size.store(size, Ordering::SeqCst);
    }

    pub(crate) fn max_message_size(&self) -> u64 {
        self.max_message_size.load(Ordering::SeqCst)
    }

    pub(crate) fn tokens_rejected(&self) -> bool {
        if !self.active.load(Ordering::SeqCst) {
            return false;
        }
        let mut rejected = false;
        self.update(|r| match r.tokens_rejected_until {
            Some(until) if Instant::now() < until => rejected = true,
            Some(_) => r.tokens_rejected_until = None,
            None => {}
        });
        rejected
    }

    /// Decides the fate of one delivery to `hub`/`partition`, using up one count of the first
    /// matching rule.
    pub(crate) fn on_delivery(&self, hub: &str, partition: &str) -> DeliveryFault {
        if !self.active.load(Ordering::SeqCst) {
            return DeliveryFault::None;
        }
        let mut fault = DeliveryFault::None;
        self.update(|r| {
            if let Some(condition) = take_one(&mut r.rejections, hub, partition) {
                fault = DeliveryFault::Reject(condition);
            } else if take_one(&mut r.withheld, hub, partition).is_some() {
                fault = DeliveryFault::Withhold;
            } else if !r.disposition_delay.is_zero() {
                fault = DeliveryFault::Delay(r.disposition_delay);
            }
        });
        fault
    }
}

/// Uses one count of the first rule matching the delivery; drops rules that are used up.
fn take_one<T: Clone>(rules: &mut Vec<Rule<T>>, hub: &str, partition: &str) -> Option<T> {
    let index = rules.iter().position(|r| r.scope.matches(hub, partition))?;
    let rule = rules.get_mut(index)?;
    rule.remaining = rule.remaining.saturating_sub(1);
    let what = rule.what.clone();
    if rule.remaining == 0 {
        rules.remove(index);
    }
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_and_scoped() {
        let rules = FaultRules::new(1024);
        assert_eq!(rules.on_delivery("hub", "0"), DeliveryFault::None);
        rules.reject_next(
            2,
            FaultCondition::ServerBusy,
            FaultScope::partition("hub", "1"),
        );
        assert_eq!(rules.on_delivery("hub", "0"), DeliveryFault::None);
        assert_eq!(
            rules.on_delivery("hub", "1"),
            DeliveryFault::Reject(FaultCondition::ServerBusy)
        );
        assert_eq!(
            rules.on_delivery("HUB", "1"),
            DeliveryFault::Reject(FaultCondition::ServerBusy)
        );
        assert_eq!(rules.on_delivery("hub", "1"), DeliveryFault::None);
        assert!(!rules.active.load(Ordering::SeqCst));
    }

    #[test]
    fn withheld_then_delayed() {
        let rules = FaultRules::new(1024);
        rules.withhold_next(1, FaultScope::Any);
        rules.delay_dispositions(Duration::from_millis(5));
        assert_eq!(rules.on_delivery("h", "0"), DeliveryFault::Withhold);
        assert_eq!(
            rules.on_delivery("h", "0"),
            DeliveryFault::Delay(Duration::from_millis(5))
        );
        rules.clear();
        assert_eq!(rules.on_delivery("h", "0"), DeliveryFault::None);
    }

    #[tokio::test(start_paused = true)]
    async fn token_rejection_ends_after_its_period() {
        let rules = FaultRules::new(1024);
        rules.reject_tokens_for(Duration::from_secs(2));
        assert!(rules.tokens_rejected());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!rules.tokens_rejected());
    }

    #[test]
    fn condition_names_round_trip() {
        for c in [
            FaultCondition::ServerBusy,
            FaultCondition::Timeout,
            FaultCondition::InternalError,
            FaultCondition::ResourceLimitExceeded,
        ] {
            assert_eq!(FaultCondition::parse(c.symbol()), c);
        }
        assert_eq!(
            FaultCondition::parse("server-busy"),
            FaultCondition::ServerBusy
        );
        assert_eq!(FaultCondition::parse("x:y").symbol(), "x:y");
    }
}
