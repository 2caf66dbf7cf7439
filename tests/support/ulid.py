"""A reference reading of a ULID, independent of the server's encoder: the tests check
that the ids it makes carry the time they were made at."""

from __future__ import annotations

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def timestamp_ms(ulid: str) -> int:
    """The millisecond timestamp in a ULID's first ten characters (48 bits, base32)."""
    value = 0
    for ch in ulid[:10]:
        value = value * 32 + CROCKFORD.index(ch)
    return value
