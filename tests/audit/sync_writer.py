"""A process that records decisions with sync durability and prints each answered one.

python -m tests.audit.sync_writer DIR: runs until killed; prints "ok <decision_id>"
only after record() returned, i.e. after the event's batch was fsynced.
"""

from __future__ import annotations

import asyncio
import sys

from proctor.server.audit.file_sink import FileSink
from proctor.server.audit.writer import AuditWriter
from tests.audit.helpers import decision


async def main(root: str) -> None:
    audit = AuditWriter(FileSink(root, segment_bytes=64 * 1024), writer="sync-writer",
                          durability="sync")
    counter = iter(range(10**9))

    async def worker() -> None:
        while True:
            i = next(counter)
            await audit.record("decision", decision(i))
            sys.stdout.write(f"ok d-{i}\n")
            sys.stdout.flush()

    await asyncio.gather(*(worker() for _ in range(16)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
