//! The W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), as Azure's SDKs put it on
//! an event (application properties `Diagnostic-Id` and `traceparent`) so that consumers can
//! continue the trace of the code that enqueued it.

use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
use opentelemetry::{SpanId, TraceId};

/// The application property Azure's SDKs read and write the trace context in.
pub(crate) const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// The W3C name of the same value.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The `traceparent` value of `context`; None when it is not a valid span context.
pub(crate) fn format(context: &SpanContext) -> Option<String> {
    if !context.is_valid() {
        return None;
    }
    Some(format!(
        "00-{:032x}-{:016x}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()
    ))
}

/// The span context a `traceparent` value names (as a remote context); None unless it is a
/// well-formed version-00 value with non-zero ids.
pub(crate) fn parse(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00"
        || parts.next().is_some()
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the W3C Trace Context recommendation.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_value_survives_parsing_and_formatting() {
        let context = parse(EXAMPLE).expect("parses");
        assert_eq!(
            context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(format(&context).as_deref(), Some(EXAMPLE));
    }

    #[test]
    fn malformed_or_empty_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(format(&SpanContext::empty_context()), None);
    }
}
