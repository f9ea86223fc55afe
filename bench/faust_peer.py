"""The Faust peer: the plain Faust way of writing this kind of job, for the throughput bench.

One agent over both input topics, ``async for event in stream`` with a ``faust.Record`` per
event (Faust's JSON codec), a table read and a table write per event (memory store, a small
Record per customer), and an output record for the events a job like ours acts on (renewals,
complaints, engagement: about 8 % of the mix). Automatic acks, Faust's defaults otherwise, except
what Tansu needs (short group timeouts; one record per producer batch, as the worker has, so that
a table's changelog recovery is correct on this broker).

Run by bench/throughput_bench.py as ``python bench/faust_peer.py worker``; configured by PEER_*
environment variables. When it has consumed PEER_EXPECT events it writes its figures (monotonic
times and CPU of its first and last event, peak RSS) as JSON to PEER_RESULT.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import faust
import orjson

BROKER = os.environ.get("PEER_BROKER", "127.0.0.1:9092")
TOPICS = os.environ.get("PEER_TOPICS", "account-events,usage-events").split(",")
OUTPUT = os.environ.get("PEER_OUTPUT", "peer-output")
EXPECT = int(os.environ.get("PEER_EXPECT", "0"))
RESULT = Path(os.environ.get("PEER_RESULT", "peer-result.json"))
PARTITIONS = int(os.environ.get("PEER_PARTITIONS", "8"))
ACTED_ON = frozenset({"auto_renew_charged", "complaint", "engagement", "contract"})

app = faust.App(
    os.environ.get("PEER_APP_ID", "faust-peer"),
    broker=f"kafka://{BROKER}",
    store="memory://",
    autodiscover=False,
    web_enabled=False,
    topic_partitions=PARTITIONS,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=4.0,
    broker_heartbeat_interval=0.5,
    producer_max_batch_size=1 if os.environ.get("PEER_TANSU", "1") == "1" else 16384,
)


class InputEvent(faust.Record, serializer="json"):
    """Both topics' events: the common fields, and the ones the job reads (others are kept)."""

    event_id: str
    customer_id: str
    type: str
    occurred_at: str
    amount: float | None = None
    balance: float | None = None
    contract_id: str | None = None


class CustomerSummary(faust.Record, serializer="json"):
    events: int = 0
    last_type: str = ""
    last_at: str = ""
    spent: float = 0.0
    balance: float = 0.0


source = app.topic(*TOPICS, key_type=bytes, value_type=InputEvent, partitions=PARTITIONS)
output = app.topic(OUTPUT, key_type=bytes, value_serializer="raw")
customers = app.Table("customers", default=None, partitions=PARTITIONS, value_type=CustomerSummary)

progress = {"count": 0, "t0": 0.0, "cpu0": 0.0}


def _peak_rss_mb() -> float:
    """VmHWM (ru_maxrss would include the forking parent's peak: it survives execve)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@app.agent(source)
async def process(stream: faust.StreamT[InputEvent]) -> None:
    async for event in stream:
        if progress["count"] == 0:
            progress["t0"], progress["cpu0"] = time.monotonic(), _cpu()
        summary = customers.get(event.customer_id) or CustomerSummary()
        summary.events += 1
        summary.last_type = event.type
        summary.last_at = event.occurred_at
        if event.amount is not None:
            summary.spent += event.amount
        if event.balance is not None:
            summary.balance = event.balance
        customers[event.customer_id] = summary
        if event.type in ACTED_ON:
            await output.send(
                key=event.customer_id.encode(),
                value=orjson.dumps({"customer_id": event.customer_id, "trigger": event.type}),
            )
        progress["count"] += 1
        if progress["count"] == EXPECT:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            RESULT.write_bytes(
                orjson.dumps(
                    {
                        "events": EXPECT,
                        "t0": progress["t0"],
                        "t1": time.monotonic(),
                        "cpu": usage.ru_utime + usage.ru_stime - progress["cpu0"],
                        "peak_rss_mb": _peak_rss_mb(),
                    }
                )
            )


if __name__ == "__main__":
    app.main()
