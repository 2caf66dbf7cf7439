"""Topic grammar and topic patterns.

A topic is 1..32 dot-separated segments, each 1..64 characters of
``[A-Za-z0-9_:-]``, at most 256 bytes in all; matching is case-sensitive.

In a pattern each segment is a literal, ``*`` (exactly one segment) or ``**``
(zero or more segments). A segment that mixes ``*`` with other characters
(``job.ex*port``) and an empty segment are errors.
"""

from __future__ import annotations

import re

MAX_TOPIC_BYTES = 256
MAX_SEGMENTS = 32
MAX_SEGMENT_CHARS = 64

SEGMENT_RE = re.compile(r"[A-Za-z0-9_:\-]{1,64}")
# One regex for the common case; diagnose() explains a failure.
TOPIC_RE = re.compile(r"[A-Za-z0-9_:\-]{1,64}(?:\.[A-Za-z0-9_:\-]{1,64}){0,31}")

STAR = "*"
GLOBSTAR = "**"


def diagnose_topic(topic: str) -> str:
    """What is wrong with a topic that failed TOPIC_RE (or '' when nothing is)."""
    if not topic:
        return "must not be empty"
    size = len(topic.encode("utf-8"))
    if size > MAX_TOPIC_BYTES:
        return f"at most {MAX_TOPIC_BYTES} bytes (got {size})"
    segments = topic.split(".")
    if len(segments) > MAX_SEGMENTS:
        return f"at most {MAX_SEGMENTS} segments (got {len(segments)})"
    for i, seg in enumerate(segments, 1):
        if not seg:
            return f"segment {i} is empty (segments are 1..{MAX_SEGMENT_CHARS} characters)"
        if len(seg) > MAX_SEGMENT_CHARS:
            return f"segment {i} is longer than {MAX_SEGMENT_CHARS} characters ({len(seg)})"
        if SEGMENT_RE.fullmatch(seg) is None:
            return f"segment {i} {seg!r} may only hold characters of [A-Za-z0-9_:-]"
    return ""


def parse_pattern(pattern: str) -> tuple[str, ...]:
    """Split a topic pattern into segments, raising ValueError with the reason."""
    if not pattern:
        return _fail("a topic pattern must not be empty")
    if len(pattern.encode("utf-8")) > MAX_TOPIC_BYTES * 4:
        return _fail(f"topic pattern is too long ({len(pattern)} characters)")
    segments = pattern.split(".")
    for i, seg in enumerate(segments, 1):
        if seg in (STAR, GLOBSTAR):
            continue
        if not seg:
            return _fail(f"topic pattern {pattern!r}: segment {i} is empty")
        if "*" in seg:
            return _fail(
                f"topic pattern {pattern!r}: segment {seg!r} mixes '*' with other characters "
                "(a segment is a literal, '*' or '**')"
            )
        if len(seg) > MAX_SEGMENT_CHARS or SEGMENT_RE.fullmatch(seg) is None:
            return _fail(
                f"topic pattern {pattern!r}: segment {seg!r} is not 1..{MAX_SEGMENT_CHARS} "
                "characters of [A-Za-z0-9_:-]"
            )
    return tuple(segments)


def canonical(segments: tuple[str, ...]) -> tuple[str, ...]:
    """An equivalent pattern with no two '**' in one run of wildcards.

    A run of wildcard segments holding k '*' and at least one '**' matches k or
    more segments, which is k '*' followed by one '**'.
    """
    out: list[str] = []
    run_stars = 0
    run_glob = False
    for seg in (*segments, None):
        if seg == STAR:
            run_stars += 1
            continue
        if seg == GLOBSTAR:
            run_glob = True
            continue
        out.extend([STAR] * run_stars)
        if run_glob:
            out.append(GLOBSTAR)
        run_stars, run_glob = 0, False
        if seg is not None:
            out.append(seg)
    return tuple(out)


def _fail(message: str) -> tuple[str, ...]:
    raise ValueError(message)
