"""Redis URLs: one node (`redis://`, `rediss://` with TLS, `unix://`) or a Redis Cluster
(`?cluster=1`, or the `redis+cluster://` / `rediss+cluster://` schemes) reached through
the node the URL names."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A parsed Redis URL. `url` is the URL as redis-py reads it (no cluster marker)."""

    url: str
    cluster: bool

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def options(self) -> set[str]:
        """The query options left (db, ssl_cert_reqs, ...)."""
        return {k for k, _ in parse_qsl(urlsplit(self.url).query)}

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def parse_redis_url(url: str) -> RedisUrl:
    """Split the cluster marker off `url`; ValueError for a scheme Redis does not speak."""
    parts = urlsplit(url)
    scheme = parts.scheme
    cluster = False
    if scheme.endswith("+cluster"):
        scheme, cluster = scheme[: -len("+cluster")], True
    if scheme not in SCHEMES:
        # (the URL itself may hold a password: not repeated in the message)
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix:// (with "
                         f"+cluster or ?cluster=1 for a Cluster), not {parts.scheme or '?'}://")
    query = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "cluster":
            cluster = cluster or v.lower() in ("1", "true", "yes", "on")
        else:
            query.append((k, v))
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))
    if not parts.netloc and parts.path:  # unix:///path: urlunsplit would drop the "//"
        clean = f"{scheme}://{clean[len(scheme) + 1:]}"
    if cluster and scheme == "unix":
        raise ValueError("a Redis Cluster is reached over TCP (redis://, rediss://), "
                         "not a unix socket")
    return RedisUrl(clean, cluster)
