"""Partitioners and the router: which records are misrouted, and where they go."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.config import load_config
from streams.kafka.copartition import (
    Router,
    crc32_partition,
    forward_headers,
    murmur2,
    murmur2_partition,
    source_kind,
)


@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_murmur2_is_the_partition_aiokafka_and_the_java_producer_pick(
    key: bytes, partitions: int
) -> None:
    everyone = list(range(partitions))
    assert murmur2_partition(key, partitions) == DefaultPartitioner()(key, everyone, everyone)


@given(key=st.binary(max_size=200))
def test_murmur2_is_aiokafkas_hash_of_every_key(key: bytes) -> None:
    # Every length modulo 4 (the tail bytes), the empty key and long ones.
    assert murmur2(key) == aiokafka_murmur2(key)


def test_crc32_is_librdkafkas_consistent_partitioner() -> None:
    # librdkafka hashes the key with CRC-32 (IEEE) and takes it modulo the partition count;
    # tests/integration/test_copartitioning.py checks it against a real librdkafka producer.
    assert crc32_partition(b"cust-1", 8) == zlib.crc32(b"cust-1") % 8
    assert crc32_partition(b"123456789", 1000) == 0xCBF43926 % 1000  # the CRC-32 check value


def _keys_where_partitioners_differ(partitions: int, n: int) -> list[bytes]:
    keys = (f"c-{i}".encode() for i in range(10_000))
    found = [k for k in keys if murmur2_partition(k, partitions) != crc32_partition(k, partitions)]
    return found[:n]


@pytest.mark.parametrize("mode", ["misrouted", "all", "off"])
def test_a_misrouted_record_is_counted_in_every_mode_and_forwarded_unless_off(mode: str) -> None:
    counted: list[str] = []
    router = Router({"acc": "murmur2", "use": "murmur2"}, 4, mode, counted.append)
    key = _keys_where_partitioners_differ(4, 1)[0]
    right, wrong = murmur2_partition(key, 4), crc32_partition(key, 4)
    # Where its partitioner puts it: applied there, unless every record takes the hop.
    assert router.target("acc", right, 0, key) == (right if mode == "all" else None)
    assert counted == []
    # Where another partitioner put it: counted, and forwarded to its partition unless off.
    assert router.target("acc", wrong, 1, key) == (None if mode == "off" else right)
    assert counted == ["acc"]


def test_each_topic_is_checked_against_its_own_partitioner() -> None:
    counted: list[str] = []
    router = Router({"acc": "crc32", "use": "murmur2"}, 4, "misrouted", counted.append)
    for key in _keys_where_partitioners_differ(4, 20):
        assert router.target("acc", crc32_partition(key, 4), 0, key) is None
        assert router.target("use", murmur2_partition(key, 4), 0, key) is None
    assert counted == []


def test_a_record_without_key_is_left_to_the_dead_letters() -> None:
    router = Router({"acc": "murmur2"}, 4, "all", lambda topic: None)
    assert router.target("acc", 0, 0, None) is None


def test_misrouted_records_are_logged_in_a_summary_not_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    router = Router({"acc": "murmur2"}, 4, "misrouted", lambda t: None, clock=lambda: now[0])
    keys = _keys_where_partitioners_differ(4, 50)
    with caplog.at_level(logging.WARNING, logger="streams.kafka.copartition"):
        for i, key in enumerate(keys):
            router.target("acc", crc32_partition(key, 4), i, key)
        now[0] = 61.0
        router.target("acc", crc32_partition(keys[0], 4), 99, keys[0])  # the next interval
    lines = [r.getMessage() for r in caplog.records]
    # The first in full (where, and where it belongs), then one summary of the interval.
    assert len(lines) == 3, lines
    assert "acc[" in lines[0] and "belongs to partition" in lines[0]
    assert f"{len(keys)} records" in lines[1] and f"acc {len(keys)}" in lines[1]


def test_a_forwarded_record_keeps_its_kind() -> None:
    assert source_kind(forward_headers("acc", "account", 3, 17)) == "account"
    assert source_kind(forward_headers("use", "usage", 3, 17)) == "usage"
    assert dict(forward_headers("acc", "account", 3, 17))["lt-source"] == b"acc[3]@17"


def test_repartition_off_unquoted_in_yaml_means_off(tmp_path: Path) -> None:
    # YAML 1.1 reads an unquoted off as false; the docs write `stream.repartition: off`.
    config = tmp_path / "c.yaml"
    config.write_text("stream:\n  repartition: off\n")
    assert load_config(config)["stream"]["repartition"] == "off"
