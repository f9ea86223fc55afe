"""The contact ledger: the policy applied atomically in Redis, shared by every business unit.

The package's modules: ``decide`` (``ContactLedger``: the decide API and the calls recording
what else the ledger hears, around the one script ``ledger.lua``), ``keys`` (the Redis keys of
a customer, all in its Redis Cluster slot), ``topology`` (a ledger URL to a client for a single
instance, Sentinel or Cluster; Redis errors to ``LedgerUnavailable``), ``pipeline`` (calls of
one event-loop turn as one pipeline), ``view`` (the read-side summary ``ledger show`` prints),
``redis_url``, ``gate`` and ``cli``. The public names are re-exported here.
"""

from streams.ledger.decide import CONSENT_STATUSES, SCRIPT, SCRIPT_SHA, ContactLedger
from streams.ledger.keys import KEY_PARTS, check_namespace, customer_keys, outside_contact_id
from streams.ledger.topology import LedgerClient, LedgerRefused, LedgerUnavailable, connect

__all__ = [
    "CONSENT_STATUSES",
    "KEY_PARTS",
    "SCRIPT",
    "SCRIPT_SHA",
    "ContactLedger",
    "LedgerClient",
    "LedgerRefused",
    "LedgerUnavailable",
    "check_namespace",
    "connect",
    "customer_keys",
    "outside_contact_id",
]
