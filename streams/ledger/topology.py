"""Reaching Redis: a ledger URL becomes a client for a single instance, Sentinel or Cluster,
and every way of not reaching it becomes ``LedgerUnavailable``.

One URL setting reaches the three deployments (``streams.ledger.redis_url``): a single instance
(``redis://``, ``rediss://``, ``unix://``), Redis Cluster (``redis+cluster://h1:p1,h2:p2``; the
script runs on the node owning the customer's slot, picked by the first key) and Redis Sentinel
(``redis+sentinel://s1:p1,s2:p2/service_name``; the client asks the sentinels for the current
primary). A failover shows as ``LedgerUnavailable`` until the new primary answers; the caller's
retry then gets the first outcome of every decision id the old primary had recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

from streams.core.errors import LifecycleError
from streams.ledger.redis_url import parse

T = TypeVar("T")


class LedgerUnavailable(LifecycleError):
    """Redis cannot be reached (down, failing over, refusing our credentials): nothing was
    decided or recorded that the caller can rely on. Pause and retry the same call later."""


class LedgerRefused(LedgerUnavailable):
    """Redis answered but refused us: wrong password or ACL user, or the user may not run the
    ledger's commands. Retrying will not help until the configuration changes; a start-up
    check should fail on it (a caller that only knows LedgerUnavailable still retries)."""


# Errors that mean "no primary can take this call right now" (server-side replies, or the
# cluster client's view of them): a failover in progress, a slot without a serving node.
_NOT_READY_REPLIES = ("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")
_CLUSTER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.SlotNotCoveredError,
)

LedgerClient = aioredis.Redis | RedisCluster


def connect(url: str, timeout: float = 5.0) -> tuple[LedgerClient, list[aioredis.Redis]]:
    """A client for a ledger URL of any kind (see ``streams.ledger.redis_url``), plus the sentinel
    clients to close with it. Connects lazily: nothing is sent before the first command."""
    target = parse(url)
    if target.kind == "single":
        # Few, quick retries: a decision retried after a dropped connection is idempotent,
        # and longer outages are the caller's to wait out (it pauses the stream).
        client = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        return client, []
    if target.kind == "cluster":
        # No retries inside the client: each ledger call is one attempt on the node that owns
        # the slot, and the caller waits out a failover (the client refreshes its slot map
        # after the error). It also keeps EVALSHA and WAIT on one connection (see _evalsha).
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            **target.options,
        )
        return cluster, []
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **target.sentinel_options,
        },
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        **target.options,
    )
    return sentinel.master_for(target.service_name), list(sentinel.sentinels)


def describe_client(client: LedgerClient) -> str:
    if isinstance(client, RedisCluster):
        nodes = ",".join(f"{n.host}:{n.port}" for n in client.get_nodes()[:3])
        return f"redis cluster at {nodes or '?'}"
    kwargs = client.connection_pool.connection_kwargs
    return f"redis at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


async def guarded(call: Callable[[], Awaitable[T]], where: str, client: LedgerClient) -> T:
    """Run one Redis call on ``client`` (``where`` names it in errors, without secrets): every
    way of not reaching Redis becomes ``LedgerUnavailable``, a refusal ``LedgerRefused``."""
    try:
        return await call()
    except rex.AuthenticationError:
        raise LedgerRefused(
            f"{where} refused our credentials (wrong password or ACL user name in the Redis URL)"
        ) from None
    except rex.NoPermissionError as exc:
        raise LedgerRefused(
            f"{where}: the Redis user may not run the ledger's commands ({exc})"
        ) from None
    except (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError) as exc:
        raise LedgerUnavailable(f"{where} cannot be reached: {exc}") from exc
    except _CLUSTER_UNAVAILABLE as exc:
        raise LedgerUnavailable(f"{where} is not ready: {exc}") from exc
    except rex.RedisClusterException as exc:
        # The bare class is what the cluster client raises when no seed node answers; its
        # subclasses left (cross-slot and pipeline misuse) are bugs, not outages.
        if type(exc) is not rex.RedisClusterException:
            raise
        raise LedgerUnavailable(f"{where} cannot be reached: {exc}") from exc
    except rex.MovedError as exc:
        if isinstance(client, RedisCluster):
            # The slot moved between our map and the call: drop the map (it is read again).
            await client.aclose()
            raise LedgerUnavailable(f"{where}: slot moved ({exc})") from exc
        raise LedgerUnavailable(
            f"{where} is a Redis Cluster node (it answered MOVED): use a redis+cluster:// URL"
        ) from None
    except rex.ResponseError as exc:
        # A server that is loading, failing over or has no master cannot decide either.
        if str(exc).split(" ", 1)[0] in _NOT_READY_REPLIES:
            raise LedgerUnavailable(f"{where} is not ready: {exc}") from exc
        raise
