"""The quix-streams peer: the same job as the Faust peer, written the way quix-streams' docs show.

A ``StreamingDataFrame`` per input topic, concatenated (quix-streams then aligns the two topics'
partitions by timestamp and keeps one state store for both), a stateful ``apply`` that reads
and writes the customer's summary in its state (RocksDB, with a changelog topic: the library's
defaults), and for the events a job like ours acts on (renewals, complaints, engagement,
contracts: about 8 % of the mix) an output record per event with ``to_topic``. JSON values,
at-least-once, quix-streams' defaults otherwise, except what this broker needs:

- Tansu answers DescribeConfigs without ``retention.ms``; quix-streams reads it from each input
  topic to configure the changelog topic of a stateful step (``TopicManager.derive_topic_config``
  raises KeyError without it), so each input topic's broker config is given here, with Kafka's
  default retention;
- the consumer group joins with a short session timeout, like the other processes of the bench.

Run by bench/throughput_bench.py with an interpreter that has quixstreams (``make bench`` puts
it in .venv-quix: quixstreams 3.28.1 needs confluent-kafka < 2.13, the dev tools 2.16);
configured by PEER_* environment variables. When it has processed PEER_EXPECT events it writes
its figures (monotonic times and CPU of its first and last event, peak RSS) as JSON to
PEER_RESULT.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application, State
from quixstreams.models.topics import TopicConfig

BROKER = os.environ.get("PEER_BROKER", "127.0.0.1:9092")
TOPICS = os.environ.get("PEER_TOPICS", "account-events,usage-events").split(",")
OUTPUT = os.environ.get("PEER_OUTPUT", "peer-output")
EXPECT = int(os.environ.get("PEER_EXPECT", "0"))
RESULT = Path(os.environ.get("PEER_RESULT", "peer-result.json"))
PARTITIONS = int(os.environ.get("PEER_PARTITIONS", "8"))
STATE_DIR = os.environ.get("PEER_STATE_DIR", "quix-state")
ACTED_ON = frozenset({"auto_renew_charged", "complaint", "engagement", "contract"})
# Kafka's default retention (7 days), for the changelog topic quix-streams derives from it.
INPUT_TOPIC_CONFIG = TopicConfig(
    num_partitions=PARTITIONS,
    replication_factor=1,
    extra_config={"retention.ms": "604800000", "retention.bytes": "-1"},
)

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


def summarize(event: dict[str, Any], state: State) -> dict[str, Any]:
    """The customer's summary in the state (keyed by the record key, the customer id)."""
    if progress["count"] == 0:
        progress["t0"], progress["cpu0"] = time.monotonic(), _cpu()
    summary = state.get("summary") or {
        "events": 0,
        "last_type": "",
        "last_at": "",
        "spent": 0.0,
        "balance": 0.0,
    }
    summary["events"] += 1
    summary["last_type"] = event["type"]
    summary["last_at"] = event["occurred_at"]
    if event.get("amount") is not None:
        summary["spent"] += event["amount"]
    if event.get("balance") is not None:
        summary["balance"] = event["balance"]
    state.set("summary", summary)
    return event


def counted(event: dict[str, Any]) -> None:
    progress["count"] += 1
    if progress["count"] == EXPECT:
        RESULT.write_bytes(
            orjson.dumps(
                {
                    "events": EXPECT,
                    "t0": progress["t0"],
                    "t1": time.monotonic(),
                    "cpu": _cpu() - progress["cpu0"],
                    "peak_rss_mb": _peak_rss_mb(),
                }
            )
        )


def build() -> Application:
    app = Application(
        broker_address=BROKER,
        consumer_group=os.environ.get("PEER_APP_ID", "quix-peer"),
        auto_offset_reset="earliest",
        state_dir=STATE_DIR,
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 4000, "heartbeat.interval.ms": 500},
    )
    frames = []
    for name in TOPICS:
        topic = app.topic(name, key_deserializer="str", value_deserializer="json")
        topic.broker_config = INPUT_TOPIC_CONFIG
        frames.append(app.dataframe(topic))
    output = app.topic(OUTPUT, key_serializer="str", value_serializer="json")
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.apply(summarize, stateful=True)
    sdf = sdf.update(counted)
    sdf = sdf.filter(lambda event: event["type"] in ACTED_ON)
    sdf = sdf.apply(lambda event: {"customer_id": event["customer_id"], "trigger": event["type"]})
    sdf.to_topic(output)
    return app


if __name__ == "__main__":
    build().run()
