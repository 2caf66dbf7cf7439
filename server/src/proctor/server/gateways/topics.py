"""Topic templates for the gateways: outside names made into valid topic segments.

A topic (DESIGN section 2) is 1..32 dot-separated segments of 1..64 characters
of `[A-Za-z0-9_:-]`, at most 256 bytes. Names from outside (an MCP server's and
tool's names, an HTTP method and path) can hold anything, so each value is
made a valid piece before it goes into the template:

- `segment(value)`: one segment. Characters outside the set become `_` (a dot
  too), an empty value becomes `_`, and the result is cut to 64 characters.
- `segments(value)`: dots keep their meaning (separators), each part a
  `segment`. The same rule as the SDK's framework integrations (a tool named
  `files.read` is the two segments `files.read`).

`TopicTemplate.render` fills the fields and drops empty segments, so a field
that renders to nothing (an HTTP path of "/") leaves no stray dot. The result
may still break the topic limits (too many segments, too long): the engine's
Request check refuses it with a message naming the limit, and each gateway
fails closed on that.
"""

from __future__ import annotations

import re
import string

MAX_SEGMENT_CHARS = 64
_NOT_SEGMENT = re.compile(r"[^A-Za-z0-9_:\-]")


def segment(value: str) -> str:
    """`value` as one topic segment (see the module docstring)."""
    return (_NOT_SEGMENT.sub("_", value) or "_")[:MAX_SEGMENT_CHARS]


def segments(value: str) -> str:
    """`value` as dot-separated topic segments, each made valid (see the module docstring)."""
    return ".".join(segment(part) for part in value.split("."))


class TopicTemplate:
    """A `str.format` template over named fields, checked once when configured."""

    def __init__(self, template: str, fields: tuple[str, ...], flag: str) -> None:
        if not template.strip():
            raise ValueError(f"{flag}: the topic template is empty")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ValueError(f"{flag} {template!r}: {e}") from None
        for _, name, spec, conv in parsed:
            if name is None:
                continue
            if name not in fields or spec or conv:
                known = ", ".join("{" + f + "}" for f in fields)
                raise ValueError(f"{flag} {template!r}: unknown field {{{name}}} (known: {known})")
        self.template = template
        self.fields = fields

    def render(self, **values: str) -> str:
        """The topic: the template with `values` (already made valid pieces) filled in."""
        text = self.template.format(**values)
        return ".".join(part for part in text.split(".") if part)

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"
