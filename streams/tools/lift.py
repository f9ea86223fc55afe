"""Conversion rates, lift and their 95 % intervals, from decision outcomes.

The intervals hold for small counts and for rates near 0 or 1, where the textbook (Wald)
interval is too narrow or leaves [0, 1]:

- a rate: Wilson's score interval (Wilson 1927);
- the difference of two rates (the absolute lift): Newcombe's hybrid score interval, his
  method 10 (Newcombe 1998, "Interval estimation for the difference between independent
  proportions: comparison of eleven methods", Statistics in Medicine 17:873-890), built from
  the two Wilson intervals;
- the ratio of two rates (the relative lift, ratio - 1): the MOVER-R interval from the same
  Wilson intervals (Donner and Zou 2012, "Closed-form confidence intervals for functions of
  the normal mean and standard deviation", Statistical Methods in Medical Research 21:347-359).

An interval "says nothing" when it is at least as wide as the larger rate could plausibly be
(the upper Wilson limit of either arm): it cannot tell "no effect" from "the contact causes
every conversion". The report prints "not enough holdouts" there instead of a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson's score interval for ``successes`` out of ``n`` (n >= 1)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact at the edges: 0 successes has a lower limit of 0, n successes an upper one of 1.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval:
    """Newcombe's hybrid score interval (method 10) for p1 - p2."""
    p1, p2 = x1 / n1, x2 / n2
    w1, w2 = wilson(x1, n1, z), wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2)
    high = d + math.sqrt((w1.high - p1) ** 2 + (p2 - w2.low) ** 2)
    return Interval(max(-1.0, low), min(1.0, high))


def mover_ratio(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    """The MOVER-R interval for p1 / p2 from Wilson limits; None when p2 is 0 (no ratio)."""
    if x2 == 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    w1, w2 = wilson(x1, n1, z), wilson(x2, n2, z)
    l1, u1, l2, u2 = w1.low, w1.high, w2.low, w2.high
    prod = p1 * p2
    # Each limit is a root of a quadratic a * t**2 - 2 * prod * t + c = 0. For the lower one,
    # a = u2 * (2 * p2 - u2) is negative when the holdout arm's upper limit is more than twice
    # its rate (few holdout conversions): the formula's root is then still the one between 0
    # and the estimate (the other is negative), and with a = 0 the equation is linear.
    low_den = u2 * (2 * p2 - u2)
    low_c = l1 * (2 * p1 - l1)
    if low_den == 0:
        low = low_c / (2 * prod) if prod > 0 else 0.0
    else:
        low_root = max(0.0, prod * prod - low_den * low_c)
        low = (prod - math.sqrt(low_root)) / low_den
    high_den = l2 * (2 * p2 - l2)
    high_root = max(0.0, prod * prod - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2))
    high = (prod + math.sqrt(high_root)) / high_den if high_den > 0 else math.inf
    return Interval(max(0.0, low), high)


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm's outcomes: decisions, conversions and the value the conversions carried."""

    n: int = 0
    converted: int = 0
    value: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.converted / self.n if self.n else None

    def interval(self) -> Interval | None:
        return wilson(self.converted, self.n) if self.n else None

    def add(self, converted: bool, value: float | None) -> Arm:
        return Arm(
            self.n + 1,
            self.converted + int(converted),
            self.value + ((value or 0.0) if converted else 0.0),
        )


@dataclass(frozen=True, slots=True)
class Lift:
    """Contacted against held out: the lift and what it means in conversions and value."""

    absolute: float
    absolute_interval: Interval
    relative: float | None
    relative_interval: Interval | None
    incremental_conversions: float
    incremental_interval: Interval
    incremental_value: float
    informative: bool


def lift(contacted: Arm, held_out: Arm) -> Lift | None:
    """The lift of ``contacted`` over ``held_out``; None when either arm is empty."""
    if contacted.n == 0 or held_out.n == 0:
        return None
    p1, p2 = contacted.converted / contacted.n, held_out.converted / held_out.n
    diff = newcombe_difference(contacted.converted, contacted.n, held_out.converted, held_out.n)
    ratio = mover_ratio(contacted.converted, contacted.n, held_out.converted, held_out.n)
    ceiling = max(wilson(contacted.converted, contacted.n).high,
                  wilson(held_out.converted, held_out.n).high)  # fmt: skip
    n = contacted.n
    value_per_contact = contacted.value / contacted.n - held_out.value / held_out.n
    return Lift(
        absolute=p1 - p2,
        absolute_interval=diff,
        relative=(p1 / p2 - 1) if p2 > 0 else None,
        relative_interval=Interval(ratio.low - 1, ratio.high - 1) if ratio else None,
        incremental_conversions=(p1 - p2) * n,
        incremental_interval=Interval(diff.low * n, diff.high * n),
        incremental_value=value_per_contact * n,
        informative=diff.width < ceiling,
    )
