"""Request: one action to decide, validated and normalized on construction.

The limits (DESIGN section 2) are shared by the server and the CLI; a breach
raises RequestError naming the field and the limit. Construction is on the hot
path, so the common case is a handful of type checks and one regex match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proctor.engine.errors import RequestError
from proctor.engine.topics import TOPIC_RE, diagnose_topic

MAX_PATH = 32
MAX_AGENT_CHARS = 128
MAX_TAGS = 64
MAX_TAG_CHARS = 64
MAX_LABELS = 32
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_ID_CHARS = 128

_topic_match = TOPIC_RE.fullmatch
_lower = str.lower
_strip = str.strip


def normalize_tags(tags: Iterable[str], field: str = "risk_tags") -> tuple[str, ...]:
    """Trimmed, lower-cased, de-duplicated, sorted tags; empty ones dropped."""
    if isinstance(tags, str | bytes):
        raise RequestError(field, "must be a list of strings, not a single string")
    items = tags if isinstance(tags, tuple | list) else tuple(tags)
    if len(items) > MAX_TAGS:
        raise RequestError(field, f"at most {MAX_TAGS} tags (got {len(items)})")
    out: set[str] = set()
    for tag in items:
        if type(tag) is not str:
            raise RequestError(field, f"tags must be strings (got {type(tag).__name__})")
        tag = tag.strip().lower()
        if len(tag) > MAX_TAG_CHARS:
            raise RequestError(
                field, f"each tag at most {MAX_TAG_CHARS} characters (got {len(tag)})"
            )
        if tag:
            out.add(tag)
    return tuple(sorted(out))


def _short_id(value: Any, field: str) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise RequestError(field, f"must be a string (got {type(value).__name__})")
    if len(value) > MAX_ID_CHARS:
        raise RequestError(field, f"at most {MAX_ID_CHARS} characters (got {len(value)})")
    return value


class Request:
    """One action: who (delegation_path, tenant) wants to do what (topic, tags, labels).

    risk_tags is normalized to a sorted tuple of trimmed, lower-cased, unique tags;
    delegation_path to a tuple (root first, acting agent last); labels to a copied dict.
    """

    __slots__ = (
        "topic",
        "risk_tags",
        "delegation_path",
        "tenant",
        "run_id",
        "request_id",
        "labels",
    )

    topic: str
    risk_tags: tuple[str, ...]
    delegation_path: tuple[str, ...]
    tenant: str
    run_id: str
    request_id: str
    labels: dict[str, str]

    def __init__(
        self,
        topic: str,
        risk_tags: Iterable[str] = (),
        delegation_path: Iterable[str] = (),
        tenant: str = "",
        run_id: str = "",
        request_id: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        # The hot path: a few type checks and one regex. The literals are the
        # MAX_* limits above (inlined: a global lookup costs as much as a check).
        # "".join raises TypeError unless every item is a str, so it checks types.
        if type(topic) is not str or len(topic) > 256 or _topic_match(topic) is None:
            _bad_topic(topic)
        self.topic = topic

        if not risk_tags:
            self.risk_tags = ()
        elif type(risk_tags) is list and len(risk_tags) == 1 and type(risk_tags[0]) is str and (
            len(risk_tags[0]) <= 64
        ):  # the most common case, inline
            tag = risk_tags[0].strip().lower()
            self.risk_tags = (tag,) if tag else ()
        else:
            self.risk_tags = _few_tags(risk_tags)

        path = delegation_path if type(delegation_path) is tuple else _as_tuple(delegation_path)
        try:
            fast = 0 < len(path) <= 32 and len("".join(path)) <= 128 and "" not in path
        except TypeError:
            fast = False
        if not fast:
            _check_path(path)
        self.delegation_path = path

        if type(tenant) is not str or len(tenant) > 128:
            tenant = _short_id(tenant, "tenant")
        self.tenant = tenant
        if type(run_id) is not str or len(run_id) > 128:
            run_id = _short_id(run_id, "run_id")
        self.run_id = run_id
        if type(request_id) is not str or len(request_id) > 128:
            request_id = _short_id(request_id, "request_id")
        self.request_id = request_id

        if not labels:
            self.labels = {}
        else:
            try:
                fast = (
                    type(labels) is dict
                    and len(labels) <= 32
                    and len("".join(labels)) <= 64
                    and len("".join(labels.values())) <= 256
                )
            except TypeError:
                fast = False
            self.labels = labels.copy() if fast else _labels(labels)  # type: ignore[attr-defined]

    @property
    def acting_agent(self) -> str:
        return self.delegation_path[-1]

    @property
    def depth(self) -> int:
        return len(self.delegation_path) - 1

    def __repr__(self) -> str:
        return (
            f"Request(topic={self.topic!r}, risk_tags={self.risk_tags!r}, "
            f"delegation_path={self.delegation_path!r}, tenant={self.tenant!r}, "
            f"run_id={self.run_id!r}, request_id={self.request_id!r}, labels={self.labels!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def _few_tags(risk_tags: Iterable[str]) -> tuple[str, ...]:
    """normalize_tags(risk_tags), fast for a list or tuple of up to three short tags."""
    # Fast when the tags together fit one tag's limit (so each one does).
    try:
        fast = (type(risk_tags) is list or type(risk_tags) is tuple) and len(
            "".join(risk_tags)
        ) <= 64
    except TypeError:
        fast = False
    if not fast or len(risk_tags) > 3:  # type: ignore[arg-type]
        return normalize_tags(risk_tags)
    if len(risk_tags) == 1:  # type: ignore[arg-type]
        tag = risk_tags[0].strip().lower()  # type: ignore[index]
        return (tag,) if tag else ()
    if len(risk_tags) == 2:  # type: ignore[arg-type]
        a = risk_tags[0].strip().lower()  # type: ignore[index]
        b = risk_tags[1].strip().lower()  # type: ignore[index]
        if not a or not b:
            return (a,) if a else (b,) if b else ()
        if a < b:
            return (a, b)
        return (b, a) if b < a else (a,)
    tags = set(map(_lower, map(_strip, risk_tags)))
    tags.discard("")
    return tuple(sorted(tags))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes):
        raise RequestError("delegation_path", "must be a list of agent ids, not a single string")
    try:
        return tuple(value)
    except TypeError:
        raise RequestError(
            "delegation_path", f"must be a list of agent ids (got {type(value).__name__})"
        ) from None


def _check_path(path: tuple[Any, ...]) -> None:
    if not path:
        raise RequestError("delegation_path", "at least 1 agent (got 0)")
    if len(path) > MAX_PATH:
        raise RequestError("delegation_path", f"at most {MAX_PATH} agents (got {len(path)})")
    for agent in path:
        if type(agent) is not str or not 0 < len(agent) <= MAX_AGENT_CHARS:
            _bad_agent(agent)


def _bad_topic(topic: Any) -> None:
    if type(topic) is not str:
        raise RequestError("topic", f"must be a string (got {type(topic).__name__})")
    raise RequestError("topic", diagnose_topic(topic) or "is not a valid topic")


def _bad_agent(agent: Any) -> None:
    if type(agent) is not str:
        raise RequestError(
            "delegation_path", f"agent ids must be strings (got {type(agent).__name__})"
        )
    raise RequestError(
        "delegation_path",
        f"each agent id 1..{MAX_AGENT_CHARS} characters (got {len(agent)})",
    )


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(labels, Mapping):
        raise RequestError("labels", f"must be a mapping (got {type(labels).__name__})")
    if len(labels) > MAX_LABELS:
        raise RequestError("labels", f"at most {MAX_LABELS} labels (got {len(labels)})")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if type(key) is not str or type(value) is not str:
            raise RequestError("labels", "keys and values must be strings")
        if len(key) > MAX_LABEL_KEY_CHARS:
            raise RequestError(
                "labels", f"each key at most {MAX_LABEL_KEY_CHARS} characters (got {len(key)})"
            )
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise RequestError(
                "labels",
                f"each value at most {MAX_LABEL_VALUE_CHARS} characters (got {len(value)})",
            )
        out[key] = value
    return out
