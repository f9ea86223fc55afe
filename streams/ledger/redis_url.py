"""The contact ledger's Redis URL: one setting for the three deployments users have.

- A single instance (or a managed primary behind one address): ``redis://[user:password@]host:
  port/db``, ``rediss://`` for TLS, ``unix:///path/redis.sock``.
- Redis Cluster: ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster``
  for TLS). Any reachable node serves as a seed; the client learns the topology, follows slot
  moves and failovers. Cluster mode has only database 0.
- Redis Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``
  (``rediss+sentinel`` for TLS to the data nodes and the sentinels). The user and password are
  the data nodes'; sentinels that want their own take ``sentinel_username`` and
  ``sentinel_password`` query parameters.

Query parameters pass through as redis-py connection options (``socket_timeout``,
``ssl_cert_reqs=required``, ``ssl_ca_certs=/path/ca.pem``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_check_hostname``, ...). ``mask`` hides every password of any of these forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from streams.core.errors import ConfigError

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES
SECRET_QUERY_KEYS = ("password", "sentinel_password")

_SECRET_QUERY = re.compile(
    r"(?P<key>(?:^|[?&;])(?:" + "|".join(SECRET_QUERY_KEYS) + r")=)(?P<value>[^&;#]*)"
)


def mask(url: str) -> str:
    """The URL with every password (user info and secret query parameters) replaced by ***.

    Pure text work, so that it never fails on a malformed URL (it is used in error messages).
    """
    # Only the authority part can hold user info: cut at the first "/" after "://".
    head, sep, rest = url.partition("://")
    if sep:
        authority, slash, tail = rest.partition("/")
        at = authority.rfind("@")
        if at >= 0:
            userinfo = authority[:at]
            user, colon, _ = userinfo.partition(":")
            if colon:
                authority = f"{user}:***{authority[at:]}"
        url = f"{head}{sep}{authority}{slash}{tail}"
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", url)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ledger URL: which kind of deployment, where, and the connection options."""

    kind: str  # "single", "cluster" or "sentinel"
    url: str = field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    sentinel_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def masked(self) -> str:
        return mask(self.url)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme.startswith("rediss")


def _nodes(netloc: str, what: str, url: str) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "6379" if what == "cluster" else "26379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ConfigError(f"{mask(url)}: {what} node {item!r} is not host:port")
        nodes.append((host, int(port)))
    return tuple(nodes)


def _options(url: str, scheme: str, query: str) -> dict[str, Any]:
    """Connection options of a cluster/sentinel URL, parsed the way redis-py parses a plain one
    (same query parameter names and types)."""
    from redis.asyncio.connection import parse_url

    base = "rediss" if scheme.startswith("rediss") else "redis"
    netloc = urlsplit(url).netloc
    userinfo = netloc.rpartition("@")[0]
    kept = urlencode(
        [(k, v) for k, v in parse_qsl(query) if not k.startswith("sentinel_")], safe="/"
    )
    single = f"{base}://{userinfo + '@' if userinfo else ''}placeholder:1/?{kept}"
    try:
        options: dict[str, Any] = dict(parse_url(single))
    except ValueError as exc:
        raise ConfigError(f"{mask(url)}: {exc}") from None
    for name in ("host", "port", "db"):
        options.pop(name, None)
    if options.pop("connection_class", None) is not None:
        options["ssl"] = True  # the cluster and sentinel clients pick their own classes
    return options


def _check_single(url: str, scheme: str) -> None:
    """Refuse what redis-py would fail on only at the first connection (a port that is not a
    number), or read otherwise than written: port 0 and a database path that is not a number
    both silently become the defaults (port 6379, database 0)."""
    from redis.asyncio.connection import parse_url

    parts = urlsplit(url)
    if scheme != "unix":
        port = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")
        if port[1] and (not port[2].isdigit() or not 0 < int(port[2]) < 65_536):
            raise ConfigError(f"{mask(url)}: port {port[2]!r} is not a number from 1 to 65535")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ConfigError(
                f"{mask(url)}: the path must be a database number (/0, /1, ...), got {parts.path!r}"
            )
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"{mask(url)}: {exc}") from None


def parse(url: str) -> RedisTarget:
    """Parse a ledger URL of any of the three kinds; raises ConfigError saying what is wrong
    (with the password masked)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{mask(url)}: must start with one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if scheme in SINGLE_SCHEMES:
        _check_single(url, scheme)
        return RedisTarget("single", url)
    if scheme in CLUSTER_SCHEMES:
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigError(f"{mask(url)}: Redis Cluster has only database 0")
        return RedisTarget(
            "cluster",
            url,
            nodes=_nodes(parts.netloc, "cluster", url),
            options=_options(url, scheme, parts.query),
        )
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(
            f"{mask(url)}: a Sentinel URL ends in /service_name or /service_name/db "
            "(the name the sentinels monitor, e.g. /mymaster)"
        )
    options = _options(url, scheme, parts.query)
    if len(path) == 2:
        options["db"] = int(path[1])
    sentinel_options: dict[str, Any] = {
        k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))
    }
    for key, value in parse_qsl(parts.query):
        if key in ("sentinel_username", "sentinel_password"):
            sentinel_options[key.removeprefix("sentinel_")] = unquote(value)
    return RedisTarget(
        "sentinel",
        url,
        nodes=_nodes(parts.netloc, "sentinel", url),
        service_name=unquote(path[0]),
        options=options,
        sentinel_options=sentinel_options,
    )
