"""A small MCP server with three tools, to put behind `proctor mcp-gateway` (README.md here).

    python server.py [--record FILE]

Tools: search_notes (the policy allows it), delete_note (denied), send_email
(needs a reviewer's approval). Also a resource and a prompt, which the gateway
passes through. With --record, every tool call the server receives is appended
to FILE as one JSON line, so you can see what reached it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcp.server.mcpserver import MCPServer

NOTES = {
    "n1": "Quarterly numbers are due on Friday.",
    "n2": "Ask Dana about the vendor contract.",
}

mcp = MCPServer("notes")
record: Path | None = None


def _record(tool: str, **arguments: object) -> None:
    if record is not None:
        with record.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@mcp.tool()
def search_notes(query: str, limit: int = 10) -> list[str]:
    """Notes whose text contains `query`."""
    _record("search_notes", query=query, limit=limit)
    return [text for text in NOTES.values() if query.lower() in text.lower()][:limit]


@mcp.tool()
def delete_note(note_id: str) -> str:
    """Delete one note."""
    _record("delete_note", note_id=note_id)
    NOTES.pop(note_id, None)
    return f"deleted {note_id}"


@mcp.tool()
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email (this example only pretends to)."""
    _record("send_email", to=to, subject=subject, body=body)
    return f"sent {subject!r} to {to}"


@mcp.resource("notes://{note_id}")
def note(note_id: str) -> str:
    """One note's text."""
    return NOTES.get(note_id, "")


@mcp.prompt()
def summarize(topic: str) -> str:
    """Ask for a summary of the notes about a topic."""
    return f"Summarize my notes about {topic}."


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", type=Path, help="append each tool call to this JSONL file")
    record = parser.parse_args().record
    mcp.run()
