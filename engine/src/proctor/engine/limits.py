"""What a policy file may cost to read and compile, and how a compile is abandoned.

A policy comes from a path an operator (or an attacker who can write there)
chose. Reading follows three rules: only a regular file is read (a FIFO would
block the reader for ever, a device such as /dev/zero never ends), it is
opened non-blocking so that even opening cannot hang, and at most
``max_bytes`` are read. Compilation is bounded too (``Limits``): rules,
patterns, pattern segments and, since YAML aliases let a small file stand
for a huge document, the size of the document with every alias expanded.

A compile runs in one thread and can be abandoned from another: the caller
passes a ``threading.Event`` (``cancel``); the loader and the compiler call
``checkpoint()`` in their long loops, which raises ``CompileCancelled`` once the
event is set, so the half-built objects are dropped and their memory returns.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass

from proctor.engine.errors import PolicyError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one policy: its file, its YAML and what compiling it may build.

    The defaults leave room for the 100,000-rule policies the engine is measured
    with (about 19 MB, 120,000 patterns, 600,000 segments) and refuse what would
    compile for minutes. ``max_bytes`` bounds the file and, aliases expanded, the
    document it stands for.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_rules: int = 250_000
    max_patterns: int = 1_000_000
    max_pattern_segments: int = 4_000_000


DEFAULT_LIMITS = Limits()


class CompileCancelled(Exception):
    """The caller abandoned the compile (its ``cancel`` event was set)."""


_local = threading.local()


def checkpoint() -> None:
    """Raise CompileCancelled when this thread's compile has been abandoned."""
    token: threading.Event | None = getattr(_local, "cancel", None)
    if token is not None and token.is_set():
        raise CompileCancelled("the compile was abandoned")


class cancel_scope:  # noqa: N801 - used as a context manager, like contextlib's
    """Within the block, checkpoint() in this thread watches `cancel`."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel
        self.outer: threading.Event | None = None

    def __enter__(self) -> None:
        self.outer = getattr(_local, "cancel", None)
        _local.cancel = self.cancel

    def __exit__(self, *exc: object) -> None:
        _local.cancel = self.outer


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _too_big(path: str, what: str, size: int | None, max_bytes: int) -> PolicyError:
    got = "" if size is None else f" ({size} bytes)"
    return PolicyError(
        f"the {what} is larger than the limit of {max_bytes} bytes{got}", file=path
    )


def read_text_file(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES, what: str = "policy"
) -> str:
    """The UTF-8 text of the regular file at path, at most max_bytes long.

    Raises PolicyError naming the path for anything else: a missing or unreadable
    file, a FIFO, a device, a directory, a file over the limit, bytes that are not
    UTF-8 (with the line of the first bad byte). Never blocks on the file's kind:
    it is opened with O_NONBLOCK and checked with fstat before any read.
    """
    source = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(source, flags)
    except OSError as exc:
        raise PolicyError(f"cannot read the {what}: {exc.strerror or exc}", file=source) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError(
                f"cannot read the {what}: {_kind(st.st_mode)}, not a regular file", file=source
            )
        if st.st_size > max_bytes:
            raise _too_big(source, what, st.st_size, max_bytes)
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:  # the file may grow while read: never past the limit
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _too_big(source, what, None, max_bytes)
    except OSError as exc:
        raise PolicyError(f"cannot read the {what}: {exc.strerror or exc}", file=source) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(
            f"the {what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason})",
            file=source,
            line=line,
        ) from None
