"""Batching: the ledger calls issued in one turn of the event loop go out as one pipeline, in
the Redis protocol (RESP) written directly."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex


class Pipeliner:
    """Runs the ledger calls issued in one turn of the event loop as one pipeline.

    The worker decides many customers at once; one round trip (and one connection checkout,
    one socket write) for all of them instead of one per call. Each call keeps its own result
    or error: a pipeline that fails as a whole fails every call in it, and the caller's
    retry (``LedgerGate``) repeats each, which is safe because ledger calls are idempotent. A
    customer's calls stay in order because the caller issues the next only after the previous
    answered. Not used on a cluster (each customer's slot may live on another node) or with
    ``WAIT`` (which must follow its own write on its connection).

    The pipeline is written and read on a pooled connection of the client directly
    (``_exchange``), not through redis-py's ``Pipeline``: that builds a command stack, packs
    every argument through its encoder, and for each reply takes a timer, a response callback
    lookup and its observability hooks; the worker makes a ledger call for about one event in
    ten. Here the calls are packed at once and all replies share one deadline (the socket
    timeout). Same replies, same errors (an error reply is that call's exception; a connection
    error or timeout is retried like the client's own commands, then fails the whole pipeline;
    a connection that timed out or was cancelled part-way is closed, never reused), and less
    client CPU per call (tests: ``test_pipelined_calls_answer_as_redis_py_does``,
    ``test_a_stalled_redis_times_out_and_never_mixes_up_replies``).
    """

    def __init__(self, client: aioredis.Redis, script_sha: str) -> None:
        self._client = client
        self._head = _evalsha_head(script_sha)
        self._queued: list[tuple[list[str], Sequence[str | int], asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def evalsha(self, keys: list[str], args: Sequence[str | int]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._launch)
        self._queued.append((keys, args, future))
        return future

    def _launch(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(queued))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(
        self, queued: list[tuple[list[str], Sequence[str | int], asyncio.Future[Any]]]
    ) -> None:
        try:
            results = await self._exchange([(keys, args) for keys, args, _ in queued])
        except asyncio.CancelledError:
            for *_, future in queued:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every call gets the error it would have got
            for *_, future in queued:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(queued, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _exchange(self, calls: list[tuple[list[str], Sequence[str | int]]]) -> list[Any]:
        """Send the calls as one write and read a reply (or an error reply) for each."""
        pool = self._client.connection_pool
        conn = await pool.get_connection()
        try:
            encoder = conn.encoder
            packed = b"".join(
                pack_evalsha(self._head, keys, args, encoder.encoding, encoder.encoding_errors)
                for keys, args in calls
            )

            async def once() -> list[Any]:
                await conn.send_packed_command(packed)
                replies: list[Any] = []
                try:
                    # One deadline for all the replies, not a timer per reply.
                    async with asyncio.timeout(conn.socket_timeout):
                        for _ in calls:
                            try:
                                replies.append(await conn.read_response(timeout=math.inf))
                            except rex.ResponseError as exc:  # a whole reply: still in step
                                replies.append(exc)
                except TimeoutError:  # the retry's failed() closes the connection
                    raise rex.TimeoutError("Timeout reading the ledger's replies") from None
                return replies

            async def failed(error: Exception) -> None:
                await conn.disconnect()

            # Connection errors and timeouts: reconnect and send again (ledger calls are
            # idempotent), as redis-py's own commands and pipelines do with the client's retry.
            return await conn.retry.call_with_retry(once, failed)
        except BaseException:
            # Cancelled or failed part-way: replies may still be on their way. Never hand the
            # connection back in that state.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)


def _evalsha_head(script_sha: str) -> bytes:
    if len(script_sha) != 40:
        raise ValueError(f"a script's SHA1 has 40 hex digits: {script_sha!r}")
    return b"$7\r\nEVALSHA\r\n$40\r\n" + script_sha.encode() + b"\r\n"


def pack_evalsha(
    head: bytes, keys: Sequence[str], args: Sequence[str | int], encoding: str, errors: str
) -> bytes:
    """``EVALSHA <sha> <numkeys> <keys...> <args...>`` in the Redis protocol (``head`` is the
    command and the script's SHA1), each argument as redis-py's encoder writes it (str in the
    client's encoding, int and float as their repr)."""
    items: list[bytes] = [b"%d" % len(keys)]
    for value in (*keys, *args):
        if isinstance(value, str):
            items.append(value.encode(encoding, errors))
        elif isinstance(value, bytes):
            items.append(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            items.append(repr(value).encode())
        else:
            raise TypeError(f"ledger script argument {value!r}: must be str, bytes, int or float")
    parts = [b"*%d\r\n" % (len(items) + 2), head]
    parts.extend(b"$%d\r\n%b\r\n" % (len(item), item) for item in items)
    return b"".join(parts)
