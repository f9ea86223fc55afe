"""Ledger keys over arbitrary identifiers: distinct (namespace, customer, part, business unit)
never share a key, every key of a customer is in the customer's Redis Cluster hash slot, and
identifiers that could not be misread keep the keys of the release before."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from streams.config import default_policy
from streams.core.decisions import Candidate
from streams.ledger import KEY_PARTS, ContactLedger, customer_keys, outside_contact_id
from streams.ledger.keys import capacity_key, capacity_share, slot_of

# Text made to collide: the delimiters and escapes of the key layout, the part names, and any
# other Unicode character (including spaces).
FRAGMENTS = ["{", "}", ":", "%", "%7D", "%7B", "%3A", "%25", " ", "bu", "bu%", "x", *KEY_PARTS]
identifiers = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.characters(codec="utf-8")), min_size=1, max_size=8
).map("".join)
namespaces = st.text(st.characters(codec="utf-8", exclude_characters="{}:"), min_size=1, max_size=4)


def _slot(key: str) -> int:
    return key_slot(key.encode())  # applies the hash-tag rule to the whole key


def _named(namespace: str, customer: str, unit: str) -> dict[str, tuple[str, str, str]]:
    keys = customer_keys(namespace, customer, unit)
    names = [*KEY_PARTS, f"bu/{unit}"]
    return {key: (namespace, customer, name) for key, name in zip(keys, names, strict=True)}


@given(st.lists(st.tuples(namespaces, identifiers, identifiers), min_size=2, max_size=6))
def test_distinct_identifiers_never_share_a_key(
    ledgers: list[tuple[str, str, str]],
) -> None:
    owner: dict[str, tuple[str, str, str]] = {}
    for namespace, customer, unit in ledgers:
        for key, name in _named(namespace, customer, unit).items():
            assert owner.setdefault(key, name) == name, (key, owner[key], name)


# Joints that move text between fields of a layout that does not escape: "}:bu:" continues a
# customer id into another's business-unit key, "}:" a unit into a part, ":" a unit into a
# contact id.
JOINTS = ["}", "{", ":", "%", "}:", "}:bu:", "}:bu%:", ":bu:", "%7D", "%3A", " "]


@given(namespaces, identifiers, identifiers)
def test_identifiers_built_to_collide_still_get_keys_of_their_own(
    namespace: str, a: str, b: str
) -> None:
    joined = [a, b, *(x + j + y for x, y in ((a, b), (b, a)) for j in JOINTS)]
    units = [*joined, *(x + j + part for x in (a, b) for j in ("}:", ":") for part in KEY_PARTS)]
    owner: dict[str, tuple[str, str, str]] = {}
    for customer in joined:
        for unit in units:
            for key, name in _named(namespace, customer, unit).items():
                assert owner.setdefault(key, name) == name, (key, owner[key], name)
    ids: dict[str, tuple[str, str]] = {}
    for unit in joined:
        for contact in joined:
            assert ids.setdefault(outside_contact_id(unit, contact), (unit, contact)) == (
                unit,
                contact,
            )


@given(namespaces, identifiers, identifiers, identifiers)
def test_every_key_of_a_customer_is_in_its_slot(
    namespace: str, customer: str, unit: str, other_unit: str
) -> None:
    keys = customer_keys(namespace, customer, unit) + customer_keys(namespace, customer, other_unit)
    slot = _slot(keys[0])
    assert {_slot(k) for k in keys} == {slot}
    # The slot is the customer's alone to decide: the namespace does not move it either.
    assert _slot(customer_keys("other", customer, "u")[0]) == slot


@given(identifiers, identifiers, identifiers, identifiers)
def test_outside_contact_ids_are_one_per_unit_and_contact(
    unit: str, contact: str, other_unit: str, other_contact: str
) -> None:
    same = (unit, contact) == (other_unit, other_contact)
    assert (outside_contact_id(unit, contact) == outside_contact_id(other_unit, other_contact)) == (
        same
    )
    assert not outside_contact_id(unit, contact).startswith("d-")  # decision ids


@given(
    namespaces,
    identifiers.filter(lambda s: "}" not in s),
    identifiers.filter(lambda s: "}" not in s),
)
def test_identifiers_without_a_brace_keep_the_old_keys(
    namespace: str, customer: str, unit: str
) -> None:
    prefix = f"{namespace}:{{{customer}}}:"  # the layout of the release before
    assert customer_keys(namespace, customer, unit) == [
        *(prefix + part for part in KEY_PARTS),
        f"{prefix}bu:{unit}",
    ]
    if ":" not in unit:
        assert outside_contact_id(unit, customer) == f"x:{unit}:{customer}"


def test_the_reported_collision_and_readable_escapes() -> None:
    assert customer_keys("lt", "V", "u}:dec")[-1] == "lt:{V}:bu%:u%7D%3Adec"
    assert customer_keys("lt", "V}:bu:u", "lifecycle")[0] == "lt:%{V%7D%3Abu%3Au}:dec"
    assert customer_keys("lt", "crm:42", "cards")[0] == "lt:{crm:42}:dec"
    assert outside_contact_id("a:b", "c") == "x%:a%3Ab:c"
    assert outside_contact_id("a", "b:c") == "x:a:b:c"


@pytest.mark.parametrize("namespace", ["", "a:b", "{a}", "a}"])
def test_a_namespace_that_would_end_early_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        customer_keys(namespace, "c", "u")


def test_an_empty_customer_id_is_refused() -> None:
    # "{}" is no hash tag: the parts would be spread over slots.
    with pytest.raises(ValueError, match="customer_id must not be empty"):
        customer_keys("lt", "", "u")


def test_a_trigger_name_with_the_member_separator_is_refused() -> None:
    # The script counts a trigger's cooldown marks by the prefix "<trigger>|": "a" would count
    # the marks of "a|b". Refused before anything is sent (the URL is never connected to).
    async def main() -> None:
        async with ContactLedger("redis://127.0.0.1:1/0", default_policy()) as ledger:
            c = Candidate("c", "a|b", "1", "act", "email", "marketing", 50, ("e",), 0)
            with pytest.raises(ValueError, match=r"trigger name must not contain '\|'"):
                await ledger.decide_one(c, 0)

    asyncio.run(main())


# -- capacity counters ----------------------------------------------------------------------


@pytest.mark.parametrize("per_day", [1, 7, 16_383, 16_384, 16_385, 100_000])
def test_the_slots_shares_add_up_to_the_days_limit(per_day: int) -> None:
    shares = [capacity_share(per_day, slot, "loan_offer", "2026-03-01") for slot in range(16384)]
    assert sum(shares) == per_day
    assert max(shares) - min(shares) <= 1


def test_which_slots_get_a_small_limit_changes_with_the_day_and_action() -> None:
    def winners(action: str, day: str) -> set[int]:
        return {s for s in range(16384) if capacity_share(5, s, action, day)}

    assert len(winners("loan_offer", "2026-03-01")) == 5
    assert winners("loan_offer", "2026-03-01") != winners("loan_offer", "2026-03-02")
    assert winners("loan_offer", "2026-03-01") != winners("renewal_offer", "2026-03-01")


@settings(deadline=None)  # the first example computes the slot tags
@given(identifiers)
def test_a_capacity_counter_on_a_cluster_is_in_the_customers_slot(customer: str) -> None:
    first = customer_keys("lt", customer)[0]
    key = capacity_key("lt", "loan_offer", "2026-03-01", slot_of(first))
    assert _slot(key) == _slot(first)
    assert key not in customer_keys("lt", customer)


def test_every_slot_has_a_short_tag_and_a_single_instance_has_one_counter() -> None:
    for slot in range(16384):
        assert _slot(capacity_key("lt", "a", "2026-03-01", slot)) == slot
    assert capacity_key("lt", "a", "2026-03-01", None) == "lt:capacity:a:2026-03-01"
