"""ULIDs for decision ids: unique, sortable by time, monotonic within a process.

A ULID is 48 bits of Unix milliseconds followed by 80 random bits, written as
26 characters of Crockford base32. Within one millisecond the random part is
incremented instead of drawn again, so ids from one process sort in the order
they were made; across processes the random part keeps them unique.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
# Two base32 characters per byte pair of bits: encode 10 bits at a time.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


class UlidGenerator:
    """Makes monotonic ULIDs; not thread-safe (one per event loop)."""

    __slots__ = ("_last_ms", "_last_random")

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            # Same millisecond (or the clock stepped back): keep order by counting up.
            ms = self._last_ms
            rnd = self._last_random + 1
            if rnd > _RANDOM_MAX:  # 2**80 ids in one millisecond: move to the next one
                ms += 1
                rnd = int.from_bytes(os.urandom(10), "big") >> 1
        else:
            # Leave headroom so a burst within the millisecond cannot overflow.
            rnd = int.from_bytes(os.urandom(10), "big") >> 1
        self._last_ms = ms
        self._last_random = rnd
        return encode((ms << _RANDOM_BITS) | rnd)


def encode(value: int) -> str:
    """A 128-bit integer as 26 Crockford base32 characters (most significant first)."""
    pairs = _PAIRS
    # 130 bits = 13 groups of 10 bits; the top 2 bits are always zero.
    return "".join(pairs[(value >> shift) & 0x3FF] for shift in range(120, -10, -10))


def timestamp_ms(ulid: str) -> int:
    """The millisecond timestamp a ULID carries."""
    value = 0
    for ch in ulid[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return value
