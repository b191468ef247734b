//! Consumer start-position filters.
//!
//! Event Hubs receivers say where to start reading by attaching a selector
//! filter such as `amqp.annotation.x-opt-offset > '-1'` to the link source.
//! Only the tiny subset of the selector grammar that clients actually emit
//! is understood: one annotation name, `>` or `>=`, and a value.

use thiserror::Error;

/// Where a consumer asked to start reading a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// From the oldest retained event (offset filter with value `-1`).
    Earliest,
    /// Only events enqueued after the link attaches (`@latest`).
    Latest,
    /// Relative to a stored offset.
    Offset {
        /// The offset named in the filter.
        offset: i64,
        /// Whether the event at `offset` itself is included (`>=`).
        inclusive: bool,
    },
    /// Relative to a sequence number.
    SequenceNumber {
        /// The sequence number named in the filter.
        sequence_number: i64,
        /// Whether the event with this sequence number is included (`>=`).
        inclusive: bool,
    },
    /// Relative to an enqueue time.
    EnqueuedTime {
        /// Enqueue time in milliseconds since the Unix epoch.
        unix_millis: i64,
        /// Whether events enqueued exactly at this instant are included.
        inclusive: bool,
    },
}

/// Why a start-position filter expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    /// The expression was empty or only whitespace.
    #[error("filter expression is empty")]
    Empty,
    /// The expression does not start with a supported annotation name.
    #[error("filter must start with x-opt-offset, x-opt-sequence-number or x-opt-enqueued-time")]
    UnknownProperty,
    /// The annotation name is not followed by `>` or `>=`.
    #[error("filter operator must be '>' or '>='")]
    UnsupportedOperator,
    /// The value is missing, badly quoted or not an integer.
    #[error("filter value {value:?} for {property} is not valid")]
    InvalidValue {
        /// Which annotation the value was given for.
        property: &'static str,
        /// The offending value text, without quotes.
        value: String,
    },
}

const OFFSET: &str = "amqp.annotation.x-opt-offset";
const SEQUENCE_NUMBER: &str = "amqp.annotation.x-opt-sequence-number";
const ENQUEUED_TIME: &str = "amqp.annotation.x-opt-enqueued-time";

/// Offset value clients send to mean "from the beginning".
const EARLIEST_OFFSET: &str = "-1";
/// Offset value clients send to mean "only new events".
const LATEST_OFFSET: &str = "@latest";

/// Parses a consumer's selector filter into a [`StartPosition`].
///
/// Annotation names and `@latest` match case-insensitively; values may be
/// single-quoted or bare, and whitespace around the operator is optional.
///
/// # Errors
///
/// Returns a [`FilterError`] naming the part that is empty, unknown or
/// not a valid integer.
pub fn parse_start_position(expr: &str) -> Result<StartPosition, FilterError> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err(FilterError::Empty);
    }
    let (property, rest) = split_property(expr).ok_or(FilterError::UnknownProperty)?;
    let (inclusive, rest) = split_operator(rest).ok_or(FilterError::UnsupportedOperator)?;
    let value = unquote(rest.trim()).ok_or_else(|| invalid(property, rest.trim()))?;
    position_for(property, value, inclusive)
}

/// Splits off a known annotation name, returning its canonical spelling and
/// the remaining text.
fn split_property(expr: &str) -> Option<(&'static str, &str)> {
    [OFFSET, SEQUENCE_NUMBER, ENQUEUED_TIME]
        .into_iter()
        .find_map(|name| {
            // `get` returns None on a non-char boundary, so odd UTF-8 input
            // simply fails to match instead of panicking.
            let head = expr.get(..name.len())?;
            let tail = expr.get(name.len()..)?;
            head.eq_ignore_ascii_case(name).then_some((name, tail))
        })
}

/// Parses `>` or `>=` after optional whitespace; returns whether the
/// comparison is inclusive and the text after the operator.
fn split_operator(rest: &str) -> Option<(bool, &str)> {
    let after_gt = rest.trim_start().strip_prefix('>')?;
    match after_gt.strip_prefix('=') {
        Some(after_ge) => Some((true, after_ge)),
        None => Some((false, after_gt)),
    }
}

/// Removes one pair of surrounding single quotes, if present. A lone or
/// unbalanced quote is an error, as is an empty value.
fn unquote(value: &str) -> Option<&str> {
    let inner = match value.strip_prefix('\'') {
        Some(quoted) => quoted.strip_suffix('\'')?,
        None if value.ends_with('\'') => return None,
        None => value,
    };
    (!inner.is_empty()).then_some(inner)
}

/// Builds the start position for an already split expression.
fn position_for(
    property: &'static str,
    value: &str,
    inclusive: bool,
) -> Result<StartPosition, FilterError> {
    let number = || parse_integer(property, value);
    match property {
        OFFSET if value == EARLIEST_OFFSET => Ok(StartPosition::Earliest),
        OFFSET if value.eq_ignore_ascii_case(LATEST_OFFSET) => Ok(StartPosition::Latest),
        OFFSET => Ok(StartPosition::Offset {
            offset: number()?,
            inclusive,
        }),
        SEQUENCE_NUMBER => Ok(StartPosition::SequenceNumber {
            sequence_number: number()?,
            inclusive,
        }),
        _ => Ok(StartPosition::EnqueuedTime {
            unix_millis: number()?,
            inclusive,
        }),
    }
}

/// Parses a signed decimal integer value.
fn parse_integer(property: &'static str, value: &str) -> Result<i64, FilterError> {
    value.parse().map_err(|_| invalid(property, value))
}

/// Builds an [`FilterError::InvalidValue`] naming the short property name.
fn invalid(property: &'static str, value: &str) -> FilterError {
    FilterError::InvalidValue {
        property: property.rsplit('.').next().unwrap_or(property),
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(expr: &str) -> StartPosition {
        parse_start_position(expr).unwrap()
    }

    #[test]
    fn offset_minus_one_is_earliest() {
        assert_eq!(
            parse("amqp.annotation.x-opt-offset > '-1'"),
            StartPosition::Earliest
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-offset >= -1"),
            StartPosition::Earliest
        );
    }

    #[test]
    fn latest_offset_quoted_or_bare() {
        assert_eq!(
            parse("amqp.annotation.x-opt-offset > @latest"),
            StartPosition::Latest
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-offset > '@latest'"),
            StartPosition::Latest
        );
    }

    #[test]
    fn numeric_offsets() {
        assert_eq!(
            parse("amqp.annotation.x-opt-offset >'12345'"),
            StartPosition::Offset {
                offset: 12345,
                inclusive: false
            }
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-offset >= '12'"),
            StartPosition::Offset {
                offset: 12,
                inclusive: true
            }
        );
    }

    #[test]
    fn sequence_numbers() {
        assert_eq!(
            parse("amqp.annotation.x-opt-sequence-number > 41"),
            StartPosition::SequenceNumber {
                sequence_number: 41,
                inclusive: false
            }
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-sequence-number>='7'"),
            StartPosition::SequenceNumber {
                sequence_number: 7,
                inclusive: true
            }
        );
    }

    #[test]
    fn enqueued_times() {
        assert_eq!(
            parse("amqp.annotation.x-opt-enqueued-time > 1700000000000"),
            StartPosition::EnqueuedTime {
                unix_millis: 1_700_000_000_000,
                inclusive: false
            }
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-enqueued-time >= '1700000000000'"),
            StartPosition::EnqueuedTime {
                unix_millis: 1_700_000_000_000,
                inclusive: true
            }
        );
    }

    #[test]
    fn names_are_case_insensitive_and_whitespace_is_optional() {
        assert_eq!(
            parse("  AMQP.Annotation.X-Opt-Sequence-Number\t>=\t'3'  "),
            StartPosition::SequenceNumber {
                sequence_number: 3,
                inclusive: true
            }
        );
    }

    #[test]
    fn rejects_empty_input() {
        assert_eq!(parse_start_position(""), Err(FilterError::Empty));
        assert_eq!(parse_start_position("   "), Err(FilterError::Empty));
    }

    #[test]
    fn rejects_unknown_names() {
        for expr in [
            "amqp.annotation.x-opt-partition-key > 1",
            "x-opt-offset > 1",
            "offset > 1",
        ] {
            assert_eq!(
                parse_start_position(expr),
                Err(FilterError::UnknownProperty),
                "{expr:?}"
            );
        }
    }

    #[test]
    fn rejects_missing_or_other_operators() {
        for expr in [
            "amqp.annotation.x-opt-offset",
            "amqp.annotation.x-opt-offset '5'",
            "amqp.annotation.x-opt-offset < 5",
            "amqp.annotation.x-opt-offset = 5",
            "amqp.annotation.x-opt-offsetx > 5",
        ] {
            assert_eq!(
                parse_start_position(expr),
                Err(FilterError::UnsupportedOperator),
                "{expr:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_values() {
        for expr in [
            "amqp.annotation.x-opt-offset >",
            "amqp.annotation.x-opt-offset > ''",
            "amqp.annotation.x-opt-offset > 'abc'",
            "amqp.annotation.x-opt-offset > '12",
            "amqp.annotation.x-opt-offset > 12'",
            "amqp.annotation.x-opt-offset >> 12",
            "amqp.annotation.x-opt-sequence-number > @latest",
            "amqp.annotation.x-opt-sequence-number > 1.5",
            "amqp.annotation.x-opt-enqueued-time > 99999999999999999999",
        ] {
            assert!(
                matches!(
                    parse_start_position(expr),
                    Err(FilterError::InvalidValue { .. })
                ),
                "{expr:?}"
            );
        }
    }

    #[test]
    fn error_message_names_the_problem() {
        let err = parse_start_position("amqp.annotation.x-opt-offset > 'abc'").unwrap_err();
        assert_eq!(
            err.to_string(),
            "filter value \"abc\" for x-opt-offset is not valid"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(expr in any::<String>()) {
            let _ = parse_start_position(&expr);
        }

        #[test]
        fn arbitrary_suffix_never_panics(suffix in any::<String>()) {
            let _ = parse_start_position(&format!("amqp.annotation.x-opt-offset{suffix}"));
        }
    }
}
