"""The pure core: events, state, triggers, policy, ordering, the due index, pending writes.

No Kafka, Redis, YAML or Prometheus here: ``tests/unit/test_layout.py`` checks it.
"""
