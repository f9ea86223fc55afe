"""The ledger's Redis keys: one customer's keys share its Redis Cluster hash slot.

Keys are ``<namespace>:{<customer_id>}:<part>``; the parts are ``KEY_PARTS`` in the order the
script takes them, then the one counting the marketing contacts of a business unit.
"""

from __future__ import annotations

import binascii
import functools
import hashlib

from redis.crc import key_slot

from streams.core.policy import DEFAULT_BUSINESS_UNIT

KEY_PARTS = ("dec", "idx", "mk", "tr", "cmp", "st")
CLUSTER_SLOTS = 16384

# Customer ids and business units are free text, and a key is read back by Redis Cluster (the
# hash tag runs from the first "{" to the next "}") and by whoever sees it. Plain text is written
# as it is; an identifier holding its field's delimiter is percent-escaped and its field marked
# with a "%" that the plain form can never have there:
#
#   customer (delimiter "}"):  <ns>:{<id>}:<part>           <ns>:%{<esc(id)>}:<part>
#   business unit ("}"):       ...:bu:<unit>                 ...:bu%:<esc(unit)>
#   outside contact id (":"):  x:<unit>:<contact_id>         x%:<esc(unit)>:<contact_id>
#
# esc() escapes "%" first, so it is injective, and leaves no "{", "}" or ":". Then:
# - a key names one (customer, part): the namespace (no "{", "}" or ":") ends at the first ":",
#   the tag at the first "}" after it, and what follows is the part, "bu:" and "bu%:" apart;
# - the hash tag is the (escaped) customer id, whatever the part or business unit: every key of
#   a customer is in that customer's slot;
# - the plain forms are exactly the keys and ids of the release before, and only identifiers
#   holding their delimiter changed. So a ledger written before keeps working as it is, with no
#   migration and no second format to read, and old and new workers of a rolling deploy share
#   every plain customer's ledger. The keys that change were ambiguous before (``V}:bu:u``'s
#   decision hash was ``V``'s contacts of unit ``u}:dec``): the new ones never read them, and they
#   expire with their retention (a state hash with an opt-out is kept, and then ignored).
# Escaping every identifier (a "v2" prefix) would have changed every key, and a cluster would
# have moved the customer ids holding ":" or spaces to other slots, out of reach of one script
# call that could read both formats; "%" keeps ids readable ("crm:42" stays "crm:42").
_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in "%{}:"})


def _marked(text: str, delimiter: str) -> tuple[str, str]:
    """(marker, text) for a field that ``delimiter`` would end: plain text as it is."""
    if delimiter not in text:
        return "", text
    return "%", text.translate(_ESCAPES)


def keys_for(namespace: str, customer_id: str, business_unit: str) -> list[str]:
    """``customer_keys`` for a namespace already checked (the ledger checks it once)."""
    if not customer_id:
        # An empty hash tag "{}" hashes the whole key: the parts would land in different slots.
        raise ValueError("customer_id must not be empty")
    mark, tag = _marked(customer_id, "}")
    prefix = f"{namespace}:{mark}{{{tag}}}:"
    mark, unit = _marked(business_unit, "}")
    return [*(prefix + part for part in KEY_PARTS), f"{prefix}bu{mark}:{unit}"]


def check_namespace(namespace: str) -> None:
    """A ledger namespace: non-empty, without "{", "}" or ":" (it ends at the first ":")."""
    if not namespace or any(c in namespace for c in "{}:"):
        raise ValueError(f"namespace must be non-empty without '{{', '}}' or ':': {namespace!r}")


def customer_keys(
    namespace: str, customer_id: str, business_unit: str = DEFAULT_BUSINESS_UNIT
) -> list[str]:
    """A customer's ledger keys in ``namespace``, in the order the script takes them: the
    parts of ``KEY_PARTS``, then the one counting the marketing contacts of ``business_unit``.
    All share the customer's hash slot; different (customer, part, unit) never share a key."""
    check_namespace(namespace)
    return keys_for(namespace, customer_id, business_unit)


def outside_contact_id(business_unit: str, contact_id: str) -> str:
    """The ledger's id of a contact another business unit made: one per (unit, contact id)."""
    mark, unit = _marked(business_unit, ":")
    return f"x{mark}:{unit}:{contact_id}"


# -- capacity counters ---------------------------------------------------------------------------
#
# ``policy.capacity`` limits the contacts of an action per calendar day across all customers,
# decided in the customer's script call, which may only touch keys of the customer's slot on a
# Redis Cluster. So the day's limit is split into one counter per slot, each with its share:
#
#   <ns>:{<slot tag>}:capacity:<action>:<day>     <slot tag>: a short tag hashing to that slot
#
# Slot s gets floor(N (r + 1) / 16384) - floor(N r / 16384) of the limit N, where r is s shifted
# by a hash of (action, day): the shares sum to exactly N, so the day's contacts never exceed
# N; the error is all on the other side: a candidate is refused when its own slot's share is
# used up, while other slots may have some left (N < 16384 gives shares of 0 and 1, and which
# slots get a 1 moves every day; a large N spreads evenly). A single instance (or Sentinel)
# has no slots: one counter per (action, day), exact:
#
#   <ns>:capacity:<action>:<day>
#
# Neither form can be a customer's key: after "<ns>:" those begin with "{" or "%{" and end
# with a part of KEY_PARTS or "bu"; a slot tag that equals a customer id only shares its slot.


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each cluster slot, the lowest hex number that hashes to it (up to 5 digits)."""
    tags: list[str | None] = [None] * CLUSTER_SLOTS
    left, i = CLUSTER_SLOTS, 0
    while left:
        tag = b"%x" % i
        slot = binascii.crc_hqx(tag, 0) % CLUSTER_SLOTS  # Redis Cluster's CRC16 (XMODEM)
        if tags[slot] is None:
            tags[slot] = tag.decode()
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def prepare_slot_tags() -> None:
    """Compute the slot tags now (a few hundred ms once), not in the first decision."""
    _slot_tags()


def slot_of(key: str) -> int:
    """The Redis Cluster slot of a key."""
    return int(key_slot(key.encode()))


def capacity_key(namespace: str, action: str, day: str, slot: int | None) -> str:
    """The counter of ``action``'s contacts on ``day``: of one cluster slot, or (None) of all."""
    if slot is None:
        return f"{namespace}:capacity:{action}:{day}"
    return f"{namespace}:{{{_slot_tags()[slot]}}}:capacity:{action}:{day}"


def capacity_share(per_day: int, slot: int, action: str, day: str) -> int:
    """Slot ``slot``'s share of a day's limit ``per_day`` (the shares of all slots sum to it)."""
    digest = hashlib.sha256(f"{action}|{day}".encode()).digest()
    r = (slot + int.from_bytes(digest[:4], "big")) % CLUSTER_SLOTS
    return per_day * (r + 1) // CLUSTER_SLOTS - per_day * r // CLUSTER_SLOTS
