"""ULIDs for decision ids: unique, sortable by time, monotonic within a process.

A ULID is 48 bits of Unix milliseconds followed by 80 random bits, written as
26 characters of Crockford base32. Within one millisecond the random part is
incremented instead of drawn again, so ids from one process sort in the order
they were made; across processes the random part keeps them unique.
"""

from __future__ import annotations

import random
import time
from typing import Protocol

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters (10 bits) at a time.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
# Random bits come from a generator seeded from os.urandom at startup: ids must be
# unique and sortable, not secret, and a system call per id costs too much here.
_random = random.SystemRandom().getrandbits(64)
_rng = random.Random(_random)


class IdGenerator(Protocol):
    def new(self, ms: int | None = None) -> str: ...


def new_generator() -> IdGenerator:
    """A ULID generator for one event loop."""
    return UlidGenerator()


class UlidGenerator:
    """Makes monotonic ULIDs; not thread-safe (one per event loop)."""

    __slots__ = ("_last_ms", "_last_random", "_prefix", "_time_text", "_high", "_high_text")

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0
        self._prefix = ""
        self._time_text = ""
        self._high = -1
        self._high_text = ""

    def new(self, ms: int | None = None) -> str:
        """A ULID for now, or for the given Unix millisecond (an event's own time)."""
        if ms is None:
            ms = time.time_ns() // 1_000_000
        if ms < self._last_ms:
            ms = self._last_ms  # the clock stepped back: keep order
        # The random part counts up from a random start, also across milliseconds: ids
        # stay unique (each process starts at its own 79 random bits) and sorted, and
        # the text of its high bits is reused instead of re-encoded for every id.
        rnd = self._last_random + 1
        if rnd > _RANDOM_MAX or self._last_ms < 0:
            # First id, or 2**80 ids counted: start again from fresh random bits (79: headroom).
            if self._last_ms >= 0:
                ms += 1
            rnd = _rng.getrandbits(_RANDOM_BITS - 1)
        if ms != self._last_ms:
            # The first 10 characters are the 48-bit time (after two zero bits); its high
            # 30 bits change every ~17 minutes, so only the last 4 characters are encoded.
            table = _PAIRS
            if ms >> 20 != self._last_ms >> 20:
                self._time_text = _encode_pairs(ms >> 20, 3)
            self._prefix = self._time_text + table[(ms >> 10) & 0x3FF] + table[ms & 0x3FF]
            self._last_ms = ms
        self._last_random = rnd
        # Counting up changes only the low bits: the text of the high 60 bits is kept,
        # and only the last 4 characters are encoded per id.
        high = rnd >> 20
        if high != self._high:
            self._high = high
            self._high_text = _encode_pairs(high, 6)
        table = _PAIRS
        return self._prefix + self._high_text + table[(rnd >> 10) & 0x3FF] + table[rnd & 0x3FF]


def _encode_pairs(value: int, pairs: int) -> str:
    """The low 10*pairs bits of value as 2*pairs Crockford base32 characters."""
    table = _PAIRS
    return "".join([table[(value >> shift) & 0x3FF] for shift in range(10 * (pairs - 1), -10, -10)])


def encode(value: int) -> str:
    """A 128-bit integer as 26 Crockford base32 characters (most significant first)."""
    return _encode_pairs(value, 13)

