"""The end of one batch, in the order that makes a crash at any point safe.

A batch's rest (``streams/kafka/fastpath.py``: ``BatchHandler``) settles what the batch did. Its
order is the crash guarantee: whatever a crash leaves undone is redone from the committed input
offsets, and nothing a later step depends on can be missing after an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from faust.types import TP

from streams.kafka.containment import DeadLetterOut, Sent
from streams.kafka.fastpath import BatchedChangelog, send_in_order
from streams.kafka.processor import Processor, SealedBatch


class Acks(Protocol):
    """What a checkpoint needs of the consumer (``fastpath.BatchConsumer``)."""

    epoch: int

    @property
    def seeks(self) -> int: ...

    def ack_offsets(self, tp: TP, offsets: Iterable[int]) -> object: ...


class Checkpoint:
    """One batch's decisions, state, changelogs, dead letters and input offsets, settled in
    this order by ``commit``:

    1. Decisions: every customer's ledger work of the batch ends, and the broker acknowledges
       every decision it produced (``Processor.finish``). A failure raises: the unwritten state
       of this batch and of later ones is dropped, and no input offset is acked.
    2. State: the batch's writes go to the table stores, of each partition that is still ours
       (no rebalance or seek since the batch was fetched, the partition still assigned); the
       writes of any other partition are dropped.
    3. Changelogs: the customer records' writes are produced to their changelog; the derived
       ones (due index, stream time) only once the broker holds all of those
       (``fastpath.send_in_order``). The derived changelogs' acknowledgements are not waited
       for here: Faust flushes the producer before every offset commit.
    4. Dead letters: the broker acknowledges the batch's dead letters (``DeadLetterOut.settle``:
       one that can never be sent is skipped, counted).
    5. Offsets: unless a rebalance or a seek came meanwhile, the batch's input offsets are acked
       to Faust's bookkeeping (``BatchConsumer.ack_offsets``); Faust commits them later (every
       commit interval, or after ``commit_every`` acks), after flushing the producer, up to the
       first offset not acked. After a rebalance or a seek nothing is acked (``commit`` returns
       False) and the caller drops what it holds: the input is read again.

    Records forwarded to the repartition topic were handed to the producer while the batch was
    applied; like the derived changelogs, Faust's flush before the commit covers them.
    """

    def __init__(
        self,
        *,
        processor: Processor,
        sealed: SealedBatch,
        changelogs: Sequence[BatchedChangelog],
        producer: Callable[[], Any],
        dead_letters: DeadLetterOut,
        letters: Sent,
        consumer: Acks,
        epoch: int,
        seeks: int,
        owned: Callable[[], Any],
        offsets: Sequence[tuple[TP, int]],
    ) -> None:
        self._processor = processor
        self._sealed = sealed
        self._changelogs = changelogs
        self._producer = producer
        self._dead_letters = dead_letters
        self._letters = letters
        self._consumer = consumer
        self.epoch = epoch
        self.seeks = seeks
        self._owned = owned
        self.offsets = offsets

    def current(self) -> bool:
        """Whether no rebalance and no seek came since the batch was fetched."""
        consumer = self._consumer
        return consumer.epoch == self.epoch and consumer.seeks == self.seeks

    def _still_ours(self, partition: int) -> bool:
        return self.current() and partition in self._owned()

    async def commit(self) -> bool:
        """Settle the batch (see the class); False when a rebalance or seek left it unacked."""
        await self._processor.finish(self._sealed, self._still_ours)
        # What was written belongs to partitions still ours: its changelog goes out even if a
        # rebalance starts now.
        first, *then = self._changelogs
        await send_in_order(self._producer(), first, then)
        await self._dead_letters.settle(self._letters)
        if not self.current():
            return False
        # One ack call per topic-partition (each offset in its order), not one per record.
        by_tp: dict[TP, list[int]] = {}
        for tp, offset in self.offsets:
            offsets = by_tp.get(tp)
            if offsets is None:
                by_tp[tp] = [offset]
            else:
                offsets.append(offset)
        ack = self._consumer.ack_offsets
        for tp, offsets in by_tp.items():
            ack(tp, offsets)
        return True
