"""A one-line progress bar on stderr, no dependency: redrawn in place on a terminal,
a line every two seconds otherwise (logs, CI)."""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, sparse otherwise)."""

    WIDTH = 24

    def __init__(self, label: str, warmup: float, duration: float, enabled: bool = True) -> None:
        self.label = label
        self.warmup = warmup
        self.total = warmup + duration
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_draw = -1e9
        self.last = (0.0, 0)
        self.rate = 0.0

    def update(self, elapsed: float, calls: int, errors: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        every = 0.2 if self.tty else 2.0
        if now - self.last_draw < every:
            return
        t_prev, c_prev = self.last
        if now > t_prev and t_prev:
            self.rate = (calls - c_prev) / (now - t_prev)
        self.last = (now, calls)
        self.last_draw = now
        self._draw(max(0.0, elapsed), calls, errors)

    def _draw(self, elapsed: float, calls: int, errors: int, end: str = "") -> None:
        frac = min(1.0, elapsed / self.total) if self.total else 1.0
        filled = math.floor(frac * self.WIDTH)
        phase = "warmup" if elapsed < self.warmup else ("measure" if frac < 1 else "drain")
        line = (
            f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] "
            f"{min(elapsed, self.total):5.1f}/{self.total:.1f}s {phase:<7} "
            f"{calls:>9,} calls {self.rate:>9,.0f}/s {errors:,} errors"
        )
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K" + end)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self, calls: int, errors: int) -> None:
        if self.enabled:
            self._draw(self.total, calls, errors, end="\n" if self.tty else "")
