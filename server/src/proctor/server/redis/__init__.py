"""The one Redis layer (in the manner of envoyproxy/ratelimit's src/redis).

| module | what |
|---|---|
| url.py | `parse_redis_url`: one node (redis://, rediss://, unix://) or a Cluster (?cluster=1) |
| driver.py | the `Driver` seam: one command, a script call, a pipeline, a command on every node |
| resp.py | `RespClient`, the lean asyncio Driver of one node (redis://, unix://) |
| redispy.py | `RedisPyDriver`: redis-py's asyncio client for TLS and Cluster |
| scripts.py | `Script` (lua/GROUP/NAME.lua, lib.lua first) and `ScriptRunner`: loading, |
|            | SHA check, NOSCRIPT fallback, pipelined batches, error mapping, ping |
| durability.py | the persistence check and the restart / data-loss watch |
| layer.py | `RedisLayer`: the driver, runner and watch of one process, shared by its stores |
| errors.py | `RedisUnavailable`, `VolatileRedis`, `ScriptError` |
| metrics.py | proctor_redis_restarts_total, proctor_redis_data_lost_total, proctor_redis_refused |
| lua/ | budgets/, approvals/, watch/ (each script's header names its KEYS, ARGV and reply) |

A store takes a `RedisLayer`, registers its scripts and key prefix with it, and calls
`layer.runner.run(script, keys, args)`; it maps RedisUnavailable to its own
StoreUnavailable. docs/redis.md has the settings production needs.
"""

from __future__ import annotations

from .driver import NO_ARGS, Driver, Packed
from .durability import Durability
from .errors import RedisUnavailable, ScriptError, VolatileRedis
from .layer import CALL_TIMEOUT, START_TIMEOUT, RedisLayer, open_driver
from .redispy import RedisPyDriver
from .resp import RespClient, bulk, pack, pack_args
from .scripts import Call, Script, ScriptRunner
from .url import RedisUrl, parse_redis_url

__all__ = [
    "CALL_TIMEOUT", "NO_ARGS", "START_TIMEOUT", "Call", "Driver", "Durability", "Packed",
    "RedisLayer", "RedisPyDriver", "RedisUnavailable", "RedisUrl", "RespClient", "Script",
    "ScriptError", "ScriptRunner",
    "VolatileRedis", "bulk", "open_driver", "pack", "pack_args", "parse_redis_url",
]
