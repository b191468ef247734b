//! BufferedProducerClient against the emulator over TCP loopback, one file per concern.
//!
//! The unit tests in src/buffered/tests.rs check the logic over a mock sender on a paused
//! clock; these check that the same behaviours hold over the real protocol, plus what only a
//! real service shows (rejections, lost connections, partition growth, link limits).
//! Real IO does not work with a paused clock, so waits are bounded with timeouts on the real
//! clock and the tests assert outcomes and orderings, not durations.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod builder;
mod close;
mod connection_faults;
mod credentials;
mod endpoints;
mod failures;
mod flow;
mod handlers;
mod http_proxy;
mod metrics;
mod outcomes;
mod routing;
mod shared_connection;
mod websockets;

/// What every test file here uses.
#[allow(unused_imports)]
mod prelude {
    pub use std::collections::{HashMap, HashSet};
    pub use std::sync::atomic::{AtomicUsize, Ordering};
    pub use std::sync::{Arc, Mutex};
    pub use std::time::{Duration, Instant};

    pub use eventhubs_buffered::{
        BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
        ErrorKind, EventData, RetryOptions, SendFailedContext, SendSucceededContext,
    };
    pub use eventhubs_emulator::{
        partition_index_for_key, Emulator, FaultCondition, FaultScope, Faults, Value,
    };

    pub use crate::common::tagged_event as event;
    pub use crate::common::*;
}
