"""Interoperability test: Microsoft's `azure-eventhub` Python client against eventhubs-emulator.

What this proves, using only the public synchronous API of the official SDK:

1. Management: `get_eventhub_properties`, `get_partition_ids` and `get_partition_properties`
   return the hub name, the 4 partition ids "0".."3", a creation time, and an empty partition.
2. Publishing: exactly 1,000 events are accepted, sent as a mix of single events
   (`send_event`), batches without routing (`create_batch` + `send_batch`), batches sent to an
   explicit partition, batches with a partition key, and plain lists with a partition key.
3. Consuming: an `EventHubConsumerClient` reading every partition from the start receives each of
   the 1,000 events exactly once, with body and application properties intact (int, str, bool,
   float), in send order within a partition, with sequence numbers 0..n-1, offsets, enqueued times
   and partition keys; explicit-partition events land where they were sent; all events of one
   partition key share one partition; every batch lands in one partition as a contiguous run.
4. Management after the run: each partition's last enqueued sequence number / offset and
   `is_empty` agree with what was received, and the counts add up to 1,000.

Inputs (environment):
    EVENTHUBS_CONNECTION_STRING  Endpoint=sb://127.0.0.1:PORT;...;EntityPath=hub;UseDevelopmentEmulator=true
                                 (hub "hub" with partitions "0".."3", freshly created and empty)
    INTEROP_TRANSPORT            optional: "websocket" for TransportType.AmqpOverWebsocket
                                 (then INTEROP_CUSTOM_ENDPOINT, sb://HOST:PORT of the emulator's
                                 WebSocket port, and with TLS INTEROP_CA_FILE, the PEM of the
                                 emulator's certificate authority, say where and whom to trust)
    INTEROP_RESULT_FILE          where to write the JSON summary on success:
                                 {"keyed": [[key, partition_id], ...],
                                  "partition_counts": {"0": n, ...}, "received": 1000}

Exit status: 0 when every check passes, 1 otherwise (each failed check is printed by name).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from azure.eventhub import (
    EventData,
    EventHubConsumerClient,
    EventHubProducerClient,
    LoadBalancingStrategy,
    TransportType,
)
from azure.eventhub.amqp import AmqpMessageBodyType
from azure.eventhub._pyamqp import _platform as _pyamqp_platform

# pyamqp reads every known TCP option with getsockopt and writes it back with setsockopt. On
# Linux loopback (64 KiB MTU) the kernel can report TCP_MAXSEG as 32768 and then refuses that
# same value with EINVAL, so the client fails to connect before any AMQP is spoken. pyamqp
# already leaves TCP_MAXSEG alone on platforms that refuse it; do the same here.
_pyamqp_platform.KNOWN_TCP_OPTS.discard("TCP_MAXSEG")

HUB_NAME = "hub"
PARTITION_IDS = ["0", "1", "2", "3"]
CONSUMER_GROUP = "$Default"
TOTAL_EVENTS = 1000
KEY_COUNT = 30
RECEIVE_TIMEOUT_S = 60.0
# After everything arrived, keep listening briefly so duplicates / stray events get noticed.
RECEIVE_GRACE_S = 2.0
# Generous window for enqueued_time sanity (broker and test share a machine).
CLOCK_TOLERANCE = datetime.timedelta(minutes=5)
PARTITION_PROPERTY_KEYS = {
    "eventhub_name",
    "id",
    "beginning_sequence_number",
    "last_enqueued_sequence_number",
    "last_enqueued_offset",
    "last_enqueued_time_utc",
    "is_empty",
}
MAX_EXAMPLES_PER_CHECK = 5


# --------------------------------------------------------------------------------------------
# Check bookkeeping
# --------------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """Raised at the end of a phase when at least one named check failed."""


class Checks:
    """Collects named check results for one phase; `finish()` raises if any failed."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.failures: Dict[str, List[str]] = defaultdict(list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if not ok:
            self.failures[name].append(detail)
        return ok

    def equal(self, name: str, actual: Any, expected: Any, context: str = "") -> bool:
        prefix = f"{context}: " if context else ""
        return self.check(name, actual == expected, f"{prefix}expected {expected!r}, got {actual!r}")

    def finish(self) -> None:
        if not self.failures:
            return
        lines = []
        for name, details in self.failures.items():
            lines.append(f"FAIL [{self.phase}] check '{name}': {len(details)} failure(s)")
            for detail in details[:MAX_EXAMPLES_PER_CHECK]:
                lines.append(f"    - {detail}")
            if len(details) > MAX_EXAMPLES_PER_CHECK:
                lines.append(f"    ... and {len(details) - MAX_EXAMPLES_PER_CHECK} more")
        raise CheckFailed("\n".join(lines))


def progress(phase: str, message: str) -> None:
    print(f"[{phase}] {message}", flush=True)


def as_text(value: Any) -> Any:
    """The pure-Python AMQP stack hands back AMQP strings/symbols as bytes; decode those."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    return value


def as_utc(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise CheckFailed(f"FAIL [config] check 'env {name}': environment variable is not set")
    return value


# --------------------------------------------------------------------------------------------
# Phase 1: management operations on a fresh hub
# --------------------------------------------------------------------------------------------


def check_partition_property_shape(checks: Checks, props: Dict[str, Any], partition_id: str) -> None:
    ctx = f"partition {partition_id}"
    checks.equal("partition-properties keys", set(props), PARTITION_PROPERTY_KEYS, ctx)
    checks.equal("partition-properties eventhub_name", props.get("eventhub_name"), HUB_NAME, ctx)
    checks.equal("partition-properties id", props.get("id"), partition_id, ctx)
    for key in ("beginning_sequence_number", "last_enqueued_sequence_number"):
        value = props.get(key)
        checks.check(
            f"partition-properties {key} is int",
            isinstance(value, int) and not isinstance(value, bool),
            f"{ctx}: got {value!r}",
        )
    checks.check(
        "partition-properties last_enqueued_offset is str",
        isinstance(props.get("last_enqueued_offset"), str),
        f"{ctx}: got {props.get('last_enqueued_offset')!r}",
    )
    checks.check(
        "partition-properties last_enqueued_time_utc is datetime",
        isinstance(props.get("last_enqueued_time_utc"), datetime.datetime),
        f"{ctx}: got {props.get('last_enqueued_time_utc')!r}",
    )
    checks.check(
        "partition-properties is_empty is bool",
        isinstance(props.get("is_empty"), bool),
        f"{ctx}: got {props.get('is_empty')!r}",
    )


def phase1_management(producer: EventHubProducerClient) -> None:
    checks = Checks("phase 1")
    hub = producer.get_eventhub_properties()
    # The SDK exposes these as "eventhub_name" / "created_at" / "partition_ids".
    checks.equal("eventhub-properties eventhub_name", hub.get("eventhub_name"), HUB_NAME)
    checks.equal("eventhub-properties partition_ids", hub.get("partition_ids"), PARTITION_IDS)
    checks.check(
        "eventhub-properties created_at is datetime",
        isinstance(hub.get("created_at"), datetime.datetime),
        f"got {hub.get('created_at')!r} (full response {hub!r})",
    )
    checks.equal("get_partition_ids", producer.get_partition_ids(), PARTITION_IDS)

    props = producer.get_partition_properties("2")
    check_partition_property_shape(checks, props, "2")
    checks.check("partition 2 is_empty initially", props.get("is_empty") is True, f"got {props!r}")
    # Sequence numbers are expected to start at 0, so the hub must be fresh.
    for pid in PARTITION_IDS:
        if pid != "2":
            other = producer.get_partition_properties(pid)
            checks.check(
                "hub is fresh (all partitions empty)",
                other.get("is_empty") is True,
                f"partition {pid}: {other!r}",
            )
    checks.finish()
    progress("phase 1", f"management OK: {hub.get('eventhub_name')} partitions={hub.get('partition_ids')}")


# --------------------------------------------------------------------------------------------
# Phase 2: publishing
# --------------------------------------------------------------------------------------------


@dataclass
class SendOp:
    """One publish call. `indices` are assigned when the plan is finalised (in send order)."""

    op_id: int
    method: str  # "send_event" | "create_batch" | "send_batch_list"
    kind: str  # "single" | "batch" | "partition" | "keyed"
    size: int
    partition_id: Optional[str] = None
    partition_key: Optional[str] = None
    indices: List[int] = field(default_factory=list)


@dataclass(frozen=True)
class SentEvent:
    index: int
    kind: str
    op_id: int
    partition_id: Optional[str]  # only for explicit-partition sends
    partition_key: Optional[str]  # only for keyed sends


def build_send_plan() -> List[SendOp]:
    """100 singles, 300 unrouted batched, 300 to explicit partitions, 300 keyed (30 keys x 10)."""
    shapes: List[Dict[str, Any]] = []
    shapes += [dict(method="send_event", kind="single", size=1) for _ in range(100)]
    shapes += [dict(method="create_batch", kind="batch", size=25) for _ in range(12)]
    shapes += [
        dict(method="create_batch", kind="partition", size=25, partition_id=PARTITION_IDS[n % 4])
        for n in range(12)
    ]
    # Each key is published in two separate sends of 5, so "same key -> same partition" is
    # exercised across calls. Keys 25..29 use a plain list for their second send.
    for round_no in range(2):
        for k in range(KEY_COUNT):
            method = "send_batch_list" if (round_no == 1 and k >= 25) else "create_batch"
            shapes.append(dict(method=method, kind="keyed", size=5, partition_key=f"key-{k}"))

    # Interleave the kinds deterministically so every partition sees a mix. Indices are
    # assigned after shuffling, so they always follow the actual send order.
    random.Random(20240611).shuffle(shapes)

    plan: List[SendOp] = []
    next_index = 0
    for op_id, shape in enumerate(shapes):
        op = SendOp(op_id=op_id, **shape)
        op.indices = list(range(next_index, next_index + op.size))
        next_index += op.size
        plan.append(op)
    assert next_index == TOTAL_EVENTS, next_index
    return plan


def make_event(index: int, kind: str) -> EventData:
    event = EventData(f"event-{index}".encode("utf-8"))
    event.properties = {"index": index, "kind": kind, "flag": True, "ratio": 0.5}
    return event


def send_single(producer: EventHubProducerClient, event: EventData) -> None:
    if hasattr(producer, "send_event"):  # azure-eventhub >= 5.11
        producer.send_event(event)
    else:
        batch = producer.create_batch()
        batch.add(event)
        producer.send_batch(batch)


def execute_send(producer: EventHubProducerClient, op: SendOp) -> None:
    events = [make_event(i, op.kind) for i in op.indices]
    if op.method == "send_event":
        send_single(producer, events[0])
    elif op.method == "create_batch":
        batch = producer.create_batch(partition_id=op.partition_id, partition_key=op.partition_key)
        for event in events:
            batch.add(event)
        if len(batch) != len(events):
            raise CheckFailed(f"FAIL [phase 2] check 'batch size': batch holds {len(batch)}, expected {len(events)}")
        producer.send_batch(batch)
    elif op.method == "send_batch_list":
        producer.send_batch(events, partition_key=op.partition_key)
    else:
        raise ValueError(f"unknown send method {op.method}")


def phase2_send(producer: EventHubProducerClient) -> Dict[int, SentEvent]:
    plan = build_send_plan()
    sent: Dict[int, SentEvent] = {}
    for op in plan:
        try:
            execute_send(producer, op)
        except CheckFailed:
            raise
        except Exception as exc:  # report which send failed, then stop
            raise CheckFailed(
                f"FAIL [phase 2] check 'send {op.kind} via {op.method}': op #{op.op_id} "
                f"(events {op.indices[0]}..{op.indices[-1]}, partition_id={op.partition_id!r}, "
                f"partition_key={op.partition_key!r}) raised {exc!r}"
            ) from exc
        for index in op.indices:
            sent[index] = SentEvent(index, op.kind, op.op_id, op.partition_id, op.partition_key)
    by_kind = defaultdict(int)
    for event in sent.values():
        by_kind[event.kind] += 1
    progress("phase 2", f"sent {len(sent)} events in {len(plan)} calls: {dict(sorted(by_kind.items()))}")
    return sent


# --------------------------------------------------------------------------------------------
# Phase 3: consuming
# --------------------------------------------------------------------------------------------


@dataclass
class ReceivedEvent:
    """Plain snapshot of one received EventData, taken inside the callback."""

    partition_id: str
    body_type: Any
    body: Optional[str]
    properties: Dict[Any, Any]
    sequence_number: Any
    offset: Any
    enqueued_time: Any
    partition_key: Any


def snapshot(partition_id: str, event: EventData) -> ReceivedEvent:
    body: Optional[str]
    try:
        body = event.body_as_str(encoding="utf-8")
    except Exception as exc:  # keep going; the body check will report it
        body = f"<undecodable body: {exc!r}>"
    return ReceivedEvent(
        partition_id=partition_id,
        body_type=event.body_type,
        body=body,
        properties={as_text(k): as_text(v) for k, v in (event.properties or {}).items()},
        sequence_number=event.sequence_number,
        offset=event.offset,
        enqueued_time=event.enqueued_time,
        partition_key=event.partition_key,
    )


class Collector:
    """Thread-safe sink for the consumer callbacks.

    `wake` is set once every expected body is in (or when the receive call itself ends).
    """

    def __init__(self, expected_bodies: set) -> None:
        self.expected_bodies = expected_bodies
        self.lock = threading.Lock()
        self.events: List[ReceivedEvent] = []
        self.seen_expected: set = set()
        self.errors: List[str] = []
        # Errors raised while we tear the consumer down (e.g. a receive racing close()) are
        # reported as warnings only; they say nothing about the broker.
        self.closing = False
        self.shutdown_errors: List[str] = []
        self.wake = threading.Event()

    def complete(self) -> bool:
        with self.lock:
            return len(self.seen_expected) == len(self.expected_bodies)

    def on_event_batch(self, context: Any, batch: List[EventData]) -> None:
        with self.lock:
            for event in batch:
                received = snapshot(context.partition_id, event)
                self.events.append(received)
                if received.body in self.expected_bodies:
                    self.seen_expected.add(received.body)
            if len(self.seen_expected) == len(self.expected_bodies):
                self.wake.set()

    def on_error(self, context: Any, error: Exception) -> None:
        where = f"partition {context.partition_id}" if context is not None else "load balancing"
        self.record_error(f"{where}: {error!r}")

    def record_error(self, message: str) -> None:
        with self.lock:
            (self.shutdown_errors if self.closing else self.errors).append(message)


def receive_all(consumer: EventHubConsumerClient, expected_bodies: set) -> Collector:
    """Receive from every partition in a background thread until all bodies are in or time runs out."""
    collector = Collector(expected_bodies)

    def receive_loop() -> None:
        try:
            consumer.receive_batch(
                collector.on_event_batch,
                max_batch_size=100,
                starting_position="-1",  # from the beginning of every partition
                on_error=collector.on_error,
            )
        except Exception as exc:  # surfaced as a failed check by the caller
            collector.record_error(f"receive_batch raised {exc!r}")
        finally:
            collector.wake.set()  # receive_batch only returns early on error

    thread = threading.Thread(target=receive_loop, name="interop-receiver", daemon=True)
    started = time.monotonic()
    thread.start()
    collector.wake.wait(RECEIVE_TIMEOUT_S)
    if collector.complete():
        elapsed = time.monotonic() - started
        progress("phase 3", f"all events in after {elapsed:.1f}s; listening {RECEIVE_GRACE_S:.0f}s more")
        time.sleep(RECEIVE_GRACE_S)
    with collector.lock:
        collector.closing = True
    consumer.close()  # makes receive_batch return
    thread.join(timeout=15)
    if thread.is_alive():
        collector.errors.append("receive thread did not stop within 15s of close()")
    for message in collector.shutdown_errors:
        print(f"warning: error during consumer shutdown (ignored): {message}", file=sys.stderr)
    return collector


def parse_index(body: Optional[str]) -> Optional[int]:
    if body and body.startswith("event-"):
        try:
            return int(body[len("event-"):])
        except ValueError:
            return None
    return None


def check_counts(checks: Checks, collector: Collector) -> Dict[int, ReceivedEvent]:
    """Exactly the 1,000 expected bodies, each once. Returns index -> received event."""
    missing = collector.expected_bodies - collector.seen_expected
    checks.check(
        "all events received",
        not missing,
        f"{len(missing)} of {TOTAL_EVENTS} still missing when receiving stopped "
        f"(limit {RECEIVE_TIMEOUT_S:.0f}s), e.g. {sorted(missing, key=parse_index)[:10]}",
    )
    by_index: Dict[int, ReceivedEvent] = {}
    for event in collector.events:
        index = parse_index(event.body)
        if index is None or event.body not in collector.expected_bodies:
            checks.check("no unexpected events", False, f"partition {event.partition_id}: body {event.body!r}")
            continue
        if index in by_index:
            first = by_index[index]
            checks.check(
                "no duplicates",
                False,
                f"{event.body!r} received twice (partition {first.partition_id} seq "
                f"{first.sequence_number}, partition {event.partition_id} seq {event.sequence_number})",
            )
            continue
        by_index[index] = event
    checks.equal("exactly 1000 received", len(collector.events), TOTAL_EVENTS)
    checks.equal("exactly 1000 distinct bodies", len(by_index), TOTAL_EVENTS)
    checks.check("no consumer errors", not collector.errors, "; ".join(collector.errors[:5]))
    return by_index


def check_properties(checks: Checks, sent: SentEvent, got: ReceivedEvent, ctx: str) -> None:
    """Application properties keep their values and AMQP types (int, str, bool, float)."""
    props = got.properties
    checks.equal("application property keys", set(props), {"index", "kind", "flag", "ratio"}, ctx)
    index = props.get("index")
    checks.check(
        "property index (int) round-trips",
        type(index) is int and index == sent.index,
        f"{ctx}: got {index!r} ({type(index).__name__})",
    )
    checks.equal("property kind (str) round-trips", props.get("kind"), sent.kind, ctx)
    flag = props.get("flag")
    checks.check("property flag (bool) round-trips", flag is True, f"{ctx}: got {flag!r}")
    ratio = props.get("ratio")
    checks.check(
        "property ratio (float) round-trips",
        type(ratio) is float and ratio == 0.5,
        f"{ctx}: got {ratio!r} ({type(ratio).__name__})",
    )


def check_system_properties(checks: Checks, got: ReceivedEvent, ctx: str, window: tuple) -> None:
    """Broker-stamped annotations: sequence number, offset, enqueued time."""
    checks.check(
        "sequence_number is int",
        type(got.sequence_number) is int,
        f"{ctx}: got {got.sequence_number!r}",
    )
    checks.check(
        "offset present",
        isinstance(got.offset, str) and got.offset != "",
        f"{ctx}: got {got.offset!r} (the SDK only exposes x-opt-offset when it is an AMQP string)",
    )
    plausible = isinstance(got.enqueued_time, datetime.datetime) and (
        window[0] <= as_utc(got.enqueued_time) <= window[1]
    )
    checks.check(
        "enqueued_time present and plausible",
        plausible,
        f"{ctx}: got {got.enqueued_time!r}, expected within {window[0]} .. {window[1]}",
    )


def check_routing(checks: Checks, sent: SentEvent, got: ReceivedEvent, ctx: str) -> None:
    """Explicit partitions are honoured; partition keys are exposed only on keyed events."""
    if sent.partition_id is not None:
        checks.equal("explicit partition honoured", got.partition_id, sent.partition_id, ctx)
    if sent.partition_key is not None:
        checks.equal(
            "partition_key exposed on keyed event", as_text(got.partition_key), sent.partition_key, ctx
        )
    else:
        checks.check(
            "no partition_key on unkeyed event",
            got.partition_key is None,
            f"{ctx}: got {got.partition_key!r}",
        )


def check_event(checks: Checks, sent: SentEvent, got: ReceivedEvent, window: tuple) -> None:
    ctx = f"event-{sent.index} (partition {got.partition_id})"
    checks.equal("body is one AMQP data section", got.body_type, AmqpMessageBodyType.DATA, ctx)
    check_properties(checks, sent, got, ctx)
    check_system_properties(checks, got, ctx, window)
    check_routing(checks, sent, got, ctx)


def check_partition_streams(checks: Checks, collector: Collector) -> Dict[str, List[ReceivedEvent]]:
    """Per partition, in arrival order: sequence numbers 0..n-1, offsets unique, send order kept."""
    streams: Dict[str, List[ReceivedEvent]] = {pid: [] for pid in PARTITION_IDS}
    for event in collector.events:
        if event.partition_id not in streams:
            checks.check("events only from known partitions", False, f"partition {event.partition_id!r}")
            continue
        streams[event.partition_id].append(event)

    for pid, stream in streams.items():
        seqs = [e.sequence_number for e in stream]
        bad_steps = [
            (a, b) for a, b in zip(seqs, seqs[1:]) if not (type(a) is int and type(b) is int and a < b)
        ]
        checks.check(
            "sequence numbers strictly increasing in receive order",
            not bad_steps,
            f"partition {pid}: {len(bad_steps)} bad step(s), e.g. {bad_steps[:5]}",
        )
        checks.check(
            "sequence numbers start at 0 and are contiguous",
            seqs == list(range(len(seqs))),
            f"partition {pid}: first {seqs[:8]}, last {seqs[-3:]}, count {len(seqs)}",
        )
        offsets = [e.offset for e in stream]
        checks.check(
            "offsets unique within partition",
            len(set(offsets)) == len(offsets),
            f"partition {pid}: {len(offsets) - len(set(offsets))} repeated offset(s)",
        )
        # Sends are sequential and each waits for its acknowledgement, so within a partition
        # the event indices must come back in increasing order.
        indices = [parse_index(e.body) for e in stream]
        inversions = [
            (a, b) for a, b in zip(indices, indices[1:]) if a is not None and b is not None and a >= b
        ]
        checks.check(
            "send order preserved within partition",
            not inversions,
            f"partition {pid}: {len(inversions)} inversion(s), e.g. {inversions[:5]}",
        )
    return streams


def is_contiguous_run(seqs: List[Any]) -> bool:
    if not seqs or any(type(s) is not int for s in seqs):
        return False
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def check_batches(checks: Checks, sent: Dict[int, SentEvent], by_index: Dict[int, ReceivedEvent]) -> None:
    """Every multi-event send lands in one partition as a contiguous run, in batch order."""
    by_op: Dict[int, List[int]] = defaultdict(list)
    for index in sorted(sent):
        by_op[sent[index].op_id].append(index)
    for op_id, indices in by_op.items():
        got = [by_index[i] for i in indices if i in by_index]
        if len(indices) < 2 or len(got) != len(indices):
            continue  # singles are trivially fine; missing events are reported elsewhere
        ctx = f"send #{op_id} ({sent[indices[0]].kind}, events {indices[0]}..{indices[-1]})"
        partitions = sorted({e.partition_id for e in got})
        if checks.check("batch lands in one partition", len(partitions) == 1, f"{ctx}: partitions {partitions}"):
            seqs = [e.sequence_number for e in got]
            checks.check(
                "batch is a contiguous run in send order",
                is_contiguous_run(seqs),
                f"{ctx}: sequence numbers {seqs}",
            )


def check_keys(
    checks: Checks, sent: Dict[int, SentEvent], by_index: Dict[int, ReceivedEvent]
) -> Dict[str, str]:
    """All events of one partition key share one partition, in send order. Returns key -> partition."""
    by_key: Dict[str, List[int]] = defaultdict(list)
    for index in sorted(sent):
        if sent[index].partition_key is not None:
            by_key[sent[index].partition_key].append(index)

    key_partition: Dict[str, str] = {}
    for key, indices in sorted(by_key.items()):
        got = [by_index[i] for i in indices if i in by_index]
        if not got:
            continue  # missing events are reported by check_counts
        partitions = sorted({e.partition_id for e in got})
        if not checks.check("one partition per key", len(partitions) == 1, f"{key}: partitions {partitions}"):
            continue
        key_partition[key] = partitions[0]
        seqs = [e.sequence_number for e in got]
        checks.check(
            "keyed events in send order",
            all(type(a) is int and type(b) is int and a < b for a, b in zip(seqs, seqs[1:])),
            f"{key}: sequence numbers in send order {seqs}",
        )
    checks.equal("distinct keys mapped to a partition", len(key_partition), KEY_COUNT)
    return key_partition


@dataclass
class ReceiveSummary:
    streams: Dict[str, List[ReceivedEvent]]
    key_partition: Dict[str, str]


def client_options() -> Dict[str, Any]:
    """Keyword arguments of both clients: the transport the environment asks for."""
    transport = os.environ.get("INTEROP_TRANSPORT", "amqp")
    if transport == "amqp":
        return {}
    if transport != "websocket":
        raise CheckFailed(f"FAIL [setup] unknown INTEROP_TRANSPORT {transport!r}")
    options: Dict[str, Any] = {
        "transport_type": TransportType.AmqpOverWebsocket,
        "custom_endpoint_address": require_env("INTEROP_CUSTOM_ENDPOINT"),
    }
    ca_file = os.environ.get("INTEROP_CA_FILE")
    if ca_file:
        options["connection_verify"] = ca_file
    return options


def phase3_receive(
    conn_str: str, sent: Dict[int, SentEvent], window_start: datetime.datetime
) -> ReceiveSummary:
    checks = Checks("phase 3")
    consumer = EventHubConsumerClient.from_connection_string(
        conn_str,
        consumer_group=CONSUMER_GROUP,
        # Claim all partitions at once (greedy is the default, made explicit) and re-claim a
        # partition quickly if its receiver fails, so such a failure still shows up as a named
        # check ("no consumer errors") instead of only as missing events.
        load_balancing_strategy=LoadBalancingStrategy.GREEDY,
        load_balancing_interval=5,
        **client_options(),
    )
    try:
        collector = receive_all(consumer, {f"event-{i}" for i in sent})
    finally:
        close_quietly(consumer.close, "consumer")
    progress("phase 3", f"received {len(collector.events)} events, {len(collector.errors)} consumer error(s)")

    by_index = check_counts(checks, collector)
    window = (window_start - CLOCK_TOLERANCE, datetime.datetime.now(datetime.timezone.utc) + CLOCK_TOLERANCE)
    for index, got in sorted(by_index.items()):
        check_event(checks, sent[index], got, window)
    streams = check_partition_streams(checks, collector)
    check_batches(checks, sent, by_index)
    key_partition = check_keys(checks, sent, by_index)
    checks.finish()
    counts = {pid: len(s) for pid, s in streams.items()}
    progress("phase 3", f"content/order checks OK; per-partition counts {counts}")
    return ReceiveSummary(streams, key_partition)


# --------------------------------------------------------------------------------------------
# Phase 4: management operations after the run
# --------------------------------------------------------------------------------------------


def phase4_partition_properties(
    producer: EventHubProducerClient, streams: Dict[str, List[ReceivedEvent]]
) -> Dict[str, int]:
    checks = Checks("phase 4")
    counts: Dict[str, int] = {}
    for pid in PARTITION_IDS:
        stream = streams[pid]
        count = counts[pid] = len(stream)
        ctx = f"partition {pid}"
        props = producer.get_partition_properties(pid)
        check_partition_property_shape(checks, props, pid)
        checks.equal(
            "last_enqueued_sequence_number == count-1", props.get("last_enqueued_sequence_number"), count - 1, ctx
        )
        checks.equal("is_empty matches count", props.get("is_empty"), count == 0, ctx)
        if count > 0:
            checks.equal("beginning_sequence_number is 0", props.get("beginning_sequence_number"), 0, ctx)
            checks.equal(
                "last_enqueued_offset == offset of last received event",
                props.get("last_enqueued_offset"),
                stream[-1].offset,
                ctx,
            )
    checks.equal("partition counts sum to 1000", sum(counts.values()), TOTAL_EVENTS)
    checks.finish()
    progress("phase 4", f"partition properties OK: {counts}")
    return counts


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def write_result(path: str, key_partition: Dict[str, str], counts: Dict[str, int]) -> None:
    keys = sorted(key_partition, key=lambda k: int(k.rsplit("-", 1)[1]))
    result = {
        "keyed": [[key, key_partition[key]] for key in keys],
        "partition_counts": counts,
        "received": sum(counts.values()),
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")


def close_quietly(close: Callable[[], None], what: str) -> None:
    try:
        close()
    except Exception as exc:  # closing must never mask the real outcome
        print(f"warning: closing {what} raised {exc!r}", file=sys.stderr)


def in_phase(phase: str, func: Callable[..., Any], *args: Any) -> Any:
    """Run one phase; an unexpected SDK/transport exception becomes a failure naming the phase."""
    try:
        return func(*args)
    except CheckFailed:
        raise
    except Exception as exc:
        logging.getLogger("interop").warning("%s raised", phase, exc_info=True)
        raise CheckFailed(f"FAIL [{phase}] check 'no unexpected exception': {exc!r}") from exc


def run() -> None:
    conn_str = require_env("EVENTHUBS_CONNECTION_STRING")
    result_path = require_env("INTEROP_RESULT_FILE")
    window_start = datetime.datetime.now(datetime.timezone.utc)

    producer = EventHubProducerClient.from_connection_string(conn_str, **client_options())
    try:
        in_phase("phase 1", phase1_management, producer)
        sent = in_phase("phase 2", phase2_send, producer)
        summary = in_phase("phase 3", phase3_receive, conn_str, sent, window_start)
        counts = in_phase("phase 4", phase4_partition_properties, producer, summary.streams)
    finally:
        close_quietly(producer.close, "producer")

    write_result(result_path, summary.key_partition, counts)
    progress("done", f"all checks passed; summary written to {result_path}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run()
    except CheckFailed as failure:
        print(str(failure), flush=True)
        return 1
    except Exception as exc:  # unexpected SDK/transport error: still a named failure
        print(f"FAIL [unexpected] check 'no unexpected exception': {exc!r}", flush=True)
        logging.getLogger("interop").exception("unexpected error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
