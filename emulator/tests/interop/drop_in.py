"""Microsoft's Python client against the emulator binary started from a Config.json, with the
connection string Microsoft's own emulator documents: for each configured hub, send events,
then read them all back through every consumer group of that hub.

Environment: EVENTHUBS_CONNECTION_STRING (namespace level, no EntityPath) and DROP_IN_HUBS,
e.g. "eh1=cg1;eh2=" (hub=extra consumer groups, comma separated). Exit code 0 when every hub
and group saw every event.
"""

import os
import sys
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

EVENTS_PER_HUB = 20
READ_TIMEOUT_S = 60


def hubs_from_env():
    hubs = {}
    for part in os.environ["DROP_IN_HUBS"].split(";"):
        if not part:
            continue
        name, _, groups = part.partition("=")
        hubs[name] = ["$Default"] + [g for g in groups.split(",") if g]
    return hubs


def send(connection_string, hub):
    producer = EventHubProducerClient.from_connection_string(connection_string, eventhub_name=hub)
    with producer:
        batch = producer.create_batch()
        bodies = set()
        for i in range(EVENTS_PER_HUB):
            body = f"{hub}-{i}"
            batch.add(EventData(body))
            bodies.add(body)
        producer.send_batch(batch)
    return bodies


def read_back(connection_string, hub, group, expected):
    """Reads every partition of `hub` through `group` from the start, one receiver per
    partition (no load balancing, which would only add start-up delay here), until all of
    `expected` arrived or READ_TIMEOUT_S passed."""
    got = set()
    lock = threading.Lock()
    done = threading.Event()

    def on_event(_context, event):
        if event is None:
            return
        with lock:
            got.add(event.body_as_str())
            if expected <= got:
                done.set()

    def client():
        return EventHubConsumerClient.from_connection_string(
            connection_string, consumer_group=group, eventhub_name=hub
        )

    with client() as probe:
        partition_ids = probe.get_partition_ids()
    consumers = []
    for partition_id in partition_ids:
        consumer = client()
        worker = threading.Thread(
            target=consumer.receive,
            kwargs={
                "on_event": on_event,
                "partition_id": partition_id,
                "starting_position": "-1",
                "max_wait_time": 1,
            },
            daemon=True,
        )
        worker.start()
        consumers.append((consumer, worker))
    done.wait(READ_TIMEOUT_S)
    for consumer, worker in consumers:
        consumer.close()
        worker.join(10)
    return got


def main():
    connection_string = os.environ["EVENTHUBS_CONNECTION_STRING"]
    failures = []
    for hub, groups in hubs_from_env().items():
        sent = send(connection_string, hub)
        for group in groups:
            started = time.monotonic()
            got = read_back(connection_string, hub, group, sent)
            missing = sent - got
            status = "ok" if not missing else f"missing {sorted(missing)}"
            print(f"{hub} / {group}: {len(got & sent)} of {len(sent)} read back "
                  f"in {time.monotonic() - started:.1f} s: {status}", flush=True)
            if missing:
                failures.append(f"{hub}/{group}")
    if failures:
        print(f"FAILED: {failures}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
